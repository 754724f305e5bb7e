"""Differentiable Siamese Augmentation (DSA) as pure functions of ``(key, images)``, NHWC.

``dsa(key, images, strategy, per_sample=...)`` applies the reference ``DiffAugment``; ``per_sample=False`` gives
one transform per call that depends only on the key (siamese real/synthetic batches). Explicit-parameter
primitives (``brightness``, ``translate``, ``cutout``, ``scale``, ``affine`` ...) live in ``ddjax.augment.dsa``
(import them with ``from ddjax.augment.dsa import ...``; the attribute ``ddjax.augment.dsa`` is the function).
``ddjax.augment.views`` holds torchvision-style per-sample views (random resized crop, flip, colour jitter,
grayscale, CutMix) for decoupled distillation's squeeze and relabel stages.
"""
from ddjax.augment.dsa import DSA_MODES, DSA_OPS, DSAParams, apply_group, dsa, parse_strategy
from ddjax.augment.views import (color_jitter, cutmix, random_flip, random_grayscale, random_resized_crop,
                                 relabel_views, squeeze_views)

__all__ = ["DSA_MODES", "DSA_OPS", "DSAParams", "apply_group", "dsa", "parse_strategy", "color_jitter", "cutmix",
           "random_flip", "random_grayscale", "random_resized_crop", "relabel_views", "squeeze_views"]
