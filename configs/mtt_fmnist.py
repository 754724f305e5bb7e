"""MTT on Fashion-MNIST with the authors' CIFAR-10 settings (no Fashion-MNIST values are published).

python -m launch.main --config=configs/mtt_fmnist.py:10     # the argument is the IPC: 1, 10 or 50
Per-IPC values from the authors' commands (dc_benchmark methods/tm/readme.md, CIFAR-10): syn_steps / expert_epochs /
max_start_epoch / lr_img / lr_lr / lr_teacher / ZCA = 50/2/2/100/1e-7/0.01/yes (IPC 1), 30/2/20/100/1e-5/0.001/yes
(IPC 10), 30/2/40/1000/1e-5/0.001/no (IPC 50); 5,000 iterations. lr_teacher is distill.py's: it only initialises the
learned syn_lr. Experts as buffer.py: 100 x 50 epochs at its own --lr_teacher 0.01 (mtt.experts.lr). Reference
scale needs a GPU (expert buffer ~100 x 51 x 320k parameters = 6.5 GB); on CPU shrink with e.g.
--config.mtt.experts.num_experts=5 --config.steps=200 --config.eval.epochs=300 and say so.
Needs the Fashion-MNIST IDX files: apt-get install dataset-fashion-mnist (or --config.data.source_dir=DIR).
"""
from launch.config import base_config

#: ipc -> (syn_steps, expert_epochs, max_start_epoch, lr_img, lr_lr, lr_teacher, zca)
SETTINGS = {1: (50, 2, 2, 100.0, 1e-7, 0.01, True), 10: (30, 2, 20, 100.0, 1e-5, 0.001, True),
            50: (30, 2, 40, 1000.0, 1e-5, 0.001, False)}


def get_config(ipc: str = "10"):
    ipc = int(ipc)
    if ipc not in SETTINGS:
        raise ValueError(f"configs/mtt_fmnist.py:IPC has settings for IPC {sorted(SETTINGS)}, got {ipc}")
    config = base_config("mtt")
    config.data.name = "fashion_mnist"
    config.ipc = ipc
    config.steps = 5000
    config.log_every = 10
    config.checkpoint_every = 500
    config.model.width = 128
    config.model.depth = 3
    hp = config.mtt
    (hp.syn_steps, hp.expert_epochs, hp.max_start_epoch, hp.lr_img, hp.lr_lr, hp.lr_teacher,
     config.data.zca) = SETTINGS[ipc]
    hp.experts.num_experts = 100
    hp.experts.lr = 0.01  # buffer.py's --lr_teacher; hp.lr_teacher above only initialises syn_lr
    hp.experts.epochs = 50
    config.make_pretrained = False  # 100 experts are made ahead of time: python -m launch.experts --config=...
    config.eval.every = 500
    config.eval.num_seeds = 5
    config.eval.epochs = 1000
    return config
