"""SATM on Fashion-MNIST: MTT's per-IPC settings (configs/mtt_fmnist.py) plus SATM's parts, ZCA at every IPC.

python -m launch.main --config=configs/satm_fmnist.py:10     # the argument is the IPC: 1, 10 or 50
The paper applies ZCA in all settings and differentiates the last third of the inner loop (iota = N - int(N/3),
tau = iota); rho is ddjax's default (|eps| = 0.02 |phi|; the paper's Table 6 values are not in our copy of the
text) and gamma = 0.003 keeps the default's per-pixel noise-to-image ratio gamma*sqrt(D) = 0.08 at 28x28
(docs/design.md).
Experts: 100 x 50 epochs, made ahead of time with python -m launch.experts --config=configs/satm_fmnist.py:10.
On CPU shrink with e.g. --config.satm.experts.num_experts=5 --config.steps=200 --config.eval.epochs=300.
"""
from launch.config import base_config

#: ipc -> (syn_steps, expert_epochs, max_start_epoch, lr_img, lr_lr, lr_teacher); same as configs/mtt_fmnist.py
SETTINGS = {1: (50, 2, 2, 100.0, 1e-7, 0.01), 10: (30, 2, 20, 100.0, 1e-5, 0.001),
            50: (30, 2, 40, 1000.0, 1e-5, 0.001)}


def get_config(ipc: str = "10"):
    ipc = int(ipc)
    if ipc not in SETTINGS:
        raise ValueError(f"configs/satm_fmnist.py:IPC has settings for IPC {sorted(SETTINGS)}, got {ipc}")
    config = base_config("satm")
    config.data.name = "fashion_mnist"
    config.data.zca = True
    config.ipc = ipc
    config.steps = 5000
    config.log_every = 10
    config.checkpoint_every = 500
    config.model.width = 128
    config.model.depth = 3
    s = config.satm
    s.syn_steps, s.expert_epochs, s.max_start_epoch, s.lr_img, s.lr_lr, s.lr_teacher = SETTINGS[ipc]
    s.experts.num_experts = 100
    s.noise_gamma = 0.003  # 0.01 * sqrt(64 / 784): the digits sweep's noise-to-image ratio at 28x28
    s.experts.lr = 0.01  # buffer.py's --lr_teacher; s.lr_teacher above only initialises syn_lr
    s.experts.epochs = 50
    config.make_pretrained = False
    config.eval.every = 500
    config.eval.num_seeds = 5
    config.eval.epochs = 1000
    return config
