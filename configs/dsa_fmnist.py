"""DSA on Fashion-MNIST with the reference hyper-parameters (Zhao & Bilen, ICML'21; DatasetCondensation/main.py
--method DSA, README: --init real).

python -m launch.main --config=configs/dsa_fmnist.py:10     # the argument is the IPC: 1, 10 or 50
DC's loop (1,000 iterations, get_loops schedule, lr_img 0.1, batch_real 256, lr_net 0.01, layerwise_cos) with the
same DSA transform on a class's real and synthetic batch (color_crop_cutout_flip_scale_rotate) and per-sample DSA
when the network trains on the synthetic set; evaluation 1,000 epochs with DSA.
Paper (DREAM+ Table 1, ConvNet-3): 70.6 / 84.6 / 88.7 for IPC 1 / 10 / 50.
"""
from launch.config import base_config


def get_config(ipc: str = "10"):
    config = base_config("dsa")
    config.data.name = "fashion_mnist"
    config.ipc = int(ipc)
    config.init = "real"
    config.steps = 1000
    config.log_every = 10
    config.checkpoint_every = 50
    config.model.width = 128
    config.model.depth = 3
    config.dsa.lr_img = 0.1
    config.dsa.batch_real = 256
    config.eval.every = 200
    config.eval.num_seeds = 5
    config.eval.epochs = 1000
    return config
