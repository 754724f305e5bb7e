"""DTL + DSM on PACS (DomainBed layout), DD for DG's setting, leave one domain out: ``configs/dtl_pacs.py:IPC``.

Put PACS where DomainBed puts it: ``~/data/PACS/<domain>/<class>/*.jpg`` with domains ``art_painting``,
``cartoon``, ``photo``, ``sketch`` and the 7 classes (``python -m domainbed.scripts.download`` makes that
layout), or pass --config.domains.root=DIR.

python -m launch.main --config=configs/dtl_pacs.py:10 --workdir=/tmp/dtl_pacs
Paper scale (Sec. 4.1): squeeze ResNet-18 (5,000 ERM steps, Adam 5e-5, batch 32 per domain; from scratch unless
--config.dtl.squeeze.checkpoint=DIR gives ImageNet weights, see docs/domain_generalization.md), 1,000 iterations,
validation ResNet-50. Images are resized to 64x64 (--config.domains.image_size). Needs a GPU.
"""
import os

from launch.dg import dg_config


def get_config(arg: str = "10"):
    config = dg_config("dtl", source="folder", ipc=int(arg), scale="paper")
    config.domains.root = os.path.expanduser("~/data/PACS")
    config.domains.names = "art_painting,cartoon,photo,sketch"   # DomainBed's PACS domains (ψ has one θ each)
    config.domains.image_size = 64
    return config
