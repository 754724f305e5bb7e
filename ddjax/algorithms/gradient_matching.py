"""Gradient matching (DC: Zhao, Mopuri & Bilen, ICLR'21; DSA: Zhao & Bilen, ICML'21) and the engine shared by IDC
and DREAM+.

One ``step`` is one *outer iteration* of the references: a fresh randomly initialised network ``θ`` and ``rounds``
matching rounds on it, run as ONE jitted program (a ``lax.scan`` over the rounds). Round ``r``:

1. real batch per class ``R_c`` (random ``batch_real`` images of class ``c``; DREAM: the cluster representatives,
   re-selected every ``interval`` rounds), synthetic images of class ``c`` ``S_c`` (IDC: decoded multi-formation
   images, at most ``batch_syn_max``), the same DSA transform ``a_c`` on both (siamese, one per class; none for DC);
2. one SGD step (momentum) on the stored synthetic images down

   .. math:: \\mathcal{L} = \\sum_c D\\big(\\nabla_\\theta \\ell(\\theta; a_c(R_c)),\\; \\nabla_\\theta \\ell(\\theta;
             a_c(S_c))\\big) \\; + \\; w_f \\sum_c D_f\\big(\\bar e(a_c(R_c)),\\, \\bar e(a_c(S_c))\\big)

   with ``ℓ`` the cross-entropy, ``D`` :func:`ddjax.losses.gradient_matching_distance` and the second term
   DREAM+'s bidirectional (mean-embedding) term, ``w_f = 0`` otherwise. The image gradient differentiates one
   matching step (a gradient of a gradient), never through the rounds;
3. except after the last round (the network is discarded then), the network trains: DC/DSA ``net_epochs``
   epochs of plain SGD on the synthetic set (per-sample DSA for DSA), IDC/DREAM ``⌈net_samples / net_batch⌉``
   SGD steps (momentum, weight decay, CutMix) on real images.

The loss reported is the mean over rounds of :math:`\\mathcal{L}/K` (DC logs ``loss_avg / (K · outer_loop)``).
Every class is one batched program: per-class gradients come from ``vmap`` over the class axis (GPU/TPU) or
``lax.map`` (CPU: one class's activations in memory at a time; since the kernel gradient became matrix products,
:mod:`ddjax.models.conv`, both run at the same speed there: 6.6 vs 6.1 s for DC's real and synthetic gradients at
B=64, w64, 2026-11-30); ``class_axis`` overrides. Batch-norm networks use the statistics of each forward batch
(train mode) and keep their running averages fixed within the step; the reference instead freezes statistics from
16 real images per class — the default network (instance norm) is unaffected. With a device mesh the real images
of every round are split over its ``data`` axis (:func:`make_matching`).

Reference defaults (``DatasetCondensation/main.py``, ``utils.py:get_loops``): 1000 iterations, ``lr_img=0.1``
(SGD momentum 0.5), ``batch_real=256``, ``lr_net=0.01`` (SGD, no momentum), batch 256 on the synthetic set, metric
``'ours'`` (= ``layerwise_cos``), rounds/net epochs by IPC: 1→(1,1), 10→(10,50), 20→(20,25), 30→(30,20),
40→(40,15), 50→(50,10); other IPC need ``outer_loop``/``inner_loop`` set explicitly.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ml_collections import config_dict

from ddjax import augment, cluster, models
from ddjax.algorithms.base import Algorithm, DistillState, RealPool, SyntheticSet, sample_per_class
from ddjax.algorithms.multiformation import check_factor, decode_zoom, mosaic
from ddjax.errors import ConfigError, check_choice
from ddjax.losses.gradient import check_gradient_metric, gradient_matching_distance
from ddjax.sharding import DATA_AXIS

#: DC's ``get_loops``: IPC -> (matching rounds per network, net-training epochs between rounds).
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
NET_SOURCES = ("synthetic", "real")
SYN_INITS = ("given", "mix", "kmeans")
CLASS_AXES = ("auto", "vmap", "map")
#: Loops that ``unroll`` can unroll (``lax.scan(..., unroll=True)``): the per-class loop of the matching loss
#: (``class_axis="map"``), the matching rounds, the network-update steps and the embedding chunks of DREAM's pool.
UNROLL_LOOPS = ("classes", "rounds", "net", "embed")
#: ``unroll="auto"``: the loops XLA:CPU gets unrolled; other backends unroll nothing. Empty: on the shared 2-core
#: box (2026-11-25, DC IPC 10, w64, 2 rounds x 10 net steps) no choice was reliably faster than rolled loops
#: (none 25-36 s, net 24 s, classes 43 s, classes_rounds 27 s, classes_rounds_net 22 s per step, load ~8), while
#: unrolling cost 1.5-3.3x compile time and unrolled classes 3.2x temp memory; docs/results.md has the rows.
CPU_UNROLL: tuple[str, ...] = ()
AUG_MODES = ("S", "M")

__all__ = ["CPU_UNROLL", "DC_LOOPS", "MatchingSpec", "UNROLL_LOOPS", "dc_loops", "default_config",
           "dsa_default_config", "feature_distance", "make", "make_dsa", "make_matching", "resolve_unroll",
           "spec_from_dc_config"]


def dc_loops(ipc: int, outer_loop: int | None = None, inner_loop: int | None = None) -> tuple[int, int]:
    """``(outer_loop, inner_loop)`` for ``ipc``: the explicit values when both are set, else DC's schedule."""
    if outer_loop is not None and inner_loop is not None:
        if outer_loop < 1 or inner_loop < 0:
            raise ConfigError(f"outer_loop must be >= 1 and inner_loop >= 0, got {outer_loop}, {inner_loop}")
        return int(outer_loop), int(inner_loop)
    if ipc not in DC_LOOPS:
        raise ConfigError(f"DC has no outer/inner loop schedule for ipc={ipc} (it has ipc "
                          f"{', '.join(map(str, DC_LOOPS))}); set both --config.<algorithm>.outer_loop and "
                          "--config.<algorithm>.inner_loop")
    return DC_LOOPS[ipc]


