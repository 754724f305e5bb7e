r"""Squeeze: the model decoupled distillation recovers from (SRe2L, RDED, DD for DG's DTL), trained by ERM on the
seen domains and kept in the pretrained store.

DD for DG Sec. 4.1: a BN ResNet-18, ERM, 5,000 steps, batch 32, Adam(5e-5, betas (0.9, 0.999)), weight decay 0, no
schedule, random-resized-crop / flip / colour-jitter / grayscale; "the batch normalization layer is trained only in
the DD per domain approach; otherwise, it is frozen". The paper starts from ImageNet weights; those cannot be
downloaded here, so ddjax trains from scratch by default and takes a user's checkpoint (``checkpoint=``):

- ``bn="trained"``: batch statistics in training, running averages updated (the "per domain" setting, and the
  only meaningful one from scratch: frozen statistics of a fresh network are the init's 0/1);
- ``bn="frozen"``: DomainBed's ``freeze_bn``: every BN layer uses and keeps the starting weights' running
  statistics (its affine still trains). Needs ``checkpoint``.

Batches follow DomainBed's ERM: ``batch_size`` images from *each* seen domain per step (uniform with replacement).

Checkpoint format (``checkpoint=DIR``): an orbax ``StandardCheckpointer`` directory of a flax variables dict
``{"params": ..., "batch_stats": ...}`` with the tree of ``ddjax.models.init_model(build_model("resnet18", K,
width=w), key, (H, W, C))``, e.g. written by ``orbax.checkpoint.StandardCheckpointer().save(DIR, variables)``.
Leaves whose path or shape differ (a head for another class count) keep their fresh initialisation.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Sequence, TextIO

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ddjax import models, pretrained
from ddjax.augment.views import squeeze_views
from ddjax.errors import CheckpointError, ConfigError, DataNotFoundError, check_choice

BN_MODES = ("trained", "frozen")


def merge_checkpoint(fresh: dict, checkpoint_dir: str) -> tuple[dict, int]:
    """``fresh`` variables with every leaf that ``checkpoint_dir`` holds at the same path and shape replaced.

    Returns ``(variables, number of leaves taken from the checkpoint)``; CheckpointError if it is unreadable or
    shares no leaf with the model."""
    import orbax.checkpoint as ocp
    if not os.path.isdir(checkpoint_dir):
        raise DataNotFoundError(f"squeeze checkpoint {checkpoint_dir} does not exist; pass an orbax directory of "
                                "{'params', 'batch_stats'} (docs/domain_generalization.md)")
    try:
        checkpointer = ocp.StandardCheckpointer()
        stored = checkpointer.restore(os.path.abspath(checkpoint_dir))
        checkpointer.close()
    except Exception as e:  # orbax raises many types
        raise CheckpointError(f"squeeze checkpoint {checkpoint_dir} cannot be read ({str(e).splitlines()[0][:120]})"
                              ) from None
    flat_stored = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(stored)}
    taken = 0

    def pick(path, leaf):
        nonlocal taken
        value = flat_stored.get(jax.tree_util.keystr(path))
        if value is not None and np.shape(value) == np.shape(leaf):
            taken += 1
            return jnp.asarray(value, leaf.dtype)
        return leaf

    merged = jax.tree_util.tree_map_with_path(pick, fresh)
    if taken == 0:
        raise CheckpointError(f"squeeze checkpoint {checkpoint_dir} shares no parameter with this model (path and "
                              "shape); save the variables of ddjax.models.build_model('resnet18', ...)")
    return merged, taken


def stack_domains(domains: Sequence[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate per-domain ``(images, labels)``; returns ``(images, labels, offsets (E,), counts (E,))``."""
    if not domains:
        raise ConfigError("the squeeze model needs at least one seen domain")
    counts = np.array([len(labels) for _, labels in domains], np.int32)
    if (counts == 0).any():
        raise ConfigError(f"seen domain {int(np.flatnonzero(counts == 0)[0])} has no training image")
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    images = np.concatenate([np.asarray(x, np.float32) for x, _ in domains])
    labels = np.concatenate([np.asarray(y, np.int32) for _, y in domains])
    return images, labels, offsets, counts


@functools.partial(jax.jit, static_argnames=("model", "steps", "batch_size", "bn", "augment", "flip"))
def _train(variables: dict, key: jax.Array, images: jax.Array, labels: jax.Array, offsets: jax.Array,
           counts: jax.Array, mean: jax.Array, std: jax.Array, lr: jax.Array, b1: jax.Array, b2: jax.Array, *,
           model: nn.Module, steps: int, batch_size: int, bn: str, augment: bool, flip: bool
           ) -> tuple[dict, jax.Array]:
    tx = optax.adam(lr, b1=b1, b2=b2)
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    num_domains = counts.shape[0]

    def step(carry, t):
        params, state, opt_state = carry
        k_idx, k_aug = jax.random.split(jax.random.fold_in(key, t))
        u = jax.random.uniform(k_idx, (num_domains, batch_size))
        idx = (offsets[:, None] + jnp.floor(u * counts[:, None]).astype(jnp.int32)).reshape(-1)
        x, y = images[idx], labels[idx]
        if augment:
            x = squeeze_views(k_aug, x, mean, std, flip=flip)

        def loss_fn(p):
            v = {"params": p, **state}
            if bn == "trained" and "batch_stats" in state:
                logits, new_vars = models.apply_model(model, v, x, train=True)
            else:  # frozen: running statistics used and kept (DomainBed freeze_bn)
                logits, new_vars = models.apply_model(model, v, x, train=False)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, new_vars

        (loss, new_vars), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, {k: new_vars[k] for k in state}, opt_state), loss

    (params, state, _), losses = jax.lax.scan(step, (params, state, tx.init(params)), jnp.arange(steps))
    return {"params": params, **state}, losses


