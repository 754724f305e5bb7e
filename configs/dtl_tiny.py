"""DTL + DSM (DD for DG) on the styled-digits stand-in for PACS, leave one domain out (4 phases).

python -m launch.main --config=configs/dtl_tiny.py --workdir=/tmp/dtl_tiny
Reduced scale for 2 CPU cores: 8x8 RGB digits in four styles, squeeze ResNet-18 width 8 (500 ERM steps from
scratch), IPC 10, 100 iterations per class-wise batch, 10 relabel views, validation ConvNet (width 32, depth 2,
instance norm; launch.dg), 30 epochs, 3 seeds. Measured time and accuracy: docs/results.md ("Domain generalisation").
"""
from launch.dg import dg_config


def get_config():
    return dg_config("dtl", base="digits", ipc=10, scale="tiny")
