"""The inner loop of trajectory matching: N student SGD steps on the synthetic set, as a reusable pure function.

.. math:: \\theta_{i+1} = \\theta_i - \\alpha \\nabla_\\theta \\mathcal{L}_{CE}(\\theta_i; a_i(\\phi_{B_i}), y_{B_i}),
          \\quad i = s, \\dots, s + n - 1

with minibatches ``B_i`` cut from concatenated random permutations of the synthetic set (the reference's
``indices_chunks``), per-sample DSA ``a_i`` keyed by the step number, and a (learnable) scalar learning rate ``α``.

Truncated unrolling (SATM §3.3.1, Shaban et al. 2019): the first ``truncate`` = ι steps run on
``stop_gradient`` inputs, so the hypergradient ∂θ_N/∂φ (and ∂θ_N/∂α) flows only through the last ``N − ι`` steps and
XLA keeps no residuals for the first ι. ``remat`` wraps each differentiated step in ``jax.checkpoint`` so only the
per-step parameters are stored and the step's activations are recomputed in the backward pass.
``record_at`` = τ returns θ_τ (SATM's trajectory reuse starts its second unroll there), and ``grad_sum`` =
Σ_i ∇_θ L_CE(θ_i) over all steps run (SATM's first-order learning-rate gradient, eq. 12), both without gradient.

Minibatches and augmentations depend only on ``key`` and the absolute step number, so a second call with
``start_step=τ`` and ``params=θ_τ`` replays steps τ..N−1 of the first on the same batches (trajectory reuse).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ddjax.errors import ConfigError

__all__ = ["InnerResult", "minibatch_indices", "student_steps"]

LossFn = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (params, images, labels) -> scalar loss
AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]   # (key, images) -> images


class InnerResult(NamedTuple):
    """``params``: θ after the last step. ``params_at``: θ_τ (``record_at``; no gradient) or None.
    ``grad_sum``: Σ ∇L_CE(θ_i) over the steps run (no gradient)."""
    params: Any
    params_at: Any
    grad_sum: Any


def minibatch_indices(key: jax.Array, num_images: int, batch_size: int, num_steps: int) -> jax.Array:
    """``(num_steps, batch_size)`` indices: random permutations of ``num_images`` concatenated and cut in order, so
    every image is used once before any repeats (the reference's ``randperm`` chunks)."""
    perms = -(-(num_steps * batch_size) // num_images)
    order = jax.vmap(lambda k: jax.random.permutation(k, num_images))(jax.random.split(key, perms)).reshape(-1)
    return order[:num_steps * batch_size].reshape(num_steps, batch_size)


def student_steps(loss_fn: LossFn, params: Any, images: jax.Array, labels: jax.Array, lr: jax.Array,
                  key: jax.Array, *, num_steps: int, batch_size: int, start_step: int = 0, total_steps: int | None = None,
                  truncate: int = 0, remat: bool = False, record_at: int | None = None,
                  augment: AugmentFn | None = None, batch_constraint: Callable[[jax.Array], jax.Array] | None = None,
                  scan_unroll: int | bool = 1) -> InnerResult:
    """Run steps ``start_step .. start_step + num_steps − 1`` of an inner loop of ``total_steps`` (module doc).

    Args:
      loss_fn: ``(params, images, labels) -> scalar`` training loss (cross-entropy of the student).
      params: θ at ``start_step`` (any pytree). images, labels: the synthetic set ``(n, H, W, C)``, ``(n, ...)``.
      lr: scalar learning rate α (differentiable unless truncated away). key: batches and augmentation.
      num_steps: steps to run here; total_steps: length of the whole loop the batch schedule is drawn for
        (default ``start_step + num_steps``); pass the same value to every call that should share batches.
      batch_size: images per step (≤ n). truncate: ι, absolute step index before which nothing is differentiated.
      remat: ``jax.checkpoint`` each differentiated step. record_at: τ, absolute step whose θ to return.
      augment: ``(key, images) -> images``, applied per step with ``fold_in(key_aug, step)``.
      batch_constraint: applied to each step's minibatch (e.g. a sharding constraint over a device mesh).
      scan_unroll: ``lax.scan``'s ``unroll`` for the differentiated part (``True``: fully unrolled).
    """
    n = images.shape[0]
    total = start_step + num_steps if total_steps is None else total_steps
    if not 1 <= batch_size <= n:
        raise ConfigError(f"inner-loop batch size must be in [1, {n}] (the synthetic set size), got {batch_size}")
    if num_steps < 0 or start_step < 0 or start_step + num_steps > total:
        raise ConfigError(f"inner loop steps {start_step}..{start_step + num_steps} do not fit a loop of {total}")
    if not 0 <= truncate <= total:
        raise ConfigError(f"truncate (iota) must be in [0, {total}] for a {total}-step inner loop, got {truncate}")
    if record_at is not None and not start_step <= record_at <= start_step + num_steps:
        raise ConfigError(f"record_at={record_at} is outside the steps run ({start_step}..{start_step + num_steps})")
    k_batch, k_aug = jax.random.split(key)
    schedule = minibatch_indices(k_batch, n, batch_size, total)

    def make_body(frozen: bool):
        def body(carry, step):
            theta, grad_sum = carry
            idx = schedule[step]
            x = images[idx]
            if frozen:
                x = jax.lax.stop_gradient(x)
            if batch_constraint is not None:
                x = batch_constraint(x)
            if augment is not None:
                x = augment(jax.random.fold_in(k_aug, step), x)
            grads = jax.grad(loss_fn)(theta, x, labels[idx])
            step_lr = jax.lax.stop_gradient(lr) if frozen else lr
            theta = jax.tree.map(lambda p, g: p - step_lr * g, theta, grads)
            grad_sum = jax.tree.map(lambda s, g: s + jax.lax.stop_gradient(g), grad_sum, grads)
            return (theta, grad_sum), None
        if remat and not frozen:
            return jax.checkpoint(body)
        return body

    end = start_step + num_steps
    # Phase boundaries: [start, ι) frozen, then [ι, end) differentiated, split at τ to record θ_τ.
    bounds = sorted({start_step, end, min(max(truncate, start_step), end)}
                    | ({record_at} if record_at is not None else set()))
    carry = (params, jax.tree.map(jnp.zeros_like, params))
    recorded = params if record_at == start_step else None
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        frozen = hi <= truncate
        if frozen:
            carry = jax.lax.stop_gradient(carry)
        carry, _ = jax.lax.scan(make_body(frozen), carry, jnp.arange(lo, hi),
                                unroll=1 if frozen else scan_unroll)
        if frozen:
            carry = jax.lax.stop_gradient(carry)
        if record_at == hi:
            recorded = carry[0]
    params_at = None if record_at is None else jax.lax.stop_gradient(recorded)
    return InnerResult(params=carry[0], params_at=params_at, grad_sum=jax.lax.stop_gradient(carry[1]))

