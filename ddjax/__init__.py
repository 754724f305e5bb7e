"""ddjax: functional JAX dataset distillation.

Subpackages: ``data`` (datasets, normalisation, ZCA), ``models`` (ConvNet family, ResNet-18), ``augment`` (DSA),
``losses`` (pure matching losses), ``algorithms`` (``(init, step)`` pairs over one state pytree), ``evaluate``
(the evaluation protocol). Submodules are imported lazily so ``import ddjax`` stays cheap.
"""
__version__ = "0.1.0"
from ddjax.data.synthetic import load_synthetic  # reads a run's synthetic.npz back (ddjax.data.synthetic)
__all__ = ["load_synthetic"]
