"""DIDD on PACS (4 domains, 7 classes) from a DomainBed-layout folder, with the paper's hyper-parameters.

python -m launch.main --config=configs/didd_pacs.py:ipc=10 --workdir=/tmp/pacs   [--config.domains.root=DIR]
Get the data (not downloaded by ddjax; no network at run time): DomainBed's downloader,
  python -m domainbed.scripts.download --data_dir=$HOME/data   (github.com/facebookresearch/DomainBed)
puts PACS at $HOME/data/PACS/<domain>/<class>/*.jpg with domains art_painting, cartoon, photo, sketch and classes
dog, elephant, giraffe, guitar, horse, house, person. The paper's order is Photo, Art painting, Cartoon, Sketch
(domains.names below). Images are resized to 32x32; each domain is split 8:2 as DomainBed does (ddjax.data.domains).
Table 6 with PACS's real batch of 64 per class (a class has fewer than 128 images). No folder: the styled-digits
stand-in runs with --config.domains.source=styled --config.domains.names=''. Methods: see configs/didd_tiny.py.
"""
import os

from launch.config import base_config
from launch.continual_methods import apply_method, paper_settings, parse_options


def get_config(arg: str = "ipc=10"):
    options = parse_options(arg, ipc=10, method="bilevel", seed=0)
    config = base_config("didd")
    config.seed = options["seed"]
    d = config.domains
    d.source, d.plan = "folder", "stream"
    d.root = os.path.expanduser("~/data/PACS")   # or --config.domains.root=DIR; missing: a one-line DataNotFoundError
    d.names = "photo,art_painting,cartoon,sketch"
    d.image_size = 32
    paper_settings(config, options["ipc"], batch_real=64)
    config.eval.dsa_strategy = "color_crop_cutout_flip_scale_rotate"
    # whole_data: 40 epochs = DomainBed's 5,000 ERM steps on PACS's ~8,000 train images at batch 64 (not measured here)
    return apply_method(config, options["method"], whole_data_epochs=40)
