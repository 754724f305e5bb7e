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
   matching step (a gradient of a gradient), never through the rounds. ``image_step="per_class"`` instead takes
   the authors' K steps per round, one per class on that class's term (:func:`_per_class_steps`); with
   ``clamp_images`` the stored images are clipped to the real pixel range before the rounds;
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
of every round are split over its ``data`` axis (:func:`matching`).

**Parts.** A method is a :class:`MatchingParts` (like ``optax.adam = chain(scale_by_adam, scale_by_learning_rate)``);
:func:`matching` turns any into ``(init, step)``:

- real-batch sampler (:mod:`.samplers`): ``random_real`` (DC, DSA, IDC) or ``representatives`` (DREAM+);
- parameterisation: :func:`plain` (DC, DSA) or :func:`multi_formation` (IDC); initialiser at step 0:
  :func:`keep_given`, :func:`mix_real` (IDC) or :func:`kmeans_init` (DREAM+);
- matching terms, ``(name, weight, fn(real_c, syn_c))`` over :class:`ClassStats`: :func:`gradient_term`, and
  DREAM+'s :func:`feature_term`; the loss is ``Σ weight · Σ_c fn``, each term's mean over rounds a metric;
- network update between rounds: :func:`no_network_update`, :func:`synthetic_sgd` (DC, DSA) or
  :func:`real_data_sgd` (IDC);
- siamese augmentation, the image optimiser and how the loops run (:func:`loops`).

DC/DSA are :func:`dc_parts`, IDC ``idc.idc_parts``, DREAM+ ``dream.dream_parts`` (its base's parts with the
representative sampler, the feature term and the k-means initialiser swapped in).

Reference defaults (``DatasetCondensation/main.py``, ``utils.py:get_loops``): 1000 iterations, ``lr_img=0.1``
(SGD momentum 0.5), ``batch_real=256``, ``lr_net=0.01`` (SGD, no momentum), batch 256 on the synthetic set, metric
``'ours'`` (= ``layerwise_cos``), rounds/net epochs by IPC: 1→(1,1), 10→(10,50), 20→(20,25), 30→(30,20),
40→(40,15), 50→(50,10); other IPC need ``outer_loop``/``inner_loop`` set explicitly.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from jax.sharding import Mesh
from ml_collections import config_dict

from ddjax import augment, models
from ddjax.algorithms.base import (Algorithm, DistillState, RealPool, SyntheticSet, Term, apply_gradients,
                                   one_cpu, sample_per_class, siamese_dsa)
from ddjax.algorithms.multiformation import check_factor, decode_zoom, mosaic
from ddjax.algorithms.samplers import EmbedFn, RealSampler, embed_in_chunks, random_real, select_representatives
from ddjax.chunks import largest_divisor, sum_over_chunks
from ddjax.errors import ConfigError, check_choice
from ddjax.losses.gradient import check_gradient_metric, gradient_matching_distance
from ddjax.sharding import split_batch

#: DC's ``get_loops``: IPC -> (matching rounds per network, net-training epochs between rounds).
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
NET_SOURCES = ("synthetic", "real")
SYN_INITS = ("given", "mix", "kmeans")
CLASS_AXES = ("auto", "vmap", "map")
#: ``image_step``: one optimiser step per round on the loss summed over classes, or the authors' (IDC
#: ``condense.py``, DREAM ``condense_improve.py``) one step per class per round, classes in order, each class's
#: gradient taken after the previous classes' steps (:func:`matching_round`).
IMAGE_STEPS = ("summed", "per_class")
#: Loops that ``unroll`` can unroll (``lax.scan(..., unroll=True)``): the per-class loop of the matching loss
#: (``class_axis="map"``), the matching rounds, the network-update steps and the embedding chunks of DREAM's pool.
UNROLL_LOOPS = ("classes", "rounds", "net", "embed")
#: ``unroll="auto"``: the loops XLA:CPU gets unrolled; other backends unroll nothing. Empty: on the shared 2-core
#: box (2026-11-25, DC IPC 10, w64, 2 rounds x 10 net steps) no choice was reliably faster than rolled loops
#: (none 25-36 s, net 24 s, classes 43 s, classes_rounds 27 s, classes_rounds_net 22 s per step, load ~8), while
#: unrolling cost 1.5-3.3x compile time and unrolled classes 3.2x temp memory; docs/results.md has the rows.
CPU_UNROLL: tuple[str, ...] = ()
AUG_MODES = ("S", "M")

