r"""The distribution-matching family on one step: DM, M3D, and IID on top of either.

Every step samples a fresh, randomly initialised network ``f`` (never trained), draws ``batch_real`` real images per
class, applies the SAME DSA transform to class ``c``'s real and synthetic images (siamese; one key per class), and
moves the synthetic images down the gradient of

.. math:: \mathcal L = \mathcal L_{base} + \lambda_{CC}\,\mathcal L_{CC} + \lambda_{CM}\,\mathcal L_{CM}

with SGD + momentum on the images (``optax.sgd``), where

- ``base="dm"``: :math:`\sum_c \|\bar f(R_c) - \bar f(S_c)\|^2` (Zhao & Bilen, ``main_DM.py``);
- ``base="m3d"``: :math:`\sum_c \mathrm{MMD}^2_k(f(R_c), f(S_c))`, ``k`` a sum of Gaussian kernels (M3D, Zhang et
  al. AAAI'24; :func:`ddjax.losses.gaussian_mmd`);
- IID (Deng et al. CVPR'24, eq. 8) adds covariance matching :math:`\mathcal L_{CM}` of ``f``'s local feature maps
  (:func:`ddjax.losses.covariance_matching`) and class centralization :math:`\mathcal L_{CC}` of a pretrained
  teacher's embeddings of the augmented synthetic images (:func:`ddjax.losses.class_centralization`), one teacher
  drawn per step from the pool the ``prepare`` hook supplies.

Each summand is a :class:`~ddjax.algorithms.base.Term` ``(name, weight, fn)`` (:func:`mean_embedding_term`,
:func:`mmd_term`, :func:`covariance_term`, :func:`centralization_term`) and the step sums a tuple of them
(:func:`weighted_sum`), reporting each by name; a term that is off is not in the tuple, so plain DM/M3D never compute
IID's. A member is :func:`distribution_matching` with its terms, features, real-batch sampler and data layout, and
optionally two more parts IDM needs (Zhao et al. CVPR'23): where each step's network comes from (:class:`Networks`;
default :func:`fresh_networks`, a new random one per step; IDM: a queue of networks trained on real data, kept in
the state) and how the stored images become the matched ones (a
:class:`~ddjax.algorithms.gradient_matching.Parameterization`; IDM: partitioning, i.e. multi-formation).

All classes are one batched program (real batch ``(K, B, H, W, C)``); with a mesh its ``B`` axis is sharded over
``data`` and XLA reduces the per-class statistics across devices.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from jax.sharding import Mesh

from ddjax import augment, losses, models, teachers
from ddjax.algorithms.base import (Algorithm, DistillState, RealPool, SyntheticSet, Term, apply_gradients,
                                  one_cpu, siamese_dsa)
from ddjax.algorithms.gradient_matching import Parameterization, decode, plain, stored_images, with_stored
from ddjax.algorithms.multiformation import check_factor
from ddjax.algorithms.samplers import RealSampler, random_real
from ddjax.chunks import largest_divisor
from ddjax.errors import ConfigError, check_choice
from ddjax.sharding import flat_batch_splitter, split_batch

__all__ = ["BASE_NAMES", "BANDWIDTH_NAMES", "COV_BLOCKS", "Family", "FamilyExtras", "Features", "Networks",
           "TermInputs", "base_term", "centralization_term", "check_common", "covariance_term",
           "distribution_matching", "embed_fn", "embedding_and_maps", "embeddings", "embeddings_and_logits",
           "family_init", "family_step", "fresh_networks", "kernel_loss", "mean_embedding_term", "mmd_term",
           "weighted_sum"]

BASE_NAMES = ("dm", "m3d")
BANDWIDTH_NAMES = ("median", "fixed")
COV_BLOCKS = ("last", "all")


def embed_fn(model: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
    """Embeddings (features before the head) of a batch. Batch-norm nets use the batch's own statistics, as the
    reference does for a freshly initialised network in train mode."""
    out, _ = models.apply_model(model, variables, images, train=True, output="embed")
    return out


def check_common(hp: ml_collections.ConfigDict, section: str, strategy: str, mesh: Mesh | None) -> None:
    """Validate the fields every family member shares (``lr_img``, ``momentum``, ``batch_real``, DSA, mesh)."""
    if hp.batch_real < 1:
        raise ConfigError(f"{section}.batch_real must be >= 1, got {hp.batch_real}")
    if hp.lr_img <= 0:
        raise ConfigError(f"{section}.lr_img must be > 0, got {hp.lr_img}")
    if not 0 <= hp.momentum < 1:
        raise ConfigError(f"{section}.momentum must be in [0, 1), got {hp.momentum}")
    augment.parse_strategy(strategy)  # validates eagerly, before tracing
    split_batch(mesh, hp.batch_real, f"{section}.batch_real={hp.batch_real}")  # the policy's check, first


def kernel_loss(hp: ml_collections.ConfigDict, section: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """M3D's per-class loss from ``hp.bandwidth`` / ``hp.sigmas`` / ``hp.unbiased`` (validated here).

    ``bandwidth="median"``: σ = ``sigmas`` × the median heuristic of the class's pooled real+synthetic embeddings
    (:func:`ddjax.losses.median_bandwidth`); ``"fixed"``: σ = ``sigmas`` as given.
    """
    check_choice(f"{section}.bandwidth", hp.bandwidth, BANDWIDTH_NAMES)
    scales = tuple(float(s) for s in hp.sigmas)
    if not scales or any(not s > 0 for s in scales):
        raise ConfigError(f"{section}.sigmas must be a non-empty tuple of positive bandwidths, got {hp.sigmas}; "
                          f"e.g. --config.{section}.sigmas='(0.5, 1.0, 2.0)'")
    unbiased = bool(hp.unbiased)
    scales_arr = jnp.asarray(scales, jnp.float32)

    def loss(real: jax.Array, syn: jax.Array) -> jax.Array:
        if hp.bandwidth == "median":
            sigmas = losses.median_bandwidth(real, syn)[:, None] * scales_arr  # (K, S), per class
        else:
            sigmas = scales
        return losses.gaussian_mmd_per_class(real, syn, sigmas, unbiased=unbiased)

    return loss


class Features(NamedTuple):
    """What the terms see of one class-major batch: ``embed`` ``(K, n, D)``; ``maps``: local feature maps
    ``(K, n, h, w, C)`` per matched block (empty unless a term needs them); ``logits`` ``(K, n, classes)`` (None
    unless a term needs them: IDM's class-aware regularisation)."""
    embed: jax.Array
    maps: tuple
    logits: jax.Array | None = None


class TermInputs(NamedTuple):
    """A term's arguments: the real batch's features (no gradient), the synthetic set's, the augmented synthetic
    images ``(K, n, H, W, C)`` (``n`` = ipc, or ``factor² · ipc`` decoded images under partitioning), the step's
    data, the step's key (``state.rng``) and what :class:`Networks` ``draw`` said about the step's network
    (``{}`` for a fresh one; IDM: its training accuracy)."""
    real: Features
    syn: Features
    syn_images: jax.Array
    data: Any
    key: jax.Array
    network: Any = None


class Networks(NamedTuple):
    """Where each step's feature extractor comes from, as a part with its own state (kept in ``state.extras``).

    ``init(key) -> carry`` (None: no state); ``draw(key, carry, step) -> (carry, variables, info)``: the step's
    network and a dict the terms see as ``TermInputs.network``; ``update(key, carry, step, real) -> (carry, metrics)``
    after the image step (IDM trains queue members on real data here)."""
    init: Callable[[jax.Array], Any] | None
    draw: Callable[..., tuple[Any, Any, dict]]
    update: Callable[..., tuple[Any, dict]]


def fresh_networks(model: nn.Module, image_shape: tuple[int, int, int]) -> Networks:
    """DM's: a new randomly initialised network every step, never trained (no state)."""
    return Networks(init=None,
                    draw=lambda key, carry, step: (carry, models.init_model(model, key, tuple(image_shape)), {}),
                    update=lambda key, carry, step, real: (carry, {}))


class FamilyExtras(NamedTuple):
    """``state.extras`` of a member whose :class:`Networks` keep state: the sampler's carry and the networks'.
    (Members without, DM/M3D/IID, keep the sampler's carry alone, the layout of their existing checkpoints.)"""
    sampler: Any
    networks: Any


def weighted_sum(terms: tuple[Term, ...], inputs: TermInputs) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``Σ weight · fn(inputs)`` and ``{name: value}``; a term's ``fn`` returns its value summed over classes, or
    ``(value, extra metrics)``."""
    total, metrics = 0.0, {}
    for name, weight, fn in terms:
        value = fn(inputs)
        if isinstance(value, tuple):
            value, extra = value
            metrics.update(extra)
        metrics[name] = value
        total = total + weight * value
    return total, metrics


def mean_embedding_term(weight: float = 1.0) -> Term:
    r"""DM: :math:`\sum_c \|\bar f(R_c) - \bar f(S_c)\|^2` (``loss_base``)."""
    return Term("loss_base", weight, lambda x: losses.mean_embedding_distance_per_class(x.real.embed, x.syn.embed))


def mmd_term(hp: ml_collections.ConfigDict, section: str, ipc: int, weight: float = 1.0) -> Term:
    r"""M3D: :math:`\sum_c \mathrm{MMD}^2_k(f(R_c), f(S_c))` (``loss_base``; :func:`kernel_loss`)."""
    if hp.unbiased and ipc < 2:
        raise ConfigError(f"{section}.unbiased=True needs ipc >= 2 (the U-statistic drops each sample's pair with "
                          f"itself); set --config.{section}.unbiased=False at ipc {ipc}")
    loss = kernel_loss(hp, section)
    return Term("loss_base", weight, lambda x: loss(x.real.embed, x.syn.embed))


def base_term(base: str, hp: ml_collections.ConfigDict, section: str, ipc: int) -> Term:
    """The base of the family by name: ``"dm"`` (:func:`mean_embedding_term`) or ``"m3d"`` (:func:`mmd_term`)."""
    check_choice(f"{section} base", base, BASE_NAMES)
    return mean_embedding_term() if base == "dm" else mmd_term(hp, section, ipc)


def covariance_term(weight: float) -> Term:
    r"""IID's :math:`\mathcal L_{CM}` (eqs. 5-7): covariance matching of the local feature maps, summed over the
    matched blocks (``loss_cm``; needs :func:`embedding_and_maps`)."""
    return Term("loss_cm", weight, lambda x: sum(losses.covariance_matching_per_class(r, s)
                                                 for r, s in zip(x.real.maps, x.syn.maps)))


def centralization_term(teacher: nn.Module, weight: float, alpha: float, beta: float, form: str) -> Term:
    r"""IID's :math:`\mathcal L_{CC}` (eq. 3, :func:`ddjax.losses.class_centralization` with ``alpha``, ``beta``,
    ``form``) of a ``teacher`` network drawn from ``data["teachers"]`` with ``fold_in(key, 1)`` (``loss_cc``; also
    reports the drawn ``teacher``'s index)."""
    def fn(x: TermInputs):
        variables, index = teachers.sample_teacher(jax.random.fold_in(x.key, 1), x.data["teachers"])
        k, n = x.syn_images.shape[:2]
        emb = teachers.teacher_embed(teacher, variables, x.syn_images.reshape((k * n,) + x.syn_images.shape[2:]))
        value = losses.class_centralization_per_class(emb.reshape(k, n, -1), alpha, beta, form)
        return value, {"teacher": index.astype(jnp.float32)}
    return Term("loss_cc", weight, fn)


def embeddings(model: nn.Module) -> Callable[[Any, jax.Array], Features]:
    """Features of class-major images ``(K, n, H, W, C)``: the embeddings only (DM, M3D)."""
    def features(variables: Any, images: jax.Array) -> Features:
        k, n = images.shape[:2]
        out = embed_fn(model, variables, images.reshape((k * n,) + images.shape[2:]))
        return Features(out.reshape(k, n, -1), ())
    return features


def embedding_and_maps(model: nn.Module, cov_blocks: str) -> Callable[[Any, jax.Array], Features]:
    """Features with the local maps of the last block (``cov_blocks="last"``) or of every block (``"all"``), and the
    logits (the same forward pass)."""
    check_choice("cov_blocks", cov_blocks, COV_BLOCKS)

    def features(variables: Any, images: jax.Array) -> Features:
        k, n = images.shape[:2]
        out, _ = models.apply_model(model, variables, images.reshape((k * n,) + images.shape[2:]), train=True,
                                    output="features")
        blocks = out["blocks"] if cov_blocks == "all" else out["blocks"][-1:]
        return Features(out["embed"].reshape(k, n, -1), tuple(b.reshape((k, n) + b.shape[1:]) for b in blocks),
                        out["logits"].reshape(k, n, -1))
    return features


def embeddings_and_logits(model: nn.Module) -> Callable[[Any, jax.Array], Features]:
    """Features with the embeddings and the logits of one forward pass (IDM), no local maps."""
    def features(variables: Any, images: jax.Array) -> Features:
        k, n = images.shape[:2]
        out, _ = models.apply_model(model, variables, images.reshape((k * n,) + images.shape[2:]), train=True,
                                    output="features")
        return Features(out["embed"].reshape(k, n, -1), (), out["logits"].reshape(k, n, -1))
    return features


#: On one CPU device the real batch's features (no gradient) are computed in chunks of at most this many images
#: (``lax.map``), so a chunk's activations stay in cache: DM's step at 256 real images a class, 32×32×1, ConvNet-3
#: w128 (docs/performance.md, 2026-12-07). Per-sample nets only: batch norm's statistics are the whole batch's.
REAL_CHUNK = 64
#: Below this many images a chunk is not worth a loop step: the batch stays whole.
MIN_REAL_CHUNK = 16


def chunked(features: Callable[[Any, jax.Array], Features], max_chunk: int
            ) -> Callable[[Any, jax.Array], Features]:
    """``features`` of a class-major batch ``(K, n, H, W, C)`` computed ``c`` images at a time (``lax.map``),
    ``c`` the largest divisor of ``K·n`` up to ``max_chunk``; the whole batch at once when ``c`` would be below
    :data:`MIN_REAL_CHUNK` or the variables hold batch-norm statistics (a chunk's statistics are not the batch's).
    Same values for a per-sample network: each image's features depend on that image only."""
    def run(variables: Any, images: jax.Array) -> Features:
        k, n = images.shape[:2]
        c = largest_divisor(k * n, max_chunk)
        if c < MIN_REAL_CHUNK or c == k * n or "batch_stats" in variables:
            return features(variables, images)
        parts = jax.lax.map(lambda x: features(variables, x), images.reshape((k * n // c, 1, c) + images.shape[2:]))
        return jax.tree.map(lambda a: a.reshape((k, n) + a.shape[3:]), parts)
    return run


class Family(NamedTuple):
    """One distribution-matching algorithm as parts (:func:`distribution_matching`)."""
    model: nn.Module
    num_classes: int
    ipc: int
    image_shape: tuple[int, int, int]
    strategy: str                                   # siamese DSA ("none": identity)
    terms: tuple[Term, ...]
    features: Callable[[Any, jax.Array], Features]
    sampler: RealSampler
    real_pool: Callable[[Any], RealPool]            # the RealPool inside the step's data
    split: Callable[[jax.Array], jax.Array]         # the real batch's split over the mesh (sample axis)
    real_features: Callable[[Any, jax.Array], Features]  # ``features`` of real images (chunked on one CPU)
    tx: optax.GradientTransformation
    networks: Networks                              # the step's feature extractor (fresh_networks: DM's)
    images: Parameterization                        # stored -> matched images (plain: the images themselves)
    initial: Callable[[jax.Array, jax.Array, RealPool], jax.Array] | None  # (key, stored, real) -> stored, step 0


def distribution_matching(config: ml_collections.ConfigDict, hp: ml_collections.ConfigDict, section: str,
                          model: nn.Module, num_classes: int, image_shape: tuple[int, int, int],
                          mesh: Mesh | None = None, *, terms: tuple[Term, ...],
                          features: Callable[[Any, jax.Array], Features] | None = None,
                          sampler: RealSampler | None = None,
                          real_pool: Callable[[Any], RealPool] = lambda data: data,
                          networks: Networks | None = None, images: Parameterization | None = None,
                          initial: Callable[[jax.Array, jax.Array, RealPool], jax.Array] | None = None) -> Algorithm:
    """The ``(init, step)`` pair of one family member from its parts (module doc).

    ``hp``: the algorithm's config section (``lr_img``, ``momentum``, ``batch_real``); ``config``: reads ``ipc`` and
    ``dsa_strategy``. ``terms``: the loss. ``features``: default :func:`embeddings`. ``sampler``: default
    ``batch_real`` random images per class. ``real_pool``: where the step's data holds the ``RealPool``.
    ``networks``: default :func:`fresh_networks`. ``images``: default the images themselves (``plain(ipc)``);
    ``initial``: replaces the stored images at step 0 (IDM's partitioned real init), default none.
    """
    check_common(hp, section, config.dsa_strategy, mesh)
    images = images or plain(config.ipc)
    check_factor(images.factor, tuple(image_shape))
    features = features or embeddings(model)
    family = Family(model=model, num_classes=num_classes, ipc=config.ipc, image_shape=tuple(image_shape),
                    strategy=config.dsa_strategy, terms=tuple(terms), features=features,
                    real_features=chunked(features, REAL_CHUNK) if one_cpu(mesh) else features,
                    sampler=sampler or random_real(hp.batch_real), real_pool=real_pool,
                    split=flat_batch_splitter(mesh), tx=optax.sgd(hp.lr_img, momentum=hp.momentum),
                    networks=networks or fresh_networks(model, image_shape), images=images, initial=initial)
    return Algorithm(functools.partial(family_init, family), functools.partial(family_step, family))


def family_init(f: Family, key: jax.Array, synthetic: SyntheticSet) -> DistillState:
    """The state: the (stored) images, their SGD state, and in ``extras`` the sampler's carry (and the networks'
    carry, as :class:`FamilyExtras`, when they keep one). Under partitioning ``synthetic.extras["stored"]`` is the
    optimised tensor and ``synthetic.images``/``labels`` its decoded training set (IDC's layout)."""
    expected = (f.num_classes * f.ipc,) + f.image_shape
    if synthetic.images.shape != expected:
        raise ConfigError(f"synthetic images have shape {synthetic.images.shape}, expected {expected} "
                          "(num_classes*ipc, H, W, C)")
    sampler_carry = f.sampler.init(f.num_classes, f.image_shape)
    extras = sampler_carry
    if f.networks.init is not None:
        extras = FamilyExtras(sampler_carry, f.networks.init(jax.random.fold_in(key, 1)))
    return DistillState(step=jnp.zeros((), jnp.int32), rng=key,
                        synthetic=with_stored(f.images, synthetic, synthetic.images),
                        opt_state=f.tx.init(synthetic.images), extras=extras)


def family_step(f: Family, state: DistillState, data: Any) -> tuple[DistillState, dict[str, jax.Array]]:
    """One step: the step's network, real batch, ``Σ weight · term`` on the augmented sets, one SGD step on the
    (stored) images, then the networks' update."""
    rng, k_net, k_real, k_aug = jax.random.split(state.rng, 4)
    stateful = f.networks.init is not None
    sampler_carry, net_carry = (state.extras.sampler, state.extras.networks) if stateful else (state.extras, None)
    net_carry, variables, info = f.networks.draw(k_net, net_carry, state.step)
    aug_keys = jax.random.split(k_aug, f.num_classes)
    pool = f.real_pool(data)
    real_batch, sampler_carry = f.sampler.sample(k_real, sampler_carry, state.step,
                                                 lambda x: f.real_features(variables, x).embed, pool)
    # augment, then split: the per-class DSA on a split batch made XLA gather it and embed most of it on every device
    real = jax.lax.stop_gradient(f.real_features(variables, f.split(siamese_dsa(aug_keys, real_batch, f.strategy))))
    stored = stored_images(f.images, state.synthetic)
    if f.initial is not None:  # its own key (folded from k_real), so the other draws are as without it
        stored = jax.lax.cond(state.step == 0, lambda: f.initial(jax.random.fold_in(k_real, 1), stored, pool),
                              lambda: stored)

    def loss_fn(stored: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        syn_images = siamese_dsa(aug_keys, decode(f.images, stored), f.strategy)
        return weighted_sum(f.terms, TermInputs(real, f.features(variables, syn_images), syn_images, data, state.rng,
                                                info))

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(stored)
    stored, opt_state = apply_gradients(f.tx, grads, state.opt_state, stored)
    net_carry, net_metrics = f.networks.update(jax.random.fold_in(k_net, 1), net_carry, state.step, pool)
    extras = FamilyExtras(sampler_carry, net_carry) if stateful else sampler_carry
    new_state = state.replace(step=state.step + 1, rng=rng, synthetic=with_stored(f.images, state.synthetic, stored),
                              opt_state=opt_state, extras=extras)
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **terms, **net_metrics}
