"""IDM on Fashion-MNIST with the authors' hyper-parameters (Zhao et al., CVPR'23; uitrbn/IDM command.txt, CIFAR-10).

python -m launch.main --config=configs/idm_fmnist.py:10     # the argument is the IPC: 1, 10 or 50
The authors publish no Fashion-MNIST command; this takes their CIFAR-10 one: lr_img 0.2 (SGD momentum 0.5), 256 real
images per class, DSA color_crop_cutout_flip_scale_rotate, partitioning factor 2, ce_weight 0.5 (0.1 at IPC 50), a
queue of 100 networks with a new one every 30 steps (5 at IPC 1, with 5,000 real per class there; ddjax keeps 256,
see docs/design.md), 2 members trained 10 steps of 256 real images after every step, 20,000 steps; evaluation as DM
(1,000 epochs). On 2 CPU cores reduce with e.g. --config.steps=200 --config.eval.epochs=300 (say so with the numbers).
Needs the Fashion-MNIST IDX files: apt-get install dataset-fashion-mnist (or --config.data.source_dir=DIR).
"""
from launch.config import base_config


def get_config(ipc: str = "10"):
    config = base_config("idm")
    config.data.name = "fashion_mnist"
    config.ipc = int(ipc)
    config.steps = 20000
    config.log_every = 10
    config.checkpoint_every = 500
    config.model.width = 128
    config.model.depth = 3
    config.idm.lr_img = 0.2
    config.idm.batch_real = 256
    config.idm.ce_weight = 0.1 if config.ipc >= 50 else 0.5
    config.idm.new_every = 5 if config.ipc == 1 else 30
    config.eval.every = 2000
    config.eval.num_seeds = 5
    config.eval.epochs = 1000
    return config
