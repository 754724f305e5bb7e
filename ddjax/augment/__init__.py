"""Differentiable Siamese Augmentation (DSA) as pure functions of ``(key, images)``, NHWC.

``dsa(key, images, strategy, per_sample=...)`` applies the reference ``DiffAugment``; ``per_sample=False`` gives
one transform per call that depends only on the key (siamese real/synthetic batches). Explicit-parameter
primitives (``brightness``, ``translate``, ``cutout``, ``scale``, ``affine`` ...) live in ``ddjax.augment.dsa``
(import them with ``from ddjax.augment.dsa import ...``; the attribute ``ddjax.augment.dsa`` is the function).
``idc_augment`` is IDC's variant of DiffAug (flip and colour always, one other group per call); ``cutmix`` is IDC's
CutMix (``ddjax.augment.mix``). ``ddjax.augment.views`` holds torchvision-style per-sample views (random resized
crop, flip, colour jitter, grayscale, CutMix) for decoupled distillation's squeeze and relabel stages.
"""
from ddjax.augment.dsa import DSA_MODES, DSA_OPS, DSAParams, apply_group, dsa, idc_augment, parse_strategy
from ddjax.augment.mix import cutmix, cutmix_box
from ddjax.augment.views import (color_jitter, random_flip, random_grayscale, random_resized_crop, relabel_views,
                                 squeeze_views)

__all__ = ["DSA_MODES", "DSA_OPS", "DSAParams", "apply_group", "cutmix", "cutmix_box", "dsa", "idc_augment",
           "parse_strategy", "color_jitter", "random_flip", "random_grayscale", "random_resized_crop", "relabel_views",
           "squeeze_views"]