def train_squeeze(key: jax.Array, model: nn.Module, domains: Sequence[tuple[Any, Any]], *, mean: Any, std: Any,
                  steps: int = 5000, batch_size: int = 32, lr: float = 5e-5, betas: tuple[float, float] = (0.9, 0.999),
                  bn: str = "trained", checkpoint: str | None = None, augment: bool = True, flip: bool = True
                  ) -> tuple[dict, np.ndarray]:
    """ERM on the seen ``domains`` (a list of ``(images, labels)``), one jitted program; returns
    ``(variables, per-step losses)``. See the module docstring for the protocol, ``bn`` and ``checkpoint``."""
    check_choice("squeeze bn mode", bn, BN_MODES)
    if bn == "frozen" and not checkpoint:
        raise ConfigError("squeeze bn='frozen' keeps the starting weights' BN statistics, which from scratch are the "
                          "init's 0/1; pass a pretrained checkpoint or use bn='trained'")
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"squeeze steps and batch_size must be >= 1, got {steps} and {batch_size}")
    images, labels, offsets, counts = stack_domains(domains)
    k_init, k_train = jax.random.split(key)
    variables = models.init_model(model, k_init, images.shape[1:])
    if checkpoint:
        variables, _ = merge_checkpoint(variables, checkpoint)
    variables, losses = _train(variables, k_train, jnp.asarray(images), jnp.asarray(labels), jnp.asarray(offsets),
                               jnp.asarray(counts), jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32),
                               jnp.float32(lr), jnp.float32(betas[0]), jnp.float32(betas[1]), model=model,
                               steps=int(steps), batch_size=int(batch_size), bn=bn, augment=bool(augment),
                               flip=bool(flip))
    return variables, np.asarray(losses)


def build_squeeze_model(squeeze_config: Any, num_classes: int) -> nn.Module:
    """The squeeze network of a config's ``squeeze`` section (``model``, ``width``): batch norm always (its BN
    statistics are what SRe2L/DTL read)."""
    return models.build_model(squeeze_config.model, num_classes, width=squeeze_config.width, norm="batch")


def squeeze_spec(squeeze_config: Any, dataset_name: str, seen: Sequence[str], counts: Sequence[int],
                 image_shape: tuple[int, ...], num_classes: int) -> dict:
    """Everything that determines a squeeze model (its pretrained-store key), including which domains it saw."""
    s = squeeze_config
    return {"dataset": dataset_name, "seen_domains": list(seen), "domain_sizes": [int(c) for c in counts],
            "image_shape": [int(d) for d in image_shape], "num_classes": int(num_classes), "model": s.model,
            "width": int(s.width), "steps": int(s.steps), "batch_size": int(s.batch_size), "lr": float(s.lr),
            "betas": [float(b) for b in s.betas], "bn": s.bn, "augment": bool(s.augment), "flip": bool(s.flip),
            "seed": int(s.seed),
            "checkpoint": os.path.abspath(s.checkpoint) if s.checkpoint else None}


def load_or_make_squeeze(squeeze_config: Any, dataset_name: str, seen: Sequence[str],
                         domains: Sequence[tuple[Any, Any]], *, mean: Any, std: Any, num_classes: int,
                         root: str | None = None, allow_make: bool = True, stream: TextIO | None = None
                         ) -> tuple[dict, str]:
    """The squeeze variables for these seen domains from the pretrained store (kind ``"squeeze"``), trained first
    when missing and allowed. Returns ``(variables, path)``."""
    counts = [len(y) for _, y in domains]
    image_shape = np.shape(domains[0][0])[1:]
    spec = squeeze_spec(squeeze_config, dataset_name, seen, counts, image_shape, num_classes)
    model = build_squeeze_model(squeeze_config, num_classes)

    def make():
        variables, _ = train_squeeze(
            jax.random.PRNGKey(spec["seed"]), model, domains, mean=mean, std=std, steps=spec["steps"],
            batch_size=spec["batch_size"], lr=spec["lr"], betas=tuple(spec["betas"]), bn=spec["bn"],
            checkpoint=squeeze_config.checkpoint, augment=spec["augment"], flip=spec["flip"])
        return variables

    tree, path = pretrained.load_or_make("squeeze", spec, make, root=root, allow_make=allow_make,
                                         how_to_make="python -m launch.main --config=<this config>", stream=stream)
    return jax.tree.map(jnp.asarray, tree), path
