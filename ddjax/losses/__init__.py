"""Pure matching losses: small, documented, safe under ``jit``/``vmap``/``grad``.

Each takes arrays (features on the last axis) and returns a scalar; a leading class axis is handled by the
``*_per_class`` forms so an algorithm step computes every class in one program.
"""
from ddjax.losses.distribution import mean_embedding_distance, mean_embedding_distance_per_class

__all__ = ["mean_embedding_distance", "mean_embedding_distance_per_class"]
