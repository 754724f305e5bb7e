"""Differentiable Siamese Augmentation (DSA) as pure functions of ``(key, images)``, NHWC.

``dsa(key, images, strategy, per_sample=...)`` applies the reference ``DiffAugment``; ``per_sample=False`` gives
one transform per call that depends only on the key (siamese real/synthetic batches). Explicit-parameter
primitives (``brightness``, ``translate``, ``cutout``, ``scale``, ``affine`` ...) live in ``ddjax.augment.dsa``
(import them with ``from ddjax.augment.dsa import ...``; the attribute ``ddjax.augment.dsa`` is the function).
"""
from ddjax.augment.dsa import DSA_MODES, DSA_OPS, DSAParams, apply_group, dsa, parse_strategy

__all__ = ["DSA_MODES", "DSA_OPS", "DSAParams", "apply_group", "dsa", "parse_strategy"]
