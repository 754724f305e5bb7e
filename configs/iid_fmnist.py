"""IID on Fashion-MNIST with the paper's hyper-parameters (Deng et al., CVPR'24, §4.1).

python -m launch.main --config=configs/iid_fmnist.py:10        # DM + IID at IPC 10 (argument: IPC 1, 10 or 50)
python -m launch.main --config=configs/iid_fmnist.py:10,m3d    # M3D + IID
python -m launch.main --config=configs/iid_fmnist.py:1,idm     # IDM + IID (eq. 9; IDM as configs/idm_fmnist.py)
Paper: DM's settings (lr_img 1, 256 real per class, SGD momentum 0.5; the authors' code runs 20,000 steps),
lambda_cc 0.05 and lambda_cm 0.01 at IPC 1 and 10, lambda_cc 0.003 at IPC 50; the teacher is a ResNet-18 (instance
norm) trained 30 epochs on the same data (SGD 0.01, momentum 0.9, wd 5e-4, no augmentation). ddjax keeps a pool of
8 such teachers (the authors: 1,000) made once by ``python -m launch.teachers --config=configs/iid_fmnist.py:10``
or on the first run. At IPC 1 both IID terms vanish (one sample per class), so IID equals its base there.
On 2 CPU cores training the teachers alone takes hours; reduce with e.g. --config.iid.teacher.epochs=2
--config.iid.teacher.num_teachers=2 --config.steps=200 --config.eval.epochs=300 (and say so with the numbers).
Needs the Fashion-MNIST IDX files: apt-get install dataset-fashion-mnist (or --config.data.source_dir=DIR).
"""
from launch.config import base_config


def get_config(arg: str = "10"):
    ipc, _, base = arg.partition(",")
    config = base_config("iid")
    config.data.name = "fashion_mnist"
    config.ipc = int(ipc)
    config.steps = 20000
    config.log_every = 10
    config.checkpoint_every = 500
    config.model.width = 128
    config.model.depth = 3
    config.iid.base = base or "dm"
    if config.iid.base == "m3d":  # M3D's settings for the base (configs/m3d_fmnist.py)
        config.iid.lr_img, config.iid.batch_real = float(config.ipc), 128
    elif config.iid.base == "idm":  # IDM's settings for the base (configs/idm_fmnist.py)
        config.iid.lr_img, config.iid.batch_real = 0.2, 256
        config.iid.idm.ce_weight = 0.1 if config.ipc >= 50 else 0.5
        config.iid.idm.new_every = 5 if config.ipc == 1 else 30
    else:
        config.iid.lr_img, config.iid.batch_real = 1.0, 256
    config.iid.lambda_cc = 0.003 if config.ipc >= 50 else 0.05
    config.iid.lambda_cm = 0.01
    t = config.iid.teacher
    t.model, t.width, t.norm, t.epochs, t.num_teachers = "resnet18", 64, "instance", 30, 8
    config.eval.every = 2000
    config.eval.num_seeds = 5
    config.eval.epochs = 1000
    return config
