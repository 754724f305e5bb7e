"""IDC: Dataset Condensation via Efficient Synthetic-Data Parameterization (Kim et al., ICML'22).

Gradient matching (:mod:`ddjax.algorithms.gradient_matching`) composed with (:func:`idc_parts`)

- multi-formation: every stored image holds ``factor × factor`` images (:mod:`.multiformation`); matching and
  evaluation use the decoded set (``factor² · IPC`` images per class, at most ``batch_syn_max`` per round);
- per-layer ``D`` = ``l1`` or ``mse`` on conv kernels only (biases, norm affines and the dense head are skipped:
  the reference's ``--bias False --fc False``);
- the network trained on REAL data between matching rounds: ``⌈n_data / net_batch⌉`` SGD steps (lr 0.01, momentum
  0.9, weight decay 5e-4) with per-sample DSA and CutMix (``mixup_net='cut'``);
- matching augmentation ``color_crop_cutout`` applied to real and synthetic alike (siamese, per class), all ops
  in sequence (the reference's ``DiffAug(batch=True)`` always applies colour and cutout, crop being the only
  sampled op of this strategy, i.e. mode "M");
- ``init='mix'``: each stored image a mosaic of ``factor²`` random real images, set at step 0.

Storage layout: ``state.synthetic.extras["stored"]`` ``(K·IPC, H, W, C)`` is the optimised tensor (what IDC
saves); ``state.synthetic.images``/``labels`` hold its decoded training set ``(K·IPC·factor², ...)``, so the
launcher's evaluation trains on what IDC trains on. With ``factor=1`` the stored set is the image set itself.

Image update: ``image_step="summed"`` takes one SGD step per round on the loss summed over classes;
``"per_class"`` is ``snu-mllab/Efficient-Dataset-Condensation:condense.py``'s loop (``optim_img.zero_grad();
loss.backward(); optim_img.step()`` for every class in turn, one momentum buffer for the whole tensor);
``clamp_images`` clips the stored images to [0, 1] in pixel space (the real data's per-channel range) before every
outer iteration, as ``condense.py``. docs/design.md gives the measured comparison behind the defaults. Other
differences (on purpose): real batches for the network update are drawn with replacement.
"""
from __future__ import annotations

import ml_collections
from flax import linen as nn
from jax.sharding import Mesh

import functools

import optax

from ddjax import augment
from ddjax.algorithms import gradient_matching as gm
from ddjax.algorithms.base import Algorithm, siamese_dsa
from ddjax.algorithms.gradient_matching import MatchingSpec
from ddjax.algorithms.samplers import random_real
from ddjax.errors import check_choice

IDC_INITS = ("mix", "given")

__all__ = ["IDC_INITS", "default_config", "idc_parts", "make", "spec_from_idc_config"]


def default_config() -> ml_collections.ConfigDict:
    """IDC hyper-parameters (``config.idc``), reference values (``argument.py``; ``misc/reproduce.py`` for data
    sets; ``init='mix'`` whenever ``factor > 1``)."""
    return ml_collections.ConfigDict(dict(
        factor=2, lr_img=5e-3, momentum=0.5, batch_real=64, metric="l1", layers="conv",
        inner_loop=100,            # matching rounds per network (one ddjax step = one outer iteration)
        n_data=500,                # real samples the network trains on after every round
        net_batch=64, lr_net=0.01, momentum_net=0.9, weight_decay_net=5e-4,
        mix_p=1.0,                 # CutMix probability in the network update (0.5 for CIFAR/SVHN/(F)MNIST)
        aug_type="color_crop_cutout",
        batch_syn_max=128, init="mix", class_axis="auto",
        warmup_epochs=0,           # IDC's --early: real-data epochs per fresh network (10 for ImageNet only)
        image_step="summed",       # gradient_matching.IMAGE_STEPS; "per_class": condense.py's step per class
        clamp_images=False,        # condense.py clamps the images to [0, 1] before every outer iteration
        unroll="auto"))          # loops run unrolled (gradient_matching.resolve_unroll), e.g. classes_net


def _without(strategy: str, token: str) -> str:
    kept = [t for t in augment.parse_strategy(strategy) if t != token]
    return "_".join(kept)


def spec_from_idc_config(hp: ml_collections.ConfigDict, ipc: int, **overrides) -> MatchingSpec:
    """The engine spec of IDC from its config section (``overrides`` used by DREAM)."""
    check_choice("IDC init", hp.init, IDC_INITS)
    aug = hp.aug_type if augment.parse_strategy(hp.aug_type) else ""
    net_aug = _without(aug, "cutout") if hp.mix_p > 0 else aug  # reference: no cutout on top of CutMix
    fields = dict(ipc=ipc, rounds=hp.inner_loop, lr_img=hp.lr_img, momentum=hp.momentum, batch_real=hp.batch_real,
                  metric=hp.metric, layers=hp.layers, match_strategy=aug, match_mode="M", factor=hp.factor,
                  batch_syn_max=hp.batch_syn_max, net_source="real", net_samples=hp.n_data, net_batch=hp.net_batch,
                  net_lr=hp.lr_net, net_momentum=hp.momentum_net, net_weight_decay=hp.weight_decay_net,
                  net_strategy=net_aug, net_mode="M", net_cutmix=hp.mix_p,
                  syn_init="mix" if hp.init == "mix" and hp.factor > 1 else "given", class_axis=hp.class_axis,
                  unroll=hp.get("unroll", "auto"), warmup_epochs=hp.get("warmup_epochs", 0),
                  image_step=hp.get("image_step", "summed"), clamp_images=bool(hp.get("clamp_images", False)))
    fields.update(overrides)
    return MatchingSpec(**fields)


def idc_parts(spec: MatchingSpec, mesh: Mesh | None = None) -> gm.MatchingParts:
    """IDC: DC's parts with multi-formation (mosaic init), and the network trained on real data between rounds."""
    spec.validate()
    net_tx = gm.network_sgd(spec.net_lr, spec.net_momentum, spec.net_weight_decay)
    net_aug = dict(strategy=spec.net_strategy, mode=spec.net_mode, cutmix=spec.net_cutmix, mesh=mesh)
    return gm.MatchingParts(
        rounds=spec.rounds, sampler=random_real(spec.batch_real),
        images=gm.multi_formation(spec.ipc, spec.factor, spec.batch_syn_max),
        initial=gm.mix_real if spec.syn_init == "mix" else gm.keep_given,
        augment=functools.partial(siamese_dsa, strategy=spec.match_strategy, mode=spec.match_mode),
        terms=(gm.gradient_term(spec.metric, spec.layers, spec.grad_weight),),
        net_update=gm.real_data_sgd(spec.net_samples, spec.net_batch, net_tx, **net_aug),
        # the authors' loader_real: batches of batch_real (one optimiser per network, shared with net_update)
        warmup=gm.real_data_warmup(spec.warmup_epochs, spec.batch_real, net_tx, **net_aug),
        tx=optax.sgd(spec.lr_img, momentum=spec.momentum or None), loops=gm.loops(spec.class_axis, spec.unroll),
        image_step=spec.image_step, clamp=spec.clamp_images)


def make(config: ml_collections.ConfigDict, model: nn.Module, num_classes: int, image_shape: tuple[int, int, int],
         mesh: Mesh | None = None) -> Algorithm:
    """IDC's ``(init, step)``. Reads ``config.idc`` and ``config.ipc``."""
    return gm.matching(idc_parts(spec_from_idc_config(config.idc, config.ipc), mesh), model, num_classes,
                       image_shape, mesh)
