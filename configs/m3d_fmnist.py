"""M3D on Fashion-MNIST with reference-style hyper-parameters.

python -m launch.main --config=configs/m3d_fmnist.py:10     # the argument is the IPC: 1, 10 or 50
M3D's code is not public; DIDD (which builds on it) sets the image learning rate to the IPC "following M3D" and uses
128 real images per class, which is what this config does; M3D's Factor & Up-sampling (factor 2, config.m3d.factor)
is the default. Steps, evaluation and model are DM's reference values
(20,000 steps, ConvNet-3 w128, 5 seeds x 1,000 epochs) so DM and M3D compare at one scale. On 2 CPU cores reduce
with e.g. --config.steps=200 --config.eval.epochs=300 (docs/results.md says which scale each number used).
Needs the Fashion-MNIST IDX files: apt-get install dataset-fashion-mnist (or --config.data.source_dir=DIR).
"""
from launch.config import base_config


def get_config(ipc: str = "10"):
    config = base_config("m3d")
    config.data.name = "fashion_mnist"
    config.ipc = int(ipc)
    config.steps = 20000
    config.log_every = 10
    config.checkpoint_every = 500
    config.model.width = 128
    config.model.depth = 3
    config.m3d.lr_img = float(config.ipc)
    config.m3d.batch_real = 128
    config.m3d.bandwidth = "median"
    config.m3d.sigmas = (0.5, 1.0, 2.0)
    config.eval.every = 2000
    config.eval.num_seeds = 5
    config.eval.epochs = 1000
    return config
