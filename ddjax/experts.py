"""Expert trajectories for trajectory matching (MTT, SATM): networks trained on real data, saved every epoch.

Reference (``mtt-distillation/buffer.py``): each expert is a freshly initialised network trained with SGD
(buffer.py's own ``--lr_teacher``, default 0.01; no momentum, no weight decay, constant lr) with DSA on every batch,
parameters saved at initialisation and after every epoch (``train_epochs + 1`` snapshots). In ddjax that rate is
``config.<mtt|satm>.experts.lr``; the distillation's ``lr_teacher`` (``distill.py --lr_teacher``, 0.001 in the
authors' CIFAR-10 IPC 10/50 commands) only initialises the learnable student rate ``syn_lr`` and never trains
an expert. ddjax trains all ``num_experts`` experts in ONE jitted program (:func:`ddjax.evaluate.train_networks`
with ``trajectory=True``) and keeps them as one pytree:

    ExpertBuffer.params: each leaf ``(num_experts, epochs + 1, *leaf_shape)``

Flat experts (FTD, used by SATM-FI) are trained with a sharpness-aware gradient (``sharpness=("gsam", rho, alpha)``).
Trajectory matching needs a model without batch statistics (instance/layer/group/no norm), as the reference's
functional ``ReparamModule`` does.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from ddjax import evaluate
from ddjax.errors import ConfigError

__all__ = ["ExpertBuffer", "train_experts", "segment", "num_snapshots", "check_segment"]


class ExpertBuffer(flax.struct.PyTreeNode):
    """Stacked expert trajectories: ``params`` leaves shaped ``(num_experts, num_snapshots, ...)``."""
    params: Any

    @property
    def num_experts(self) -> int:
        return int(jax.tree.leaves(self.params)[0].shape[0])

    @property
    def num_snapshots(self) -> int:
        return num_snapshots(self)


def num_snapshots(buffer: ExpertBuffer) -> int:
    """Snapshots per expert (training epochs + 1)."""
    return int(jax.tree.leaves(buffer.params)[0].shape[1])


def train_experts(key: jax.Array, model: nn.Module, images: Any, labels: Any, *, num_experts: int, epochs: int,
                  lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0, batch_size: int = 256,
                  dsa_strategy: str = evaluate.DEFAULT_DSA_STRATEGY,
                  sharpness: tuple[str, float, float] | None = None, num_classes: int | None = None,
                  seed_axis: str | None = None, mesh: Any = None) -> ExpertBuffer:
    """Train ``num_experts`` experts on real ``(images, labels)`` in one program; snapshots every epoch.

    Defaults are the reference ``buffer.py`` values (SGD lr 0.01 = its ``--lr_teacher``, no momentum, no weight
    decay, constant lr, DSA).
    ``sharpness=("gsam", rho, alpha)`` makes FTD-style flat experts. ``mesh``: the experts are split over its
    devices (:func:`ddjax.sharding.map_over_seeds`), each trained as without one. Raises ConfigError for batch-norm models.
    """
    variables = evaluate.init_networks(key, model, tuple(images.shape[1:]), num_seeds=1)
    if set(variables) != {"params"}:
        raise ConfigError(f"trajectory matching needs a model without running statistics, got collections "
                          f"{sorted(variables)}; use --config.model.norm=instance (or layer/group/none)")
    out = evaluate.train_networks(key, model, images, labels, num_seeds=num_experts, epochs=epochs, lr=lr,
                                  momentum=momentum, weight_decay=weight_decay, batch_size=batch_size,
                                  dsa_strategy=dsa_strategy, num_classes=num_classes, lr_decay=False,
                                  seed_axis=seed_axis, trajectory=True, sharpness=sharpness,
                                  mesh=mesh)
    return ExpertBuffer(params=out["trajectory"])


def check_segment(buffer_snapshots: int, max_start_epoch: int, expert_epochs: int, min_start_epoch: int = 0) -> None:
    """Raise ConfigError unless every start epoch in ``[min_start_epoch, max_start_epoch)`` has its target
    ``start + expert_epochs`` inside a buffer of ``buffer_snapshots`` snapshots."""
    if expert_epochs < 1:
        raise ConfigError(f"expert_epochs must be >= 1, got {expert_epochs}")
    if not 0 <= min_start_epoch < max_start_epoch:
        raise ConfigError(f"need 0 <= min_start_epoch < max_start_epoch, got {min_start_epoch} and {max_start_epoch}")
    last_target = max_start_epoch - 1 + expert_epochs
    if last_target > buffer_snapshots - 1:
        raise ConfigError(
            f"max_start_epoch={max_start_epoch} with expert_epochs={expert_epochs} needs snapshot {last_target}, but "
            f"the expert buffer holds epochs 0..{buffer_snapshots - 1}; lower max_start_epoch/expert_epochs or train "
            f"experts for at least {last_target} epochs (--config.experts.epochs)")


def segment(buffer: ExpertBuffer, expert: jax.Array, start: jax.Array, expert_epochs: int) -> tuple[Any, Any]:
    """``(θ*_start, θ*_{start + expert_epochs})`` of expert ``expert`` (traced indices; jit-safe)."""
    pick = lambda t: jax.tree.map(lambda leaf: leaf[expert, t], buffer.params)  # noqa: E731
    return pick(start), pick(start + expert_epochs)


def sample_segment(key: jax.Array, buffer: ExpertBuffer, *, expert_epochs: int, max_start_epoch: jax.Array | int,
                   min_start_epoch: jax.Array | int = 0) -> tuple[Any, Any, jax.Array, jax.Array]:
    """A random expert and start epoch ``t ~ U{min_start_epoch, ..., max_start_epoch - 1}`` (the reference's
    ``randint(0, max_start_epoch)``); returns ``(θ*_t, θ*_{t+M}, expert, t)``."""
    k_expert, k_start = jax.random.split(key)
    expert = jax.random.randint(k_expert, (), 0, buffer.num_experts)
    start = jax.random.randint(k_start, (), jnp.asarray(min_start_epoch), jnp.asarray(max_start_epoch))
    theta_start, theta_target = segment(buffer, expert, start, expert_epochs)
    return theta_start, theta_target, expert, start
