"""A batch in equal, cache-sized chunks: on XLA:CPU a whole batch's activations stream from memory, while a chunk's
stay in cache between the ops that read them (docs/performance.md). One rule for the chunk size and one summed
loop, shared by the convolution's kernel gradient (:mod:`ddjax.models.conv`), gradient matching's first-order
batch gradients and distribution matching's real features (:mod:`ddjax.algorithms`)."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

__all__ = ["largest_divisor", "sum_over_chunks"]


def largest_divisor(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is at most ``limit`` (at least 1): the chunk size of a batch of ``n``
    summed or mapped over in equal chunks of at most ``limit``."""
    return max(d for d in range(1, max(1, min(limit, n)) + 1) if n % d == 0)


def sum_over_chunks(fn: Callable[[Any], Any], batch: Any, chunk: int) -> Any:
    r"""``Σ_j fn(batch_j)`` over the ``n / chunk`` equal chunks of ``batch``'s leading axis (a pytree of ``n`` rows;
    ``chunk`` divides ``n``), in a ``lax.scan``. For ``fn`` a sum over its rows this is the whole batch's value up
    to the order of the additions: :math:`\sum_{i=1}^{n} f_i = \sum_j \sum_{i \in j} f_i`."""
    n = jax.tree.leaves(batch)[0].shape[0]
    chunks = jax.tree.map(lambda a: a.reshape((n // chunk, chunk) + a.shape[1:]), batch)
    zero = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(fn, jax.tree.map(lambda a: a[0], chunks)))
    return jax.lax.scan(lambda total, rows: (jax.tree.map(jnp.add, total, fn(rows)), None), zero, chunks)[0]
