"""RDED on the styled-digits stand-in for PACS, leave one domain out (4 phases).

python -m launch.main --config=configs/rded_tiny.py --workdir=/tmp/rded_tiny
Real patches selected by the squeeze model (factor 1 on 8x8 images), relabelled; scale as configs/dtl_tiny.py.
"""
from launch.dg import dg_config


def get_config():
    config = dg_config("rded", base="digits", ipc=10, scale="tiny")
    config.rded.mipc = 100
    return config