def resolve_unroll(unroll: str, backend: str | None = None) -> frozenset[str]:
    """The loops to unroll for the ``unroll`` option: ``"auto"`` (XLA:CPU → :data:`CPU_UNROLL`, else none),
    ``"none"``, or loop names from :data:`UNROLL_LOOPS` joined by ``_`` (e.g. ``"classes_rounds"``).

    Why: XLA:CPU can run a rolled ``lax.scan`` whose body holds convolution kernel gradients several times slower
    than the same loop unrolled (MTT's inner loop; notes/xla-cpu-pitfalls); the matching step did not show it
    (:data:`CPU_UNROLL`), so unrolling is an override here. GPU/TPU keep rolled loops (compile time)."""
    if unroll == "auto":
        backend = backend or jax.default_backend()
        return frozenset(CPU_UNROLL) if backend == "cpu" else frozenset()
    if unroll == "none":
        return frozenset()
    tokens = unroll.split("_") if unroll else []
    for t in tokens:
        if t not in UNROLL_LOOPS:
            raise ConfigError(f"unknown loop {t!r} in unroll={unroll!r}; use auto, none, or names from "
                              f"{', '.join(UNROLL_LOOPS)} joined by '_' (e.g. classes_rounds)")
    return frozenset(tokens)


@dataclasses.dataclass(frozen=True)
class MatchingSpec:
    """Everything one gradient-matching step does (module doc); built from a config by each algorithm.

    rounds: matching rounds per fresh network. lr_img/momentum: image SGD. batch_real: real images per class per
    round. metric/layers: :func:`gradient_matching_distance`. match_strategy/match_mode: siamese DSA in matching
    ("" = none). factor: multi-formation (1 = off); batch_syn_max: most decoded images per class per round
    (0 = all). net_source: "synthetic" (DC) or "real" (IDC); net_epochs (synthetic) / net_samples (real) per round;
    net_batch, net_lr, net_momentum, net_weight_decay; net_strategy/net_mode: per-sample DSA of net training;
    net_cutmix: CutMix probability. syn_init: "given" (the set passed to init), "mix" (IDC mosaic of random real
    images), "kmeans" (DREAM: mosaic of cluster-representative real images), applied at step 0.
    DREAM: representative (bool), interval, subsample, cluster_pool (0 = the whole class), kmeans_iters,
    feature_weight (bidirectional term; 0 = off). class_axis: "auto" | "vmap" | "map". unroll: which loops run
    unrolled (:func:`resolve_unroll`).
    """
    ipc: int
    rounds: int
    lr_img: float
    momentum: float
    batch_real: int
    metric: str = "layerwise_cos"
    layers: str = "all"
    match_strategy: str = ""
    match_mode: str = "S"
    factor: int = 1
    batch_syn_max: int = 0
    net_source: str = "synthetic"
    net_epochs: int = 0
    net_samples: int = 0
    net_batch: int = 256
    net_lr: float = 0.01
    net_momentum: float = 0.0
    net_weight_decay: float = 0.0
    net_strategy: str = ""
    net_mode: str = "S"
    net_cutmix: float = 0.0
    syn_init: str = "given"
    representative: bool = False
    interval: int = 10
    subsample: int = 1
    cluster_pool: int = 0
    kmeans_iters: int = 100
    feature_weight: float = 0.0
    grad_weight: float = 1.0
    class_axis: str = "auto"
    unroll: str = "auto"

    def validate(self, image_shape: tuple[int, int, int]) -> None:
        """Eager checks with one-line ConfigErrors."""
        check_gradient_metric(self.metric, self.layers)
        for name in ("ipc", "rounds", "batch_real", "net_batch", "interval", "subsample", "kmeans_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("net_epochs", "net_samples", "batch_syn_max", "cluster_pool"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr_img <= 0:
            raise ConfigError(f"lr_img must be > 0, got {self.lr_img}")
        if self.net_lr < 0 or not 0 <= self.momentum < 1 or not 0 <= self.net_momentum < 1:
            raise ConfigError("net_lr must be >= 0 and momentum, net_momentum in [0, 1)")
        if not 0 <= self.net_cutmix <= 1:
            raise ConfigError(f"net_cutmix is a probability in [0, 1], got {self.net_cutmix}")
        check_choice("net update source", self.net_source, NET_SOURCES)
        check_choice("synthetic init", self.syn_init, SYN_INITS)
        check_choice("class axis", self.class_axis, CLASS_AXES)
        resolve_unroll(self.unroll)
        check_choice("augmentation mode", self.match_mode, AUG_MODES)
        check_choice("augmentation mode", self.net_mode, AUG_MODES)
        augment.parse_strategy(self.match_strategy or "none")
        augment.parse_strategy(self.net_strategy or "none")
        check_factor(self.factor, image_shape)
        if self.representative and self.batch_real % self.subsample:
            raise ConfigError(f"batch_real={self.batch_real} must be a multiple of subsample={self.subsample} "
                              "(batch_real // subsample clusters, subsample nearest samples each)")
        if self.feature_weight < 0 or self.grad_weight < 0:
            raise ConfigError("feature_weight and grad_weight must be >= 0")

    @property
    def decoded_per_class(self) -> int:
        return self.ipc * self.factor ** 2

    @property
    def syn_per_class(self) -> int:
        """Synthetic images per class that enter one matching round."""
        n = self.decoded_per_class
        return min(n, self.batch_syn_max) if self.batch_syn_max else n


def feature_distance(real_mean: jax.Array, syn_mean: jax.Array, metric: str) -> jax.Array:
    """DREAM+'s feature term between mean embeddings with the matching metric: ``mse`` → sum of squares (DM's
    loss), ``l1`` → sum of absolute values, ``cos``/``layerwise_cos`` → 1 − cosine."""
    if metric == "mse":
        return jnp.sum(jnp.square(real_mean - syn_mean))
    if metric == "l1":
        return jnp.sum(jnp.abs(real_mean - syn_mean))
    return 1.0 - jnp.sum(real_mean * syn_mean) / (jnp.linalg.norm(real_mean) * jnp.linalg.norm(syn_mean) + 1e-6)


def _cutmix(key: jax.Array, x: jax.Array, prob: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """CutMix (Yun et al. 2019; IDC's ``mixup_net='cut'``, β = 1): with probability ``prob`` paste a box of a
    shuffled batch; returns (images, permutation, λ = kept area fraction)."""
    n, h, w = x.shape[:3]
    k_p, k_lam, k_perm, k_y, k_x = jax.random.split(key, 5)
    lam = jax.random.beta(k_lam, 1.0, 1.0)
    perm = jax.random.permutation(k_perm, n)
    cut = jnp.sqrt(1.0 - lam)
    ch, cw = (cut * h).astype(jnp.int32), (cut * w).astype(jnp.int32)
    cy, cx = jax.random.randint(k_y, (), 0, h), jax.random.randint(k_x, (), 0, w)
    y0, y1 = jnp.clip(cy - ch // 2, 0, h), jnp.clip(cy + ch // 2, 0, h)
    x0, x1 = jnp.clip(cx - cw // 2, 0, w), jnp.clip(cx + cw // 2, 0, w)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    apply = jax.random.uniform(k_p) < prob
    box = box & apply
    mixed = jnp.where(box[None, :, :, None], x[perm], x)
    lam = 1.0 - jnp.sum(box) / (h * w)
    return mixed, perm, lam


def _epoch_batches(key: jax.Array, n: int, steps: int, batch: int) -> tuple[jax.Array, jax.Array]:
    """One shuffled epoch as ``steps`` batches of ``batch`` indices and loss weights: slots past ``n`` (last batch
    only) wrap around with weight 0, so the loss is the mean over the short last batch (``drop_last=False``)."""
    perm = jax.random.permutation(key, n)
    pos = jnp.arange(steps * batch)
    return perm[pos % n].reshape(steps, batch), (pos < n).astype(jnp.float32).reshape(steps, batch)


def _sample_real_flat(key: jax.Array, real: RealPool, n: int) -> tuple[jax.Array, jax.Array]:
    """``n`` real images drawn uniformly (with replacement) from the whole pool, and their labels."""
    cum = jnp.cumsum(real.counts)
    u = jax.random.randint(key, (n,), 0, cum[-1])
    labels = jnp.searchsorted(cum, u, side="right").astype(jnp.int32)
    index = u - (cum[labels] - real.counts[labels])
    return real.images[labels, index], labels


def _batch_sharder(spec: MatchingSpec, mesh: Mesh | None) -> Callable[[jax.Array, int], jax.Array]:
    """``shard(x, axis)``: ``x`` constrained to be split over the mesh's ``data`` axis along ``axis`` (identity
    without a mesh or with one device). Checks the batch sizes eagerly (one-line ConfigError)."""
    if mesh is None or mesh.shape[DATA_AXIS] == 1:
        return lambda x, axis: x
    n = mesh.shape[DATA_AXIS]
    if spec.batch_real % n:
        raise ConfigError(f"batch_real={spec.batch_real} must be divisible by the {n} devices of the mesh (each "
                          f"device takes batch_real/{n} real images of every class); set batch_real to a multiple "
                          f"of {n}")
    if spec.net_source == "real" and spec.net_samples and spec.net_batch % n:
        raise ConfigError(f"net_batch={spec.net_batch} must be divisible by the {n} devices of the mesh; set the "
                          f"network-update batch to a multiple of {n}")

    def shard(x: jax.Array, axis: int) -> jax.Array:
        spec_axes = [None] * x.ndim
        spec_axes[axis] = DATA_AXIS
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*spec_axes)))
    return shard


def make_matching(spec: MatchingSpec, model: nn.Module, num_classes: int, image_shape: tuple[int, int, int],
                  mesh: Mesh | None = None) -> Algorithm:
    """The ``(init, step)`` pair of the engine (module doc) for ``spec``.

    ``mesh``: the real images of every round (each class's matching batch, and IDC/DREAM's network-update batch)
    are split over its ``data`` axis; the per-class gradients sum over that axis (XLA's all-reduce); the network,
    the synthetic set and the clustering stay replicated. ``batch_real`` (and ``net_batch`` when the network trains
    on real data) must be divisible by the number of devices."""
    spec.validate(image_shape)
    shard_batch = _batch_sharder(spec, mesh)
    image_shape = tuple(image_shape)
    K, ipc, f = num_classes, spec.ipc, spec.factor
    class_axis = spec.class_axis
    if class_axis == "auto":
        class_axis = "map" if jax.default_backend() == "cpu" else "vmap"
    unrolled = resolve_unroll(spec.unroll)

    def loop(name: str, body: Callable, carry, xs):
        """``lax.scan`` over ``xs``, fully unrolled when ``name`` is in ``unrolled`` (still one XLA program)."""
        return jax.lax.scan(body, carry, xs, unroll=True if name in unrolled else 1)
    tx_img = optax.sgd(spec.lr_img, momentum=spec.momentum or None)
    tx_net = optax.chain(optax.add_decayed_weights(spec.net_weight_decay),
                         optax.sgd(spec.net_lr, momentum=spec.net_momentum or None))
    n_syn_dec = K * spec.decoded_per_class
    if spec.net_source == "synthetic":
        net_batch = min(spec.net_batch, n_syn_dec)
        steps_per_epoch = math.ceil(n_syn_dec / net_batch)
        net_steps = spec.net_epochs * steps_per_epoch
    else:
        net_batch = spec.net_batch
        steps_per_epoch = 0
        net_steps = math.ceil(spec.net_samples / net_batch) if spec.net_samples else 0
    n_clusters = spec.batch_real // spec.subsample

    def over_classes(fn: Callable, *args):
        if class_axis == "vmap":
            return jax.vmap(fn)(*args)
        return loop("classes", lambda _, a: (None, fn(*a)), None, args)[1]

    def apply(params, rest, x, output="logits"):
        out, _ = models.apply_model(model, {"params": params, **rest}, x, train=True, output=output)
        return out

    def ce_and_embed(params, rest, x, label):
        feats = apply(params, rest, x, output="features")
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
            feats["logits"], jnp.full((x.shape[0],), label, jnp.int32)))
        return loss, jnp.mean(feats["embed"], axis=0)

    def class_grads(params, rest, x, label):
        grads, embed = jax.grad(ce_and_embed, has_aux=True)(params, rest, x, label)
        return grads, embed

    def siamese(keys, images):
        if not spec.match_strategy:
            return images
        return jax.vmap(lambda k, x: augment.dsa(k, x, spec.match_strategy, per_sample=False,
                                                  mode=spec.match_mode))(keys, images)

    def decode(stored):
        per_class = stored.reshape((K, ipc) + image_shape)
        return decode_zoom(per_class, f)  # (K, ipc f², H, W, C)

    def embed_pool(params, rest, images):
        """Embeddings of class-major images ``(K, N, ...)`` -> ``(K, N, D)``, in chunks (bounded memory)."""
        n = images.shape[1]
        chunk = min(n, 256)
        pad = (-n) % chunk
        padded = jnp.pad(images, [(0, 0), (0, pad)] + [(0, 0)] * 3)
        chunks = padded.reshape((K * (n + pad) // chunk, chunk) + image_shape)
        out = loop("embed", lambda _, x: (None, apply(params, rest, x, output="embed")), None, chunks)[1]
        return out.reshape(K, n + pad, -1)[:, :n]

    def cluster_pool(key, real: RealPool):
        """The images k-means sees per class ``(K, N, ...)`` with a validity mask ``(K, N)``."""
        if spec.cluster_pool and spec.cluster_pool < real.images.shape[1]:
            images = sample_per_class(key, real, spec.cluster_pool)
            return images, jnp.ones(images.shape[:2], bool)
        return real.images, jnp.arange(real.images.shape[1])[None, :] < real.counts[:, None]

    def representatives(key, params, rest, real: RealPool, k: int, per_center: int):
        """DREAM: per class, k-means (k clusters) on the network's embeddings; the ``per_center`` real samples
        nearest each centre, ``(K, k · per_center, H, W, C)``."""
        k_pool, k_km = jax.random.split(key)
        images, mask = cluster_pool(k_pool, real)
        feats = jax.lax.stop_gradient(embed_pool(params, rest, images))

        def one(kk, x, m):
            res = cluster.kmeans(kk, x, k, m, max_iter=spec.kmeans_iters)
            return cluster.nearest_indices(x, res.centers, per_center, m).reshape(-1)

        idx = jax.vmap(one)(jax.random.split(k_km, K), feats, mask)
        return jnp.take_along_axis(images, idx[:, :, None, None, None], axis=1)

    def initial_images(key, params, rest, real: RealPool) -> jax.Array:
        """Stored images at step 0 for ``syn_init`` 'mix' (random real) or 'kmeans' (representatives)."""
        n = spec.decoded_per_class
        if spec.syn_init == "kmeans":
            parts = representatives(key, params, rest, real, n, 1)
        else:
            parts = sample_per_class(key, real, n)
        return mosaic(parts, f).reshape((K * ipc,) + image_shape)

    def net_update(key, params, rest, net_opt, stored, real: RealPool):
        """One round's network training (module doc, step 3)."""
        if net_steps == 0:
            return params, net_opt
        if spec.net_source == "synthetic":
            syn = jax.lax.stop_gradient(decode(stored)).reshape((n_syn_dec,) + image_shape)
            syn_labels = jnp.repeat(jnp.arange(K, dtype=jnp.int32), spec.decoded_per_class)
            idx, weight = jax.vmap(lambda k: _epoch_batches(k, n_syn_dec, steps_per_epoch, net_batch))(
                jax.random.split(key, spec.net_epochs))
            idx, weight = idx.reshape(net_steps, net_batch), weight.reshape(net_steps, net_batch)
        else:
            idx = weight = jnp.zeros((net_steps, net_batch))  # placeholders: real batches are drawn per step

        def body(carry, inputs):
            params, net_opt = carry
            t, ix, wt = inputs
            kt = jax.random.fold_in(key, 10_000 + t)
            k_data, k_aug, k_mix = jax.random.split(kt, 3)
            if spec.net_source == "synthetic":
                x, y = syn[ix.astype(jnp.int32)], syn_labels[ix.astype(jnp.int32)]
                w = wt
            else:
                x, y = _sample_real_flat(k_data, real, net_batch)
                x = shard_batch(x, 0)
                w = jnp.ones((net_batch,), jnp.float32)
            if spec.net_strategy:
                x = augment.dsa(k_aug, x, spec.net_strategy, per_sample=True, mode=spec.net_mode)
            perm, lam = jnp.arange(x.shape[0]), jnp.float32(1.0)
            if spec.net_cutmix > 0:
                x, perm, lam = _cutmix(k_mix, x, spec.net_cutmix)

            def loss_fn(p):
                logits = apply(p, rest, x)
                ce_a = optax.softmax_cross_entropy_with_integer_labels(logits, y)
                ce_b = optax.softmax_cross_entropy_with_integer_labels(logits, y[perm])
                per = lam * ce_a + (1.0 - lam) * ce_b
                return jnp.sum(per * w) / jnp.sum(w)

            grads = jax.grad(loss_fn)(params)
            updates, net_opt = tx_net.update(grads, net_opt, params)
            return (optax.apply_updates(params, updates), net_opt), None

        (params, net_opt), _ = loop("net", body, (params, net_opt), (jnp.arange(net_steps), idx, weight))
        return params, net_opt

    def init(key: jax.Array, synthetic: SyntheticSet) -> DistillState:
        if synthetic.images.shape != (K * ipc,) + image_shape:
            raise ConfigError(f"synthetic images have shape {synthetic.images.shape}, expected "
                              f"{(K * ipc,) + image_shape} (num_classes*ipc, H, W, C)")
        stored = synthetic.images
        if f > 1:  # the optimised tensor is the stored set; images/labels are its decoded training set
            synthetic = synthetic.replace(extras={**synthetic.extras, "stored": stored})
            synthetic = _with_decoded(synthetic, stored)
        return DistillState(step=jnp.zeros((), jnp.int32), rng=key, synthetic=synthetic,
                            opt_state=tx_img.init(stored))

    def _with_decoded(synthetic: SyntheticSet, stored: jax.Array) -> SyntheticSet:
        if f == 1:
            return synthetic.replace(images=stored)
        images = decode(stored).reshape((n_syn_dec,) + image_shape)
        labels = jnp.repeat(jnp.arange(K, dtype=jnp.int32), spec.decoded_per_class)
        return synthetic.replace(images=images, labels=labels, extras={**synthetic.extras, "stored": stored})

    def step(state: DistillState, real: RealPool) -> tuple[DistillState, dict[str, jax.Array]]:
        rng, k_net, k_init, k_rounds = jax.random.split(state.rng, 4)
        variables = models.init_model(model, k_net, image_shape)
        params = variables["params"]
        rest = {k: v for k, v in variables.items() if k != "params"}
        stored = state.synthetic.extras["stored"] if f > 1 else state.synthetic.images
        if spec.syn_init != "given":
            stored = jax.lax.cond(state.step == 0, lambda: initial_images(k_init, params, rest, real),
                                  lambda: stored)
        net_opt = tx_net.init(params)
        rep0 = jnp.zeros((K, spec.batch_real) + image_shape, jnp.float32)

        def round_fn(carry, r):
            stored, img_opt, params, net_opt, rep = carry
            kr = jax.random.fold_in(k_rounds, r)
            k_real, k_aug, k_sub, k_net_up, k_clu = jax.random.split(kr, 5)
            if spec.representative:
                rep = jax.lax.cond(r % spec.interval == 0,
                                   lambda: representatives(k_clu, params, rest, real, n_clusters, spec.subsample),
                                   lambda: rep)
                real_batch = rep
            else:
                real_batch = sample_per_class(k_real, real, spec.batch_real)
            real_batch = shard_batch(real_batch, 1)
            aug_keys = jax.random.split(k_aug, K)
            real_aug = siamese(aug_keys, real_batch)
            labels = jnp.arange(K, dtype=jnp.int32)
            g_real, e_real = over_classes(lambda x, c: class_grads(params, rest, x, c), real_aug, labels)
            g_real, e_real = jax.lax.stop_gradient((g_real, e_real))
            sub = None
            if spec.syn_per_class < spec.decoded_per_class:
                sub = jax.vmap(lambda k: jax.random.permutation(k, spec.decoded_per_class)[:spec.syn_per_class])(
                    jax.random.split(k_sub, K))

            def loss_fn(stored):
                syn = decode(stored)
                if sub is not None:
                    syn = jnp.take_along_axis(syn, sub[:, :, None, None, None], axis=1)
                syn_aug = siamese(aug_keys, syn)

                def per_class(x, c, gr, er):
                    gs, es = class_grads(params, rest, x, c)
                    gterm = gradient_matching_distance(gr, gs, spec.metric, spec.layers)
                    fterm = feature_distance(er, es, spec.metric) if spec.feature_weight else jnp.zeros(())
                    return gterm, fterm

                gterms, fterms = over_classes(per_class, syn_aug, labels, g_real, e_real)
                gsum, fsum = jnp.sum(gterms), jnp.sum(fterms)
                return spec.grad_weight * gsum + spec.feature_weight * fsum, (gsum, fsum)

            (loss, (gsum, fsum)), grads = jax.value_and_grad(loss_fn, has_aux=True)(stored)
            updates, img_opt = tx_img.update(grads, img_opt, stored)
            stored = optax.apply_updates(stored, updates)
            params, net_opt = jax.lax.cond(
                r < spec.rounds - 1,
                lambda: net_update(k_net_up, params, rest, net_opt, stored, real),
                lambda: (params, net_opt))
            return (stored, img_opt, params, net_opt, rep), (loss, gsum, fsum, optax.tree.norm(grads))

        carry = (stored, state.opt_state, params, net_opt, rep0)
        (stored, img_opt, _, _, _), (losses, gsums, fsums, gnorms) = loop(
            "rounds", round_fn, carry, jnp.arange(spec.rounds))
        synthetic = _with_decoded(state.synthetic, stored)
        new_state = state.replace(step=state.step + 1, rng=rng, synthetic=synthetic, opt_state=img_opt)
        metrics = {"loss": jnp.mean(losses) / K, "grad_match": jnp.mean(gsums) / K,
                   "grad_norm": jnp.mean(gnorms)}
        if spec.feature_weight:
            metrics["feature_match"] = jnp.mean(fsums) / K
        return new_state, metrics

    return Algorithm(init, step)


def _optional(value):
    return None if value is None else int(value)


def default_config() -> ml_collections.ConfigDict:
    """DC hyper-parameters (``config.dc``), reference values (``DatasetCondensation/main.py``).

    ``outer_loop``/``inner_loop`` None: DC's schedule by IPC (:data:`DC_LOOPS`)."""
    return ml_collections.ConfigDict(dict(
        lr_img=0.1, momentum=0.5, batch_real=256, metric="layerwise_cos", layers="all",
        outer_loop=config_dict.placeholder(int), inner_loop=config_dict.placeholder(int),
        lr_net=0.01, batch_train=256, class_axis="auto", unroll="auto"))


def dsa_default_config() -> ml_collections.ConfigDict:
    """DSA hyper-parameters (``config.dsa``): DC's, plus siamese DSA in matching and in net training (the strategy
    is ``config.dsa_strategy``; mode "S" draws one op group per call, as the reference)."""
    return default_config()


def spec_from_dc_config(hp: ml_collections.ConfigDict, ipc: int, strategy: str, **overrides) -> MatchingSpec:
    """The engine spec of DC (``strategy=""``) or DSA (``strategy`` = the DSA strategy) from its section."""
    outer, inner = dc_loops(ipc, _optional(hp.outer_loop), _optional(hp.inner_loop))
    fields = dict(ipc=ipc, rounds=outer, lr_img=hp.lr_img, momentum=hp.momentum, batch_real=hp.batch_real,
                  metric=hp.metric, layers=hp.layers, match_strategy=strategy, net_source="synthetic",
                  net_epochs=inner, net_batch=hp.batch_train, net_lr=hp.lr_net, net_strategy=strategy,
                  class_axis=hp.class_axis, unroll=hp.get("unroll", "auto"))
    fields.update(overrides)
    return MatchingSpec(**fields)


def _strategy(config: ml_collections.ConfigDict) -> str:
    tokens = augment.parse_strategy(config.dsa_strategy)
    return config.dsa_strategy if tokens else ""


def make(config: ml_collections.ConfigDict, model: nn.Module, num_classes: int, image_shape: tuple[int, int, int],
         mesh: Mesh | None = None) -> Algorithm:
    """DC: gradient matching without augmentation. Reads ``config.dc`` and ``config.ipc``."""
    return make_matching(spec_from_dc_config(config.dc, config.ipc, ""), model, num_classes, image_shape, mesh)


def make_dsa(config: ml_collections.ConfigDict, model: nn.Module, num_classes: int,
             image_shape: tuple[int, int, int], mesh: Mesh | None = None) -> Algorithm:
    """DSA: DC with siamese differentiable augmentation ``config.dsa_strategy``. Reads ``config.dsa``."""
    return make_matching(spec_from_dc_config(config.dsa, config.ipc, _strategy(config)), model, num_classes,
                         image_shape, mesh)
