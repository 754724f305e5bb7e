"""SRe2L across domains on the styled-digits stand-in for PACS, leave one domain out (4 phases).

python -m launch.main --config=configs/sre2l_tiny.py --workdir=/tmp/sre2l_tiny
"SRe2L per domain" (one squeeze model per seen domain, IPC per domain): add --config.sre2l.per_domain=True
--config.ipc=30 (3 seen domains x 10). Scale as configs/dtl_tiny.py; results in docs/results.md.
"""
from launch.dg import dg_config


def get_config():
    return dg_config("sre2l", base="digits", ipc=10, scale="tiny")
