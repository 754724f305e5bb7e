"""ddjax: functional JAX dataset distillation.

Subpackages (import what you use, e.g. ``from ddjax import losses`` or ``from ddjax.algorithms import
get_algorithm``; ``import ddjax`` alone imports none of them, so it stays cheap): ``data`` (datasets, domain
collections, normalisation, ZCA), ``models`` (ConvNet family, AlexNet, VGG-11, ResNet-18/50, the style-transfer
network), ``augment`` (DSA, IDC's DiffAug, CutMix), ``losses`` (pure matching losses), ``algorithms`` (``(init,
step)`` pairs over one state pytree), ``evaluate`` (the evaluation protocols), ``continual`` (staged-run plans and
metrics), ``experts``/``teachers``/``squeeze``/``pretrained`` (networks trained once and stored).
"""
__version__ = "0.1.0"


def load_synthetic(path):
    """A run's ``synthetic.npz`` as a ``SyntheticSet`` (:func:`ddjax.data.synthetic.load_synthetic`; imported on call,
    so ``import ddjax`` does not import jax)."""
    from ddjax.data.synthetic import load_synthetic as load
    return load(path)
