"""sre2l on the styled Fashion-MNIST stand-in for PACS (28x28 RGB in four styles), leave one domain out.

python -m launch.main --config=configs/sre2l_fmnist.py:10 --workdir=/tmp/sre2l_fmnist
ResNet-18 width 8 squeeze (300 ERM steps from scratch), 2,000 train images per domain, ConvNet validation;
measured in docs/results.md ("Styled Fashion-MNIST", 2026-12-06).
"""
from launch.dg import dg_config


def get_config(arg: str = "10"):
    ipc = int(arg)
    return dg_config("sre2l", base="fashion_mnist", ipc=ipc, scale="fmnist")
