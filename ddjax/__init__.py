"""ddjax: functional JAX dataset distillation.

Subpackages: ``data`` (datasets, normalisation, ZCA), ``models`` (ConvNet family, ResNet-18), ``augment`` (DSA),
``losses`` (pure matching losses), ``algorithms`` (``(init, step)`` pairs over one state pytree), ``evaluate``
(the evaluation protocol). Submodules are imported lazily so ``import ddjax`` stays cheap.
"""
__version__ = "0.1.0"


def load_synthetic(path):
    """A run's ``synthetic.npz`` as a ``SyntheticSet`` (:func:`ddjax.data.synthetic.load_synthetic`; imported on call,
    so ``import ddjax`` does not import jax)."""
    from ddjax.data.synthetic import load_synthetic as load
    return load(path)
