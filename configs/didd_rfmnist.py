"""DIDD on R-FMNIST (20 domains of Fashion-MNIST rotated 9 degrees apart) with the paper's hyper-parameters.

python -m launch.main --config=configs/didd_rfmnist.py:ipc=10 --workdir=/tmp/didd_rfmnist10
python -m launch.main --config=configs/didd_rfmnist.py:ipc=10,method=mas --workdir=/tmp/didd_rfmnist10_mas
The paper's R-MNIST is MNIST, which is not available offline; R-FMNIST stands in (same 20 rotated domains of 60,000
/ 10,000 images). Table 6: 3,000 iterations per domain, 128 real images per class, η_x = IPC, η_α = η_β = 1e-2,
λ_α = λ_β = 1e-4, (α, β) ∈ (0, 2); ConvNet-3 width 128 with instance norm, colour + crop + cutout, multi-formation;
evaluation 1,000 epochs, SGD 1e-2, batch 64 (§5.1.2). Methods: see configs/didd_tiny.py. That is 60,000 steps: a
GPU job. On 2 CPU cores shrink with e.g. --config.steps=100 --config.domains.num_domains=5 --config.eval.epochs=300.
Needs the Fashion-MNIST IDX files: apt-get install dataset-fashion-mnist (or --config.data.source_dir=DIR).
"""
from launch.config import base_config
from launch.continual_methods import apply_method, paper_settings, parse_options


def get_config(arg: str = "ipc=10"):
    options = parse_options(arg, ipc=10, method="bilevel", seed=0)
    config = base_config("didd")
    config.seed = options["seed"]
    config.data.name = "fashion_mnist"
    d = config.domains
    d.source, d.base, d.num_domains, d.angle_step, d.plan = "rotated", "fashion_mnist", 20, 9.0, "stream"
    paper_settings(config, options["ipc"], batch_real=128)
    config.eval.dsa_strategy = "color_crop_cutout_scale_rotate"
    return apply_method(config, options["method"])