__all__ = ["CPU_UNROLL", "ClassStats", "DC_LOOPS", "GRAD_CHUNK", "IMAGE_STEPS", "Loops", "MIN_GRAD_CHUNK", "Matching",
           "MatchingParts", "MatchingSpec", "NetUpdate", "Parameterization", "UNROLL_LOOPS", "class_round_images",
           "class_stats", "class_stats_in_chunks", "dc_loops", "dc_parts", "decode", "default_config",
           "dsa_default_config", "dsa_strategy", "feature_distance", "feature_term", "gradient_term", "keep_given",
           "kmeans_init", "loops", "make", "make_dsa", "matching", "matching_init", "matching_round", "matching_step",
           "mix_real", "multi_formation", "network_sgd", "no_network_update", "per_sample_loops", "pixel_bounds",
           "plain", "real_data_sgd", "resolve_unroll", "round_images", "spec_from_dc_config", "stored_images",
           "synthetic_sgd", "to_stored", "with_stored"]


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
    feature_weight (bidirectional term; 0 = off). warmup_epochs: epochs of real-data training of every fresh
    network before its first clustering and round (IDC's ``--early``, DREAM+'s one epoch; net_source "real"
    only), in batches of batch_real. class_axis: "auto" | "vmap" | "map". unroll: which loops run unrolled
    (:func:`resolve_unroll`). image_step: "summed" (one image-optimiser step per round on the loss summed over
    classes) or "per_class" (the authors': :data:`IMAGE_STEPS`). clamp_images: before every outer iteration, clip
    the stored images to the real data's per-channel range (:func:`pixel_bounds`; the authors' [0, 1] clamp).
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
    warmup_epochs: int = 0
    class_axis: str = "auto"
    unroll: str = "auto"
    image_step: str = "summed"
    clamp_images: bool = False

    def validate(self) -> None:
        """Eager checks with one-line ConfigErrors (the factor against the image size: :func:`matching`)."""
        check_gradient_metric(self.metric, self.layers)
        for name in ("ipc", "rounds", "batch_real", "net_batch", "interval", "subsample", "kmeans_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("net_epochs", "net_samples", "batch_syn_max", "cluster_pool", "warmup_epochs"):
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
        check_choice("image_step", self.image_step, IMAGE_STEPS)
        resolve_unroll(self.unroll)
        check_choice("augmentation mode", self.match_mode, AUG_MODES)
        check_choice("augmentation mode", self.net_mode, AUG_MODES)
        augment.parse_strategy(self.match_strategy or "none")
        augment.parse_strategy(self.net_strategy or "none")
        if self.representative and self.batch_real % self.subsample:
            raise ConfigError(f"batch_real={self.batch_real} must be a multiple of subsample={self.subsample} "
                              "(batch_real // subsample clusters, subsample nearest samples each)")
        if self.feature_weight < 0 or self.grad_weight < 0:
            raise ConfigError("feature_weight and grad_weight must be >= 0")
        if self.warmup_epochs and self.net_source != "real":
            raise ConfigError("warmup_epochs trains the network on real data (IDC/DREAM+ with the IDC base); set it "
                              "to 0 for a network trained on the synthetic set")

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


# --------------------------------------------------------------------------------------------------- the parts


#: On one CPU device first-order batch gradients (each class's real statistics, the network's SGD steps: no
#: meta-gradient flows through them) are summed over chunks of at most this many images (``lax.scan``), so a
#: chunk's activations and their gradients stay in cache: one class's 256 images through ConvNet-3 w128 (28×28×1
#: or 32×32×3) alone take 0.92–1.02 s whole and 0.58–0.64 s in chunks of 8; DC's whole step (IPC 10, w128) 7–12 %
#: less time and 58 % less XLA temp memory, at IPC 50 13–15 % less time (docs/performance.md, "2026-12-07
#: evening"). Per-sample nets only: batch norm's statistics are the batch's.
GRAD_CHUNK = 8
#: Below this many images a chunk is not worth a loop step: the batch stays whole.
MIN_GRAD_CHUNK = 4


class Loops(NamedTuple):
    """How the engine's loops run: ``lax.scan`` fully unrolled for the loop names in ``unrolled``
    (:func:`resolve_unroll`), the per-class programs by ``vmap`` or ``lax.map`` (``class_axis``), and first-order
    batch gradients (each class's real statistics, the network's SGD steps) summed over chunks of at most
    ``chunk`` images (:meth:`sum_in_chunks`; 0: whole batches; None: :func:`matching` picks :data:`GRAD_CHUNK`
    on one CPU device, else 0)."""
    unrolled: frozenset
    class_axis: str  # "vmap" | "map"
    chunk: int | None = None

    def scan(self, name: str, body: Callable, carry: Any, xs: Any) -> tuple[Any, Any]:
        return jax.lax.scan(body, carry, xs, unroll=True if name in self.unrolled else 1)

    def sum_in_chunks(self, fn: Callable[[Any], Any], batch: Any) -> tuple[Any, int]:
        r"""``(Σ_j fn(batch_j), J)`` over ``J`` equal chunks of ``batch``'s leading axis (``n`` rows; a pytree),
        ``c = n / J`` the largest divisor of ``n`` up to ``chunk``, in a ``lax.scan``; ``(fn(batch), 1)`` when ``c``
        is below :data:`MIN_GRAD_CHUNK` or is ``n``. For a per-sample ``fn`` that sums (or means) over its rows,
        chunks change only the order of the additions:
        :math:`\sum_{i=1}^{n} f_i = \sum_j \sum_{i \in j} f_i`."""
        n = jax.tree.leaves(batch)[0].shape[0]
        c = largest_divisor(n, self.chunk or 0)
        if c < MIN_GRAD_CHUNK or c == n:
            return fn(batch), 1
        return sum_over_chunks(fn, batch, c), n // c

    def over_classes(self, fn: Callable, *args) -> Any:
        if self.class_axis == "vmap":
            return jax.vmap(fn)(*args)
        return self.scan("classes", lambda _, a: (None, fn(*a)), None, args)[1]


def loops(class_axis: str = "auto", unroll: str = "auto") -> Loops:
    """:class:`Loops` for the options (``class_axis="auto"``: ``map`` on CPU, ``vmap`` elsewhere)."""
    check_choice("class axis", class_axis, CLASS_AXES)
    if class_axis == "auto":
        class_axis = "map" if jax.default_backend() == "cpu" else "vmap"
    return Loops(resolve_unroll(unroll), class_axis)


class Parameterization(NamedTuple):
    """How stored images become training images: ``factor`` 1 is the images themselves (:func:`plain`), > 1 IDC's
    multi-formation (:func:`multi_formation`); ``batch_syn_max`` caps the decoded images per class in a round."""
    ipc: int                # stored images per class
    factor: int = 1
    batch_syn_max: int = 0  # 0: all

    @property
    def decoded_per_class(self) -> int:
        return self.ipc * self.factor ** 2


def plain(ipc: int) -> Parameterization:
    """The synthetic images are what is optimised (DC, DSA)."""
    return Parameterization(ipc)


def multi_formation(ipc: int, factor: int, batch_syn_max: int = 0) -> Parameterization:
    """IDC's multi-formation (:mod:`.multiformation`): every stored image decodes to ``factor²`` images."""
    return Parameterization(ipc, factor, batch_syn_max)


def decode(p: Parameterization, stored: jax.Array) -> jax.Array:
    """Stored images ``(K·ipc, H, W, C)`` -> decoded, class-major ``(K, ipc·factor², H, W, C)``."""
    return decode_zoom(stored.reshape((-1, p.ipc) + stored.shape[1:]), p.factor)


def round_images(p: Parameterization, key: jax.Array, stored: jax.Array) -> jax.Array:
    """The decoded images of one round: all, or ``batch_syn_max`` random ones per class."""
    syn = decode(p, stored)
    n = p.decoded_per_class
    if not p.batch_syn_max or p.batch_syn_max >= n:
        return syn
    sub = jax.vmap(lambda k: jax.random.permutation(k, n)[:p.batch_syn_max])(jax.random.split(key, syn.shape[0]))
    return jnp.take_along_axis(syn, sub[:, :, None, None, None], axis=1)


def stored_images(p: Parameterization, synthetic: SyntheticSet) -> jax.Array:
    """The optimised tensor: ``synthetic.extras["stored"]`` under multi-formation, else the images."""
    return synthetic.extras["stored"] if p.factor > 1 else synthetic.images


def with_stored(p: Parameterization, synthetic: SyntheticSet, stored: jax.Array) -> SyntheticSet:
    """``synthetic`` holding ``stored``; under multi-formation its images/labels are the decoded training set."""
    if p.factor == 1:
        return synthetic.replace(images=stored)
    decoded = decode(p, stored)
    labels = jnp.repeat(jnp.arange(decoded.shape[0], dtype=jnp.int32), decoded.shape[1])
    return synthetic.replace(images=decoded.reshape((-1,) + decoded.shape[2:]), labels=labels,
                             extras={**synthetic.extras, "stored": stored})


def to_stored(p: Parameterization, images: jax.Array) -> jax.Array:
    """Class-major real images ``(K, ipc·factor², ...)`` -> stored images ``(K·ipc, ...)`` (IDC's mosaic)."""
    return mosaic(images, p.factor).reshape((-1,) + images.shape[2:])


# Initialisers at step 0: ``(key, p, stored, embed, real) -> stored``; ``embed`` is the step's network's embedding.

def keep_given(key: jax.Array, p: Parameterization, stored: jax.Array, embed: EmbedFn, real: RealPool) -> jax.Array:
    """The set passed to ``init``."""
    del key, p, embed, real
    return stored


def mix_real(key: jax.Array, p: Parameterization, stored: jax.Array, embed: EmbedFn, real: RealPool) -> jax.Array:
    """IDC's ``init='mix'``: every stored image a mosaic of ``factor²`` random real images of its class."""
    del stored, embed
    return to_stored(p, sample_per_class(key, real, p.decoded_per_class))


def kmeans_init(pool: int, kmeans_iters: int) -> Callable[..., jax.Array]:
    """DREAM+'s initialisation: mosaics of the real images nearest the centres of ``ipc·factor²`` k-means clusters
    per class (:func:`~ddjax.algorithms.samplers.select_representatives`)."""
    def init(key, p, stored, embed, real):
        del stored
        chosen = select_representatives(key, embed, real, p.decoded_per_class, 1, pool=pool,
                                        kmeans_iters=kmeans_iters)
        return to_stored(p, chosen)
    return init


class ClassStats(NamedTuple):
    """One class's statistics under the round's network: the cross-entropy's parameter gradient and the mean
    embedding of the batch (from the same forward pass)."""
    grads: Any
    embed: jax.Array


def gradient_term(metric: str, layers: str = "all", weight: float = 1.0) -> Term:
    """``grad_match``: :func:`ddjax.losses.gradient_matching_distance` of the real and synthetic gradients."""
    check_gradient_metric(metric, layers)
    return Term("grad_match", weight, lambda real, syn: gradient_matching_distance(real.grads, syn.grads, metric,
                                                                                  layers))


def feature_term(metric: str, weight: float) -> Term:
    """``feature_match``: DREAM+'s bidirectional term, :func:`feature_distance` of the mean embeddings."""
    return Term("feature_match", weight, lambda real, syn: feature_distance(real.embed, syn.embed, metric))


class NetUpdate(NamedTuple):
    """The network's training between rounds: ``init(params) -> opt_state``;
    ``update(key, logits_fn, params, opt_state, syn, real, loops) -> (params, opt_state)`` with ``syn`` the decoded
    synthetic set ``(K, n, H, W, C)`` (no gradient) and ``logits_fn(params, x)``."""
    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


def no_network_update() -> NetUpdate:
    """The network stays at its initialisation for all rounds."""
    return NetUpdate(init=lambda params: optax.EmptyState(),
                     update=lambda key, logits_fn, params, opt_state, syn, real, loops: (params, opt_state))


def network_sgd(lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """The network's optimiser: SGD (momentum) with PyTorch-style weight decay (``wd · θ`` added to the gradient)."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(lr, momentum=momentum or None))


def _train_network(logits_fn: Callable, tx: optax.GradientTransformation, key: jax.Array, params: Any,
                   opt_state: Any, loops: Loops, xs: Any, draw: Callable, strategy: str, mode: str, cutmix: float):
    """SGD steps over ``xs`` (first leaf: the step numbers): ``draw(key, xs_t) -> (x, y, weights)``, per-sample DSA,
    CutMix with probability ``cutmix``, the weighted mean cross-entropy."""
    def body(carry, inputs):
        params, opt_state = carry
        k_data, k_aug, k_mix = jax.random.split(jax.random.fold_in(key, 10_000 + inputs[0]), 3)
        x, y, w = draw(k_data, inputs)
        if strategy:
            x = augment.dsa(k_aug, x, strategy, per_sample=True, mode=mode)
        perm, lam = jnp.arange(x.shape[0]), jnp.float32(1.0)
        if cutmix > 0:
            x, perm, lam = augment.cutmix(k_mix, x, cutmix)  # IDC's rand_bbox

        def weighted_ce_sum(p, rows):   # Σ_i w_i (λ CE(x_i, y_i) + (1 - λ) CE(x_i, y_perm(i)))
            xc, ya, yb, wc = rows
            logits = logits_fn(p, xc)
            ce_a = optax.softmax_cross_entropy_with_integer_labels(logits, ya)
            ce_b = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
            return jnp.sum((lam * ce_a + (1.0 - lam) * ce_b) * wc)

        # ∇ of the weighted mean: per-sample terms summed over cache-sized chunks (Loops.sum_in_chunks)
        grads, _ = loops.sum_in_chunks(lambda rows: jax.grad(weighted_ce_sum)(params, rows), (x, y, y[perm], w))
        grads = jax.tree.map(lambda g: g / jnp.sum(w), grads)
        return apply_gradients(tx, grads, opt_state, params), None

    return loops.scan("net", body, (params, opt_state), xs)[0]


def synthetic_sgd(epochs: int, batch: int, tx: optax.GradientTransformation, *, strategy: str = "",
                  mode: str = "S", cutmix: float = 0.0) -> NetUpdate:
    """DC/DSA: ``epochs`` epochs of SGD on the (decoded) synthetic set in shuffled batches of ``batch`` (the last one
    short, as ``drop_last=False``), per-sample DSA ``strategy``."""
    if epochs == 0:
        return no_network_update()

    def update(key, logits_fn, params, opt_state, syn, real, loops):
        del real
        per_class = syn.shape[1]
        n = syn.shape[0] * per_class
        flat = jax.lax.stop_gradient(syn).reshape((n,) + syn.shape[2:])
        labels = jnp.repeat(jnp.arange(syn.shape[0], dtype=jnp.int32), per_class)
        b = min(batch, n)
        steps_per_epoch = math.ceil(n / b)
        idx, weight = jax.vmap(lambda k: _epoch_batches(k, n, steps_per_epoch, b))(jax.random.split(key, epochs))
        xs = (jnp.arange(epochs * steps_per_epoch), idx.reshape(-1, b), weight.reshape(-1, b))
        return _train_network(logits_fn, tx, key, params, opt_state, loops, xs,
                              lambda k, t: (flat[t[1]], labels[t[1]], t[2]), strategy, mode, cutmix)

    return NetUpdate(init=tx.init, update=update)


def real_data_sgd(samples: int, batch: int, tx: optax.GradientTransformation, *, strategy: str = "",
                  mode: str = "S", cutmix: float = 0.0, mesh: Mesh | None = None) -> NetUpdate:
    """IDC: ``⌈samples / batch⌉`` SGD steps on real images drawn uniformly from the pool (with replacement), each
    batch split over the mesh's ``data`` axis, per-sample DSA and CutMix."""
    if not samples:
        return no_network_update()
    split = split_batch(mesh, batch, f"net_batch={batch}")

    def draw(key, real):
        x, y = _sample_real_flat(key, real, batch)
        return split(x), y, jnp.ones((batch,), jnp.float32)

    def update(key, logits_fn, params, opt_state, syn, real, loops):
        del syn
        return _train_network(logits_fn, tx, key, params, opt_state, loops, (jnp.arange(math.ceil(samples / batch)),),
                              lambda k, t: draw(k, real), strategy, mode, cutmix)

    return NetUpdate(init=tx.init, update=update)


def real_data_warmup(epochs: int, batch: int, tx: optax.GradientTransformation, *, strategy: str = "",
                     mode: str = "S", cutmix: float = 0.0, mesh: Mesh | None = None) -> NetUpdate:
    """DREAM+'s warm-up (``condense_improve.py``: ``train_epoch(loader_real, ...)`` on every new network; IDC's
    ``--early``): ``epochs`` epochs' worth of :func:`real_data_sgd` steps, ``⌊K·M / batch⌋`` per epoch for a pool of
    ``K`` classes of at most ``M`` images (the authors' ``drop_last`` loader; exact for balanced classes), drawn with
    replacement like the network update. Shares the network update's optimiser ``tx`` (one optimiser per network,
    as the reference)."""
    if not epochs:
        return no_network_update()

    def update(key, logits_fn, params, opt_state, syn, real, loops):
        steps = epochs * (real.images.shape[0] * real.images.shape[1] // batch)
        sgd = real_data_sgd(steps * batch, batch, tx, strategy=strategy, mode=mode, cutmix=cutmix, mesh=mesh)
        return sgd.update(key, logits_fn, params, opt_state, syn, real, loops)

    return NetUpdate(init=tx.init, update=update)


# --------------------------------------------------------------------------------------------- the composition


class MatchingParts(NamedTuple):
    """A gradient-matching algorithm as parts (module doc); DC, DSA, IDC and DREAM+ differ only here."""
    rounds: int                       # matching rounds per fresh network
    sampler: RealSampler              # the real batch of every class and round
    images: Parameterization          # plain or multi-formation
    initial: Callable[..., jax.Array]  # stored images at step 0: keep_given, mix_real, kmeans_init(...)
    augment: Callable[[jax.Array, jax.Array], jax.Array]  # siamese, (class keys, images) -> images
    terms: tuple[Term, ...]           # Σ weight · Σ_c fn(real_c, syn_c)
    net_update: NetUpdate             # between rounds
    tx: optax.GradientTransformation  # on the stored images
    loops: Loops
    warmup: NetUpdate = no_network_update()  # each fresh network before its first clustering (same optimiser)
    image_step: str = "summed"        # IMAGE_STEPS: one tx step per round, or one per class (the authors')
    clamp: bool = False               # clip the stored images to the real data's range before every step


class Matching(NamedTuple):
    parts: MatchingParts
    model: nn.Module
    num_classes: int
    image_shape: tuple[int, int, int]
    split: Callable[[jax.Array], jax.Array]  # the real batch (K, B, ...) split over the mesh along B


def matching(parts: MatchingParts, model: nn.Module, num_classes: int, image_shape: tuple[int, int, int],
             mesh: Mesh | None = None) -> Algorithm:
    """The ``(init, step)`` pair of ``parts``. ``mesh``: the real images of every round are split over its ``data``
    axis (each class's matching batch here, the network-update batch in :func:`real_data_sgd`); the per-class
    gradients sum over that axis (XLA's all-reduce); network, synthetic set and clustering stay replicated."""
    check_factor(parts.images.factor, image_shape)
    split = split_batch(mesh, parts.sampler.batch, f"batch_real={parts.sampler.batch}", axis=1)
    if parts.loops.chunk is None:   # cache-sized chunks of first-order batch gradients (Loops.sum_in_chunks)
        parts = parts._replace(loops=parts.loops._replace(chunk=GRAD_CHUNK if one_cpu(mesh) else 0))
    m = Matching(parts, model, num_classes, tuple(image_shape), split)
    return Algorithm(functools.partial(matching_init, m), functools.partial(matching_step, m))


def matching_init(m: Matching, key: jax.Array, synthetic: SyntheticSet) -> DistillState:
    expected = (m.num_classes * m.parts.images.ipc,) + m.image_shape
    if synthetic.images.shape != expected:
        raise ConfigError(f"synthetic images have shape {synthetic.images.shape}, expected {expected} "
                          "(num_classes*ipc, H, W, C)")
    stored = synthetic.images
    return DistillState(step=jnp.zeros((), jnp.int32), rng=key,
                        synthetic=with_stored(m.parts.images, synthetic, stored), opt_state=m.parts.tx.init(stored))


def _logits(model: nn.Module, rest: dict, params: Any, x: jax.Array, output: str = "logits") -> Any:
    return models.apply_model(model, {"params": params, **rest}, x, train=True, output=output)[0]


def class_stats(model: nn.Module, rest: dict, params: Any, x: jax.Array, label: jax.Array) -> ClassStats:
    """∇_θ of the mean cross-entropy of ``x`` (all of class ``label``) and the batch's mean embedding."""
    def ce_and_embed(p):
        feats = _logits(model, rest, p, x, output="features")
        ce = optax.softmax_cross_entropy_with_integer_labels(feats["logits"], jnp.full((x.shape[0],), label, jnp.int32))
        return jnp.mean(ce), jnp.mean(feats["embed"], axis=0)

    grads, embed = jax.grad(ce_and_embed, has_aux=True)(params)
    return ClassStats(grads, embed)


def class_stats_in_chunks(model: nn.Module, rest: dict, params: Any, x: jax.Array, label: jax.Array,
                          loops: Loops) -> ClassStats:
    r""":func:`class_stats` of ``x`` (``n`` images) as the mean over ``loops``' ``J`` equal chunks
    (:meth:`Loops.sum_in_chunks`): the mean cross-entropy and mean embedding of the batch are the means of the
    chunks' means, so for a per-sample network

    .. math:: \nabla_\theta \tfrac1n \textstyle\sum_i \ell_i = \tfrac1J \sum_j \nabla_\theta \tfrac1c \sum_{i \in j} \ell_i .

    The whole batch at once when ``rest`` holds batch-norm statistics (:func:`per_sample_loops`)."""
    total, chunks = per_sample_loops(loops, rest).sum_in_chunks(
        lambda xc: class_stats(model, rest, params, xc, label), x)
    return jax.tree.map(lambda a: a / chunks, total)


def per_sample_loops(loops: Loops, rest: dict) -> Loops:
    """``loops`` without gradient chunks when the network's variables ``rest`` hold batch-norm statistics: a
    chunk's batch statistics are not the batch's, so only a per-sample network's gradients sum over chunks."""
    return loops._replace(chunk=0) if "batch_stats" in rest else loops


def _embedder(m: Matching, rest: dict, params: Any) -> EmbedFn:
    return lambda images: embed_in_chunks(lambda x: _logits(m.model, rest, params, x, output="embed"), images,
                                          unroll="embed" in m.parts.loops.unrolled)


def matching_round(m: Matching, rest: dict, real: RealPool, k_rounds: jax.Array, carry: tuple, r: jax.Array):
    """Round ``r`` (module doc, 1-3): sample, match (one optimiser step on the stored images), train the network."""
    p = m.parts
    stored, img_opt, params, net_opt, sampler_carry = carry
    # the fifth key was DREAM+'s clustering key before the sampler took the sampling key; kept so the other draws
    # stay as they were
    k_sample, k_aug, k_sub, k_net, _ = jax.random.split(jax.random.fold_in(k_rounds, r), 5)
    real_batch, sampler_carry = p.sampler.sample(k_sample, sampler_carry, r, _embedder(m, rest, params), real)
    aug_keys = jax.random.split(k_aug, m.num_classes)
    labels = jnp.arange(m.num_classes, dtype=jnp.int32)
    stats = functools.partial(class_stats, m.model, rest, params)
    real_class_stats = functools.partial(class_stats_in_chunks, m.model, rest, params, loops=p.loops)
    real_stats = jax.lax.stop_gradient(
        p.loops.over_classes(real_class_stats, p.augment(aug_keys, m.split(real_batch)), labels))

    def loss_fn(stored):
        syn = p.augment(aug_keys, round_images(p.images, k_sub, stored))
        per_class = p.loops.over_classes(
            lambda x, c, rs: tuple(fn(rs, stats(x, c)) for _, _, fn in p.terms), syn, labels, real_stats)
        sums = tuple(jnp.sum(v) for v in per_class)
        return sum(weight * s for (_, weight, _), s in zip(p.terms, sums)), sums

    if p.image_step == "per_class":
        stored, img_opt, loss, sums, grad_norm = _per_class_steps(m, stats, real_stats, aug_keys, k_sub, stored,
                                                                  img_opt)
    else:
        (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(stored)
        stored, img_opt = apply_gradients(p.tx, grads, img_opt, stored)
        grad_norm = optax.tree.norm(grads)
    params, net_opt = jax.lax.cond(
        r < p.rounds - 1,  # after the last round the network is discarded
        lambda: p.net_update.update(k_net, functools.partial(_logits, m.model, rest), params, net_opt,
                                    decode(p.images, stored), real, per_sample_loops(p.loops, rest)),
        lambda: (params, net_opt))
    return (stored, img_opt, params, net_opt, sampler_carry), (loss, sums, grad_norm)


def class_round_images(p: Parameterization, key: jax.Array, stored: jax.Array, c: jax.Array,
                       num_classes: int) -> jax.Array:
    """``round_images(p, key, stored)[c:c + 1]`` for a (traced) class ``c``, decoding only that class's rows."""
    rows = jax.lax.dynamic_slice_in_dim(stored, c * p.ipc, p.ipc, axis=0)
    syn = decode_zoom(rows[None], p.factor)
    n = p.decoded_per_class
    if not p.batch_syn_max or p.batch_syn_max >= n:
        return syn
    sub = jax.random.permutation(jax.random.split(key, num_classes)[c], n)[:p.batch_syn_max]
    return syn[:, sub]


def _per_class_steps(m: Matching, stats: Callable, real_stats: ClassStats, aug_keys: jax.Array, k_sub: jax.Array,
                     stored: jax.Array, img_opt: Any):
    r"""The authors' image update (``for c in range(nclass): ... optim_img.zero_grad(); loss.backward();
    optim_img.step()``): ``K`` optimiser steps per round, class ``c``'s step on the gradient of its own loss
    ``L_c`` (zero on the other classes' rows) taken at the images left by steps ``0..c-1``. One optimiser state
    for the whole tensor, so with momentum every class keeps moving at every other class's step.

    .. math:: x^{(c+1)} = x^{(c)} + \mathrm{tx}\big(\nabla L_c(x^{(c)})\big), \quad c = 0, \dots, K-1
    """
    p = m.parts

    def body(carry, c):
        stored, img_opt = carry
        rs = jax.tree.map(lambda a: a[c], real_stats)

        def loss_c(stored):
            syn = p.augment(aug_keys[c][None], class_round_images(p.images, k_sub, stored, c, m.num_classes))[0]
            st = stats(syn, c)
            values = tuple(fn(rs, st) for _, _, fn in p.terms)
            return sum(weight * v for (_, weight, _), v in zip(p.terms, values)), values

        (loss, values), grads = jax.value_and_grad(loss_c, has_aux=True)(stored)
        stored, img_opt = apply_gradients(p.tx, grads, img_opt, stored)
        return (stored, img_opt), (loss, values, jnp.sum(jnp.square(grads)))

    (stored, img_opt), (losses, values, sq) = p.loops.scan("classes", body, (stored, img_opt),
                                                           jnp.arange(m.num_classes))
    return stored, img_opt, jnp.sum(losses), tuple(jnp.sum(v) for v in values), jnp.sqrt(jnp.sum(sq))


def pixel_bounds(real: RealPool) -> tuple[jax.Array, jax.Array]:
    """Per-channel ``(min, max)`` of the real pool ``(C,)``: the normalised values of pixels 0 and 1 for a data
    set whose pixels reach both (Fashion-MNIST, the digits, CIFAR), so clipping to them is the authors'
    ``torch.clamp(synset.data, 0, 1)`` in pixel space. The pool's padding rows are 0 (the channel mean), which
    lies inside the range."""
    axes = tuple(range(real.images.ndim - 1))
    return jnp.min(real.images, axis=axes), jnp.max(real.images, axis=axes)


def matching_step(m: Matching, state: DistillState, real: RealPool) -> tuple[DistillState, dict[str, jax.Array]]:
    """One outer iteration: a fresh network and ``rounds`` matching rounds on it (module doc)."""
    p = m.parts
    rng, k_net, k_init, k_rounds = jax.random.split(state.rng, 4)
    variables = models.init_model(m.model, k_net, m.image_shape)
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}
    # DREAM+: the new network trains on real data first, so the k-means init and clustering see trained features
    # (its own key, folded from k_net, keeps every other draw as it was without a warm-up)
    params, net_opt = p.warmup.update(jax.random.fold_in(k_net, 1), functools.partial(_logits, m.model, rest),
                                      params, p.net_update.init(params), None, real, per_sample_loops(p.loops, rest))
    stored = stored_images(p.images, state.synthetic)
    stored = jax.lax.cond(state.step == 0,
                          lambda: p.initial(k_init, p.images, stored, _embedder(m, rest, params), real),
                          lambda: stored)
    if p.clamp:  # the authors: synset.data.data = torch.clamp(synset.data.data, 0, 1) before the inner loop
        low, high = pixel_bounds(real)
        stored = jnp.clip(stored, low, high)
    carry = (stored, state.opt_state, params, net_opt, p.sampler.init(m.num_classes, m.image_shape))
    (stored, img_opt, *_), (losses, sums, grad_norms) = p.loops.scan(
        "rounds", functools.partial(matching_round, m, rest, real, k_rounds), carry, jnp.arange(p.rounds))
    new_state = state.replace(step=state.step + 1, rng=rng, synthetic=with_stored(p.images, state.synthetic, stored),
                              opt_state=img_opt)
    metrics = {"loss": jnp.mean(losses) / m.num_classes, "grad_norm": jnp.mean(grad_norms)}
    metrics.update({name: jnp.mean(s) / m.num_classes for (name, _, _), s in zip(p.terms, sums)})
    return new_state, metrics


def dc_parts(spec: MatchingSpec) -> MatchingParts:
    """DC (``match_strategy=""``) and DSA: random real batches, the images themselves, the gradient distance, and
    ``net_epochs`` epochs of SGD on the synthetic set between rounds."""
    spec.validate()
    return MatchingParts(
        rounds=spec.rounds, sampler=random_real(spec.batch_real), images=plain(spec.ipc), initial=keep_given,
        augment=functools.partial(siamese_dsa, strategy=spec.match_strategy, mode=spec.match_mode),
        terms=(gradient_term(spec.metric, spec.layers, spec.grad_weight),),
        net_update=synthetic_sgd(spec.net_epochs, spec.net_batch, network_sgd(spec.net_lr, spec.net_momentum,
                                                                              spec.net_weight_decay),
                                 strategy=spec.net_strategy, mode=spec.net_mode, cutmix=spec.net_cutmix),
        tx=optax.sgd(spec.lr_img, momentum=spec.momentum or None), loops=loops(spec.class_axis, spec.unroll))


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


def dsa_strategy(config: ml_collections.ConfigDict) -> str:
    """``config.dsa_strategy``, or "" when it has no op."""
    return config.dsa_strategy if augment.parse_strategy(config.dsa_strategy) else ""


def make(config: ml_collections.ConfigDict, model: nn.Module, num_classes: int, image_shape: tuple[int, int, int],
         mesh: Mesh | None = None) -> Algorithm:
    """DC: gradient matching without augmentation. Reads ``config.dc`` and ``config.ipc``."""
    return matching(dc_parts(spec_from_dc_config(config.dc, config.ipc, "")), model, num_classes, image_shape, mesh)


def make_dsa(config: ml_collections.ConfigDict, model: nn.Module, num_classes: int,
             image_shape: tuple[int, int, int], mesh: Mesh | None = None) -> Algorithm:
    """DSA: DC with siamese differentiable augmentation ``config.dsa_strategy``. Reads ``config.dsa``."""
    return matching(dc_parts(spec_from_dc_config(config.dsa, config.ipc, dsa_strategy(config))), model, num_classes,
                    image_shape, mesh)
