"""DM on Fashion-MNIST with the reference hyper-parameters (Zhao & Bilen, main_DM.py).

python -m launch.main --config=configs/dm_fmnist.py:10     # the argument is the IPC: 1, 10 or 50
Reference scale is 20,000 steps and 1,000 evaluation epochs; on 2 CPU cores reduce with e.g.
--config.steps=200 --config.eval.epochs=300 (docs/results.md says which scale each number used).
Needs the Fashion-MNIST IDX files: apt-get install dataset-fashion-mnist (or --config.data.source_dir=DIR).
"""
from launch.config import base_config


def get_config(ipc: str = "10"):
    config = base_config("dm")
    config.data.name = "fashion_mnist"
    config.ipc = int(ipc)
    config.steps = 20000
    config.log_every = 10
    config.checkpoint_every = 500
    config.model.width = 128
    config.model.depth = 3
    config.dm.lr_img = 1.0
    config.dm.batch_real = 256
    config.eval.every = 2000
    config.eval.num_seeds = 5
    config.eval.epochs = 1000
    return config
