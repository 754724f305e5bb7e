"""DM over a stream of 5 rotated-digits domains (0°, 36°, ..., 144°): the quick staged run (minutes on 2 CPU cores).

python -m launch.main --config=configs/dm_stream_tiny.py
python -m launch.main --config=configs/dm_stream_tiny.py --config.domains.plan=joint     # or gather, leave_one_out
Each of the 5 phases runs ``steps`` DM steps on one domain (plan ``stream``: Finetune, the state kept between
domains), then trains 5 networks on the set and tests them on every domain; results.json holds the accuracy matrix,
A_T (DIDD eq. 18) and F_T (eq. 19). DM's settings are configs/dm_tiny.py's. The angle step is 36° rather than DIDD's
9° (20 domains over 180°) so that 5 domains span the same range and forgetting shows.
"""
from launch.config import base_config


def get_config():
    config = base_config("dm")
    config.ipc = 10
    config.log_every = 10
    config.model.width = 64
    config.model.depth = 3
    config.dm.batch_real = 128
    config.dm.lr_img = 10.0        # as configs/dm_tiny.py (measured there on 8x8 digits)
    config.eval.num_seeds = 5
    config.eval.epochs = 300
    config.domains.source = "rotated"
    config.domains.base = "digits"
    config.domains.num_domains = 5
    config.domains.angle_step = 36.0
    config.domains.plan = "stream"
    config.steps = 100             # per phase
    config.checkpoint_every = 50
    config.eval.every = 0          # staged runs evaluate at phase ends
    config.eval.random_real = False
    # Rotation is the domain shift here: no rotation augmentation in distillation or evaluation.
    config.dsa_strategy = "color_crop_cutout_scale"
    config.eval.dsa_strategy = "color_crop_cutout_scale"
    return config
