r"""DIDD: domain-incremental dataset distillation with the asymmetric synthetic-data update (Oh & Sim, "Asymmetric
Synthetic Data Update for Domain Incremental Dataset Distillation"; ../shared/papers/didd-asymmetric-update.txt,
§4.2 and Algorithm 1). No public code exists; docs/didd.md records every reading below.

Domains ``D¹ … Dᵀ`` arrive one at a time, sharing the label space; ONE stored set ``x̂`` (IPC images per class)
is distilled through all of them. Per step, with a fresh random ConvNet ``φ`` and one siamese augmentation per class
(the same transform for real, current and previous images of the class):

.. math::
    \mathcal L_{plastic} = \sum_c \mathrm{MMD}^2\big(\phi(x^t_c), \phi(\hat x^t_c)\big)\ \text{(eq. 3)},\qquad
    \mathcal L_{stable} = \sum_c \mathrm{MMD}^2\big(\phi(\hat x^{t-1}_c), \phi(\hat x^t_c)\big)\ \text{(eq. 4)}

``g_S,i = ∂L_stable/∂x̂_i``, ``g_P,i = ∂L_plastic/∂x̂_i`` (eq. 6; one forward of the synthetic images, both
gradients pulled back through the same residuals), ``ᾱ_i = α_min + (α_max − α_min)·σ(α_i)`` and likewise ``β̄`` (eq. 8),

.. math::
    \hat x_{meta} = \hat x - \eta_x(\bar\alpha\odot g_S + \bar\beta\odot g_P)\ \text{(eq. 9)},\quad
    \mathcal L^{pen}_{meta} = \mathcal L_{stable}(\hat x_{meta}) + \mathcal L_{plastic}(\hat x_{meta})
      + \lambda_\alpha \overline{\bar\alpha} + \lambda_\beta \overline{\bar\beta}\ \text{(eqs. 10-13)}

``α, β ← SGD(η_α, η_β)`` on ``L^pen_meta`` (eq. 14), then the image step with the NEW rates,
``x̂ ← x̂ − η_x(ᾱ ⊙ g_S + β̄ ⊙ g_P)`` (eq. 7; Algorithm 1 order). The means in the penalty are per class (Algorithm 1
runs the meta step class by class); all classes run in one program, which is exact because every class's losses
depend only on that class's images and rates.

Ablations and baselines are one switch, ``config.didd.mode`` (:data:`MODES`); each picks an update constructor
(:func:`finetune_update`, :func:`stable_update`, :func:`linear_update`, :func:`bilevel_update`) and, for the
continual-learning baselines moved onto pixels, a :class:`Penalty` (LwF, EWC, MAS, LF; docs/didd.md).

Before the first domain boundary there is no previous set: on domain 1 every mode takes the Finetune step
``x̂ ← x̂ − η_x g_P`` and leaves α, β at their initial 0 (L_stable ≡ 0 there; the paper's Table 2 shows the proposed
method costing the same as Finetune on the first domain, which is this reading). :func:`boundary` freezes the
current stored set as ``x̂ᵗ⁻¹`` and keeps α, β (they are initialised once, before Algorithm 1's domain loop).

Multi-formation (IDC, as M3D and the paper use it): the optimised tensor is the stored set
(``synthetic.extras["stored"]``, ``K·IPC`` images, the storage budget), each decoded into ``factor²`` images;
``synthetic.images``/``labels`` hold the decoded training set the launcher evaluates, as in :mod:`.idc`.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from jax.sharding import Mesh

from ddjax import augment, losses, models, sharding
from ddjax.algorithms.base import Algorithm, DistillState, RealPool, SyntheticSet, sample_per_class
from ddjax.algorithms.multiformation import check_factor, decode_zoom, mosaic
from ddjax.errors import ConfigError, check_choice

MODES = ("finetune", "stable", "linear", "bilevel", "lwf", "ewc", "mas", "lf")
AUG_MODES = ("S", "M")

__all__ = ["MODES", "Rates", "PenaltyState", "DIDDState", "AsymmetricUpdate", "Penalty", "bounded_rates",
           "finetune_update", "stable_update", "linear_rates", "linear_update", "bilevel_update", "make_update",
           "make_penalty", "default_config", "make", "make_spec", "didd_step", "boundary", "rates_in_use",
           "rate_difference", "focus_indices", "focus_images", "summarize"]


class Rates(NamedTuple):
    """Per-sample learnable scale parameters (eq. 8 maps them into their ranges) and their SGD state."""
    alpha: jax.Array          # (N,) raw α_i, N = K·IPC stored images; initialised at 0
    beta: jax.Array           # (N,) raw β_i
    opt: optax.OptState       # SGD(η_α, η_β) state (eq. 14); () for the modes that learn nothing


class PenaltyState(NamedTuple):
    """Pixel importance of the EWC / MAS baselines (docs/didd.md): a running sum over the current domain's steps and
    the importance frozen at the boundaries (the sum over past domains of their per-step means)."""
    running: jax.Array        # (N, H, W, C) Σ of this domain's importance samples
    count: jax.Array          # () steps summed in ``running``
    importance: jax.Array     # (N, H, W, C) Ω used by the penalty (0 on domain 1)


class DIDDState(NamedTuple):
    """DIDD's own part of the state (``DistillState.extras["didd"]``)."""
    previous: jax.Array       # frozen x̂ᵗ⁻¹, stored images (N, H, W, C)
    has_previous: jax.Array   # bool (): False until the first domain boundary
    rates: Rates
    penalty: Any              # PenaltyState for EWC / MAS, () otherwise


class AsymmetricUpdate(NamedTuple):
    """How the two per-sample gradients become the image direction (the shape of an optax transformation).

    init(num_samples) -> Rates.
    update(g_plastic, rates, images, *, g_stable, meta_loss) -> (direction, rates, metrics): the image step is
      ``x̂ ← x̂ − η_x · direction``; ``meta_loss(x)`` = L_stable(x) + L_plastic(x) with this step's network, batch and
      augmentation (only the bi-level update calls it).
    uses_stable: whether ``g_stable`` is needed (Finetune and the baselines leave L_stable out).
    """
    init: Callable[[int], Rates]
    update: Callable[..., tuple[jax.Array, Rates, dict]]
    uses_stable: bool


def _per_sample(v: jax.Array) -> jax.Array:
    return v[:, None, None, None]


def bounded_rates(raw: jax.Array, bounds: tuple[float, float]) -> jax.Array:
    r"""Eq. 8: :math:`\bar a = a_{min} + (a_{max} - a_{min})\,\sigma(a)`."""
    lo, hi = bounds
    return lo + (hi - lo) * jax.nn.sigmoid(raw)


def _fixed_rates(num: int) -> Rates:
    return Rates(jnp.zeros((num,), jnp.float32), jnp.zeros((num,), jnp.float32), ())


def _rate_metrics(alpha_bar: jax.Array, beta_bar: jax.Array) -> dict[str, jax.Array]:
    return {"alpha_mean": jnp.mean(alpha_bar), "beta_mean": jnp.mean(beta_bar)}


def finetune_update() -> AsymmetricUpdate:
    """Finetune: ``x̂ ← x̂ − η_x g_P`` (plastic only; the baselines add their penalty to ``g_P``)."""
    def update(g_plastic, rates, images, *, g_stable=None, meta_loss=None):
        n = g_plastic.shape[0]
        return g_plastic, rates, _rate_metrics(jnp.zeros((n,)), jnp.ones((n,)))
    return AsymmetricUpdate(_fixed_rates, update, uses_stable=False)


def stable_update() -> AsymmetricUpdate:
    """``+ L_stable``: ``x̂ ← x̂ − η_x (g_S + g_P)`` (eq. 5, ᾱ = β̄ = 1)."""
    def update(g_plastic, rates, images, *, g_stable, meta_loss=None):
        n = g_plastic.shape[0]
        return g_stable + g_plastic, rates, _rate_metrics(jnp.ones((n,)), jnp.ones((n,)))
    return AsymmetricUpdate(_fixed_rates, update, uses_stable=True)


def linear_rates(num: int, ipc: int, alpha_range=(0.0, 2.0), beta_range=(0.0, 2.0)
                 ) -> tuple[jax.Array, jax.Array]:
    r"""§5.3's linear assignment: within each class, sample ``i ∈ {0..N−1}`` (N = IPC) gets
    :math:`\bar\alpha_i = \alpha_{max} - \tfrac{i}{N-1}(\alpha_{max} - \alpha_{min})`,
    :math:`\bar\beta_i = \beta_{min} + \tfrac{i}{N-1}(\beta_{max} - \beta_{min})`. At IPC 1 the fraction
    ``i/(N−1)`` is taken as 1/2 (the single sample sits mid-range). Returns ``(ᾱ, β̄)``, each ``(num,)``."""
    frac = (jnp.arange(num) % ipc) / (ipc - 1) if ipc > 1 else jnp.full((num,), 0.5)
    alpha_bar = alpha_range[1] - frac * (alpha_range[1] - alpha_range[0])
    beta_bar = beta_range[0] + frac * (beta_range[1] - beta_range[0])
    return alpha_bar.astype(jnp.float32), beta_bar.astype(jnp.float32)


def linear_update(ipc: int, alpha_range=(0.0, 2.0), beta_range=(0.0, 2.0)) -> AsymmetricUpdate:
    """``+ Asym. (Linear)``: eq. 7 with the fixed :func:`linear_rates` (not learned)."""
    def update(g_plastic, rates, images, *, g_stable, meta_loss=None):
        alpha_bar, beta_bar = linear_rates(g_plastic.shape[0], ipc, alpha_range, beta_range)
        direction = _per_sample(alpha_bar) * g_stable + _per_sample(beta_bar) * g_plastic
        return direction, rates, _rate_metrics(alpha_bar, beta_bar)
    return AsymmetricUpdate(_fixed_rates, update, uses_stable=True)


def bilevel_update(eta_x: float, ipc: int, alpha_range=(0.0, 2.0), beta_range=(0.0, 2.0), lr_alpha: float = 1e-2,
                   lr_beta: float = 1e-2, lambda_alpha: float = 1e-4, lambda_beta: float = 1e-4
                   ) -> AsymmetricUpdate:
    r"""The proposed update (eqs. 7-14): learn per-sample α, β by one meta step, then step the images.

    Why the meta-gradient costs one forward/backward at ``x̂_meta`` and is exact: ``g_S`` and ``g_P`` are
    gradients at the CURRENT images ``x̂``; they depend on ``x̂`` (and the step's network, batch, augmentation) but
    not on α or β. So ``x̂_meta = x̂ − η_x(ᾱ ⊙ g_S + β̄ ⊙ g_P)`` is affine in ``(ᾱ, β̄)`` with constant coefficients, and the
    chain rule gives exactly
    :math:`\partial\mathcal L_{meta}/\partial\bar\alpha_i = -\eta_x\langle\nabla\mathcal L_{meta}(\hat x_{meta})_i,
    g_{S,i}\rangle` (likewise ``β̄`` with ``g_P``): no Hessian of L appears (MAML's second-order term would come from
    differentiating ``g`` through ``x̂``, which α, β do not touch). Below, ``g_S, g_P`` enter ``penalised`` as
    closed-over constants, so ``jax.grad`` over (α, β) runs precisely that one extra forward/backward.
    """
    meta_opt = optax.multi_transform({"alpha": optax.sgd(lr_alpha), "beta": optax.sgd(lr_beta)},
                                     {"alpha": "alpha", "beta": "beta"})

    def init(num: int) -> Rates:
        alpha, beta = jnp.zeros((num,), jnp.float32), jnp.zeros((num,), jnp.float32)
        return Rates(alpha, beta, meta_opt.init({"alpha": alpha, "beta": beta}))

    def class_mean(v: jax.Array) -> jax.Array:  # Σ_c mean_{i ∈ c}: eq. 12 per class, as Algorithm 1's class loop
        return jnp.sum(jnp.mean(v.reshape(-1, ipc), axis=1))

    def update(g_plastic, rates, images, *, g_stable, meta_loss):
        def penalised(raw: dict) -> jax.Array:
            alpha_bar, beta_bar = bounded_rates(raw["alpha"], alpha_range), bounded_rates(raw["beta"], beta_range)
            x_meta = images - eta_x * (_per_sample(alpha_bar) * g_stable + _per_sample(beta_bar) * g_plastic)
            return (meta_loss(x_meta) + lambda_alpha * class_mean(alpha_bar)
                    + lambda_beta * class_mean(beta_bar))

        raw = {"alpha": rates.alpha, "beta": rates.beta}
        meta_value, meta_grads = jax.value_and_grad(penalised)(raw)
        steps, opt = meta_opt.update(meta_grads, rates.opt, raw)
        raw = optax.apply_updates(raw, steps)
        alpha_bar, beta_bar = bounded_rates(raw["alpha"], alpha_range), bounded_rates(raw["beta"], beta_range)
        direction = _per_sample(alpha_bar) * g_stable + _per_sample(beta_bar) * g_plastic
        metrics = {**_rate_metrics(alpha_bar, beta_bar), "meta_loss": meta_value}
        return direction, Rates(raw["alpha"], raw["beta"], opt), metrics
    return AsymmetricUpdate(init, update, uses_stable=True)


class Penalty(NamedTuple):
    """A continual-learning regulariser moved from network parameters onto the synthetic pixels (docs/didd.md).

    on_outputs(syn, prev) -> scalar: a term on this step's network outputs (``{"embed", "logits"}``, class-major
    ``(K, n, ·)``) of the current and the frozen previous set (LwF, LF); None if the penalty is on pixels.
    importance: ``"fisher"`` (EWC: squared plastic gradient) or ``"sensitivity"`` (MAS: |∂‖φ(x̂)‖²/∂x̂|) for the
      pixel anchor ``Σ Ω̃ (x̂ − x̂ᵗ⁻¹)²``; None for the output terms.
    weight: λ.
    """
    weight: float
    on_outputs: Callable[[dict, dict], jax.Array] | None
    importance: str | None


def _lwf_term(temperature: float) -> Callable[[dict, dict], jax.Array]:
    """LwF on pixels: Σ_c mean_i KL(softmax(φ(x̂ᵗ⁻¹_i)/T) ‖ softmax(φ(x̂ᵗ_i)/T)) · T² (Li & Hoiem's distillation
    loss, whose cross-entropy differs from this KL by the targets' constant entropy, with the old model's outputs
    replaced by the same network's outputs on the frozen previous images)."""
    def term(syn: dict, prev: dict) -> jax.Array:
        targets = jax.nn.softmax(prev["logits"] / temperature)
        kl = optax.kl_divergence(jax.nn.log_softmax(syn["logits"] / temperature), targets)  # (K, n)
        return jnp.sum(jnp.mean(kl, axis=1)) * temperature ** 2
    return term


def _lf_term(syn: dict, prev: dict) -> jax.Array:
    """LF on pixels: Σ_c mean_i ‖φ(x̂ᵗ_i) − φ(x̂ᵗ⁻¹_i)‖² / mean ‖φ(x̂ᵗ⁻¹)‖² (Jung et al.'s feature L2 between the old
    and new extractor, here between the new and old image under one extractor; normalised so λ is scale-free)."""
    scale = jax.lax.stop_gradient(jnp.mean(jnp.sum(jnp.square(prev["embed"]), -1))) + 1e-12
    return jnp.sum(jnp.mean(jnp.sum(jnp.square(syn["embed"] - prev["embed"]), -1), axis=1)) / scale


def make_penalty(mode: str, hp: ml_collections.ConfigDict) -> Penalty | None:
    """The baseline penalty of ``mode`` (None for finetune / stable / linear / bilevel)."""
    if mode == "lwf":
        return Penalty(hp.penalty_weight, _lwf_term(hp.lwf_temperature), None)
    if mode == "lf":
        return Penalty(hp.penalty_weight, _lf_term, None)
    if mode in ("ewc", "mas"):
        return Penalty(hp.penalty_weight, None, "fisher" if mode == "ewc" else "sensitivity")
    return None


def make_update(mode: str, hp: ml_collections.ConfigDict, ipc: int) -> AsymmetricUpdate:
    """The update constructor of ``mode`` (the baselines take Finetune's)."""
    if mode == "bilevel":
        return bilevel_update(hp.lr_img, ipc, tuple(hp.alpha_range), tuple(hp.beta_range), hp.lr_alpha, hp.lr_beta,
                              hp.lambda_alpha, hp.lambda_beta)
    if mode == "linear":
        return linear_update(ipc, tuple(hp.alpha_range), tuple(hp.beta_range))
    if mode == "stable":
        return stable_update()
    return finetune_update()


def default_config() -> ml_collections.ConfigDict:
    """``config.didd``: the paper's Table 6 values; see docs/didd.md for the fields the paper leaves open."""
    return ml_collections.ConfigDict(dict(
        mode="bilevel",            # finetune | stable | linear | bilevel | lwf | ewc | mas | lf
        lr_img=10.0,               # η_x; the paper sets it to the IPC (configs do)
        momentum=0.0,              # eq. 7 is plain SGD; > 0 adds heavy-ball momentum to the image step
        batch_real=128,            # real images per class per step (64 for PACS)
        factor=2,                  # multi-formation: each stored image decodes into factor² images (1: off)
        init_mix=True,             # IDC's init: each stored image a mosaic of factor² real images (step 0)
        aug_mode="M",              # DSA mode for config.dsa_strategy: "M" every group in sequence (IDC), "S" one
        alpha_range=(0.0, 2.0),    # (α_min, α_max) of eq. 8
        beta_range=(0.0, 2.0),     # (β_min, β_max)
        lr_alpha=1e-2, lr_beta=1e-2,           # η_α, η_β (eq. 14)
        lambda_alpha=1e-4, lambda_beta=1e-4,   # λ_α, λ_β (eq. 13)
        sigmas=(0.5, 1.0, 2.0),    # Gaussian kernel widths × the per-class median distance (M3D's kernel)
        unbiased=False,            # MMD V-statistic (defined at IPC 1)
        penalty_weight=1.0,        # λ of LwF / EWC / MAS / LF (configs: launch.continual_methods.PENALTY_WEIGHTS)
        lwf_temperature=2.0,       # LwF's T
        reset_rates=False,         # True: α, β (and their SGD state) back to 0 at every domain boundary
        meta_normalise=False,      # True: each term of L_meta over its value at x̂ (L_stable's floored; meta_weights)
    ))


def _check(config: ml_collections.ConfigDict, image_shape, mesh: Mesh | None) -> None:
    """Validate ``config.didd`` eagerly, one line per problem."""
    hp = config.didd
    check_choice("didd.mode", hp.mode, MODES)
    check_choice("didd.aug_mode", hp.aug_mode, AUG_MODES)
    augment.parse_strategy(config.dsa_strategy)
    check_factor(hp.factor, image_shape)
    for name in ("lr_img", "lr_alpha", "lr_beta", "batch_real"):
        if not hp[name] > 0:
            raise ConfigError(f"didd.{name} must be > 0, got {hp[name]}; set --config.didd.{name}")
    for name in ("lambda_alpha", "lambda_beta", "penalty_weight"):
        if not hp[name] >= 0:
            raise ConfigError(f"didd.{name} must be >= 0, got {hp[name]}; set --config.didd.{name}")
    if not 0 <= hp.momentum < 1:
        raise ConfigError(f"didd.momentum must be in [0, 1), got {hp.momentum}")
    for name in ("alpha_range", "beta_range"):
        bounds = tuple(hp[name])
        if len(bounds) != 2 or not bounds[0] < bounds[1]:
            raise ConfigError(f"didd.{name} must be (min, max) with min < max, got {bounds}; e.g. (0.0, 2.0)")
    if not tuple(hp.sigmas) or any(not s > 0 for s in hp.sigmas):
        raise ConfigError(f"didd.sigmas must be positive bandwidth multipliers, got {hp.sigmas}")
    if hp.unbiased and config.ipc * hp.factor ** 2 < 2:
        raise ConfigError("didd.unbiased=True needs >= 2 decoded images per class; set didd.unbiased=False")
    if hp.mode == "lwf" and not hp.lwf_temperature > 0:
        raise ConfigError(f"didd.lwf_temperature must be > 0, got {hp.lwf_temperature}")
    sharding.check_split(hp.batch_real, mesh, f"didd.batch_real={hp.batch_real}")


def class_mmd(a: jax.Array, b: jax.Array, scales: tuple[float, ...], unbiased: bool) -> jax.Array:
    """Σ_c MMD²(a_c, b_c) with per-class median-heuristic bandwidths × ``scales`` (M3D's kernel; eqs. 3, 4)."""
    sigmas = losses.median_bandwidth(a, b)[:, None] * jnp.asarray(scales, jnp.float32)
    return losses.gaussian_mmd_per_class(a, b, sigmas, unbiased=unbiased)


class StepSpec(NamedTuple):
    """The static pieces of one DIDD step (built once by :func:`make`)."""
    model: nn.Module
    num_classes: int
    ipc: int
    image_shape: tuple[int, int, int]
    factor: int
    strategy: str
    aug_mode: str
    batch_real: int
    scales: tuple[float, ...]
    unbiased: bool
    init_mix: bool
    split: Callable[[jax.Array], jax.Array]  # the real batch (K, B, ...) split over the mesh as its flattened K·B rows
    update: AsymmetricUpdate
    penalty: Penalty | None
    image_opt: optax.GradientTransformation
    eta_x: float
    meta_normalise: bool = False   # config.didd.meta_normalise (not the paper's: docs/didd.md)


class StepInputs(NamedTuple):
    """What every loss of one step shares: the random network, the per-class augmentation keys and the real
    embeddings (gradient stopped)."""
    variables: Any
    aug_keys: jax.Array
    real_embed: jax.Array


METRIC_KEYS = ("loss", "loss_plastic", "loss_stable", "loss_penalty", "alpha_mean", "beta_mean", "meta_loss",
               "grad_cos")


def decode_stored(spec: StepSpec, stored: jax.Array) -> jax.Array:
    """Stored ``(K·IPC, H, W, C)`` -> decoded class-major ``(K, IPC·factor², H, W, C)`` (multi-formation)."""
    return decode_zoom(stored.reshape((spec.num_classes, spec.ipc) + spec.image_shape), spec.factor)


def network_outputs(spec: StepSpec, inputs: StepInputs, images: jax.Array) -> dict[str, jax.Array]:
    """``{"embed": (K, n, D), "logits": (K, n, K)}`` of class-major images ``(K, n, H, W, C)`` after the class's
    siamese augmentation (one key per class: real, current and previous images of a class see the same one)."""
    k, n = images.shape[:2]
    augmented = jax.vmap(lambda key, x: augment.dsa(key, x, spec.strategy, per_sample=False, mode=spec.aug_mode))(
        inputs.aug_keys, images)
    out, _ = models.apply_model(spec.model, inputs.variables, augmented.reshape((k * n,) + images.shape[2:]),
                                train=True, output="features")
    return {"embed": out["embed"].reshape(k, n, -1), "logits": out["logits"].reshape(k, n, -1)}


def pulled_back_gradients(outputs_fn: Callable[[jax.Array], Any], stored: jax.Array,
                          scalar_fns: tuple[Callable[[Any], jax.Array], ...]
                          ) -> tuple[list[jax.Array], list[jax.Array], Any]:
    """Values and image gradients of several scalar functions of ONE forward ``outputs_fn(stored)``: each function's
    cotangent is pulled back through the same residuals, so g_S and g_P (eq. 6) cost one forward and two
    input-only backwards. (A vmapped pull-back computes the same but XLA:CPU runs its batched convolutions 3-5x
    slower; docs/results.md.) Returns (values, gradients, outputs)."""
    outputs, pullback = jax.vjp(outputs_fn, stored)
    values, cotangents = zip(*(jax.value_and_grad(f)(outputs) for f in scalar_fns))
    return list(values), [pullback(c)[0] for c in cotangents], outputs


def _feature_sensitivity(outputs: dict) -> jax.Array:
    """MAS's unsupervised output function: Σ_c mean_i ‖φ(x̂_i)‖² (its gradient's magnitude is the importance)."""
    return jnp.sum(jnp.mean(jnp.sum(jnp.square(outputs["embed"]), -1), axis=1))


def _importance_sample(spec: StepSpec, g_data: jax.Array, g_sensitivity: jax.Array | None) -> Any:
    """This step's per-pixel importance sample: EWC g_P² (empirical Fisher of the distillation loss), MAS
    |∂‖φ‖²/∂x̂|; () without a pixel anchor."""
    if spec.penalty is None or spec.penalty.importance is None:
        return ()
    return jnp.square(g_data) if spec.penalty.importance == "fisher" else jnp.abs(g_sensitivity)


def _full_metrics(**values: jax.Array) -> dict[str, jax.Array]:
    """Every branch reports the same keys (0 where a term does not exist), as ``lax.cond`` requires."""
    metrics = {k: jnp.zeros((), jnp.float32) for k in METRIC_KEYS}
    metrics.update({k: jnp.asarray(v, jnp.float32) for k, v in values.items()})
    metrics["loss"] = metrics["loss_plastic"] + metrics["loss_stable"] + metrics["loss_penalty"]
    return metrics


def first_domain_direction(spec: StepSpec, inputs: StepInputs, didd: DIDDState, stored: jax.Array):
    """Domain 1 (no previous set; L_stable ≡ 0): the Finetune direction g_P, rates unchanged."""
    def outputs_fn(x):
        return network_outputs(spec, inputs, decode_stored(spec, x))

    def plastic(out):
        return class_mmd(inputs.real_embed, out["embed"], spec.scales, spec.unbiased)

    wants_sensitivity = spec.penalty is not None and spec.penalty.importance == "sensitivity"
    fns = (plastic, _feature_sensitivity) if wants_sensitivity else (plastic,)
    values, grads, _ = pulled_back_gradients(outputs_fn, stored, fns)
    sample = _importance_sample(spec, grads[0], grads[-1])
    n = stored.shape[0]
    metrics = _full_metrics(loss_plastic=values[0], **_rate_metrics(jnp.zeros((n,)), jnp.ones((n,))))
    return grads[0], didd.rates, sample, metrics


def later_domain_direction(spec: StepSpec, inputs: StepInputs, didd: DIDDState, stored: jax.Array):
    """Domains t ≥ 2: L_plastic (+ a baseline's output penalty), L_stable against the frozen x̂ᵗ⁻¹, a baseline's
    pixel anchor, then the mode's update of the per-sample rates and direction."""
    previous = jax.lax.stop_gradient(network_outputs(spec, inputs, decode_stored(spec, didd.previous)))
    penalty = spec.penalty

    def outputs_fn(x):
        return network_outputs(spec, inputs, decode_stored(spec, x))

    def plastic_mmd(out):
        return class_mmd(inputs.real_embed, out["embed"], spec.scales, spec.unbiased)

    def stable(out):
        return class_mmd(previous["embed"], out["embed"], spec.scales, spec.unbiased)

    def output_penalty(out):
        return penalty.weight * penalty.on_outputs(out, previous)

    fns = [plastic_mmd]
    if spec.update.uses_stable:
        fns.append(stable)
    if penalty is not None and penalty.on_outputs is not None:
        fns.append(output_penalty)
    if penalty is not None and penalty.importance == "sensitivity":
        fns.append(_feature_sensitivity)
    values, grads, _ = pulled_back_gradients(outputs_fn, stored, tuple(fns))
    named = dict(zip([f.__name__ for f in fns], zip(values, grads)))
    g_plastic = grads[0]
    loss_penalty = jnp.zeros(())
    if "output_penalty" in named:
        loss_penalty, g_penalty = named["output_penalty"]
        g_plastic = g_plastic + g_penalty
    if penalty is not None and penalty.importance is not None:
        loss_anchor, g_anchor = jax.value_and_grad(pixel_anchor, argnums=1)(
            didd.penalty.importance, stored, didd.previous, penalty.weight, spec.eta_x)
        loss_penalty, g_plastic = loss_penalty + loss_anchor, g_plastic + g_anchor
    sample = _importance_sample(spec, grads[0], named.get("_feature_sensitivity", (None, None))[1])

    extra = {}
    if spec.update.uses_stable:
        loss_stable, g_stable = named["stable"]

        weights = meta_weights(spec, loss_stable, values[0])

        def meta_loss(x):
            out = outputs_fn(x)
            return weights[0] * stable(out) + weights[1] * plastic_mmd(out)

        direction, rates, extra = spec.update.update(g_plastic, didd.rates, stored, g_stable=g_stable,
                                                     meta_loss=meta_loss)
        extra = {**extra, "loss_stable": loss_stable, "grad_cos": _mean_cosine(g_stable, g_plastic)}
    else:
        direction, rates, extra = spec.update.update(g_plastic, didd.rates, stored)
    metrics = _full_metrics(loss_plastic=values[0], loss_penalty=loss_penalty, **extra)
    return direction, rates, sample, metrics


META_STABLE_FLOOR = 1e-2   # meta_normalise: L_stable's divisor is at least this fraction of L_plastic


def meta_weights(spec: StepSpec, loss_stable: jax.Array, loss_plastic: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Weights ``(w_S, w_P)`` of the meta objective ``w_S L_stable(x̂_meta) + w_P L_plastic(x̂_meta)``: (1, 1), eq. 10,
    by default; with ``didd.meta_normalise`` each loss is divided by its value at the current set (gradient
    stopped), :math:`w_S = 1/\max(\mathcal L_{stable}(\hat x), 10^{-2}\mathcal L_{plastic}(\hat x))`,
    :math:`w_P = 1/\mathcal L_{plastic}(\hat x)`, so the meta objective weighs the two RELATIVE decreases equally
    (L_plastic is ~10× L_stable on didd_tiny and pulls every β̄ up; a reading the paper does not state). The floor
    keeps w_S finite at a domain's first step, where x̂ = x̂ᵗ⁻¹ and L_stable = 0."""
    if not spec.meta_normalise:
        return jnp.ones(()), jnp.ones(())
    ls, lp = jax.lax.stop_gradient(loss_stable), jax.lax.stop_gradient(loss_plastic)
    lp = jnp.maximum(lp, 1e-12)
    return 1.0 / jnp.maximum(ls, META_STABLE_FLOOR * lp), 1.0 / lp


def pixel_anchor(importance: jax.Array, stored: jax.Array, previous: jax.Array, weight: float,
                 eta_x: float) -> jax.Array:
    r"""EWC / MAS on pixels: :math:`\frac{\lambda}{2\eta_x} \sum \tilde\Omega\,(\hat x - \hat x^{t-1})^2`,
    :math:`\tilde\Omega = \Omega / \max\Omega \in [0, 1]`. Scaled so that one image step (learning rate η_x) pulls
    every pixel back by the fraction λΩ̃ of its deviation: λ ≤ 1 keeps the explicit step stable whatever Ω's range
    (with Ω / mean Ω the stiffest pixels over-shot every step and the MAS run collapsed: docs/results.md)."""
    normalised = importance / (jnp.max(importance) + 1e-30)
    return weight / (2.0 * eta_x) * jnp.sum(normalised * jnp.square(stored - previous))


def _mean_cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean over samples of cos(g_S,i, g_P,i) (the paper's Fig. 3 statistic)."""
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    cos = jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + 1e-20)
    return jnp.mean(cos)


def initial_mosaic(spec: StepSpec, key: jax.Array, real: RealPool) -> jax.Array:
    """IDC's ``init='mix'``: each stored image a mosaic of factor² random real images of its class."""
    parts = sample_per_class(key, real, spec.ipc * spec.factor ** 2)
    return mosaic(parts, spec.factor).reshape((spec.num_classes * spec.ipc,) + spec.image_shape)


def with_decoded(spec: StepSpec, synthetic: SyntheticSet, stored: jax.Array) -> SyntheticSet:
    """The set with ``stored`` as its optimised tensor and its decoded training set as ``images``/``labels``."""
    per_class = spec.ipc * spec.factor ** 2
    images = decode_stored(spec, stored).reshape((spec.num_classes * per_class,) + spec.image_shape)
    labels = jnp.repeat(jnp.arange(spec.num_classes, dtype=jnp.int32), per_class)
    return synthetic.replace(images=images, labels=labels, extras={**synthetic.extras, "stored": stored})


def step_inputs(spec: StepSpec, state: DistillState, real_pool: RealPool
                ) -> tuple[jax.Array, StepInputs, jax.Array]:
    """This step's draws from ``state.rng``: ``(next rng, StepInputs, stored set)`` (the network, the per-class
    augmentation keys, the real batch's embeddings; the IDC mosaic init at step 0). Shared by :func:`didd_step` and
    the diagnostics of ``benchmarks/didd_meta_probe.py``, so a probe sees exactly the step's network and batch."""
    rng, k_net, k_real, k_aug, k_mix = jax.random.split(state.rng, 5)
    stored = state.synthetic.extras["stored"]
    if spec.init_mix:
        stored = jax.lax.cond(state.step == 0, lambda: initial_mosaic(spec, k_mix, real_pool), lambda: stored)
    variables = models.init_model(spec.model, k_net, spec.image_shape)
    aug_keys = jax.random.split(k_aug, spec.num_classes)
    real = sample_per_class(k_real, real_pool, spec.batch_real)
    real = spec.split(real)
    inputs = StepInputs(variables, aug_keys, jnp.zeros(()))
    inputs = inputs._replace(real_embed=jax.lax.stop_gradient(network_outputs(spec, inputs, real)["embed"]))
    return rng, inputs, stored


def didd_step(spec: StepSpec, state: DistillState, real_pool: RealPool, branch: str | None = None
              ) -> tuple[DistillState, dict]:
    """One DIDD iteration (Algorithm 1, lines 4-13, all classes at once) on the current domain's ``RealPool``.

    ``branch``: None chooses domain 1's or the later domains' update from ``has_previous`` inside the program
    (``lax.cond`` runs one of them); ``"first"`` / ``"later"`` compiles only that one (benchmarks count its FLOPs)."""
    didd: DIDDState = state.extras["didd"]
    rng, inputs, stored = step_inputs(spec, state, real_pool)

    def first(x):
        return first_domain_direction(spec, inputs, didd, x)

    def later(x):
        return later_domain_direction(spec, inputs, didd, x)

    if branch is not None:
        direction, rates, sample, metrics = {"first": first, "later": later}[branch](stored)
    elif spec.update.uses_stable or spec.penalty is not None:
        direction, rates, sample, metrics = jax.lax.cond(didd.has_previous, later, first, stored)
    else:  # Finetune: both domains take the same step
        direction, rates, sample, metrics = first(stored)
    updates, image_opt = spec.image_opt.update(direction, state.opt_state, stored)
    stored = optax.apply_updates(stored, updates)
    penalty = didd.penalty
    if isinstance(penalty, PenaltyState):
        penalty = penalty._replace(running=penalty.running + sample, count=penalty.count + 1)
    extras = {**state.extras, "didd": didd._replace(rates=rates, penalty=penalty)}
    new_state = state.replace(step=state.step + 1, rng=rng, synthetic=with_decoded(spec, state.synthetic, stored),
                              opt_state=image_opt, extras=extras)
    return new_state, {**metrics, "grad_norm": optax.tree.norm(direction)}


def make(config: ml_collections.ConfigDict, model: nn.Module, num_classes: int, image_shape: tuple[int, int, int],
         mesh: Mesh | None = None) -> Algorithm:
    """DIDD's ``(init, step)``; reads ``config.didd``, ``config.ipc`` and ``config.dsa_strategy``.

    ``step(state, real_pool)`` takes the CURRENT domain's ``RealPool``; :func:`boundary` runs between domains."""
    spec = make_spec(config, model, num_classes, image_shape, mesh)
    ipc, image_shape = spec.ipc, spec.image_shape

    def init(key: jax.Array, synthetic: SyntheticSet) -> DistillState:
        expected = (num_classes * ipc,) + image_shape
        if synthetic.images.shape != expected:
            raise ConfigError(f"synthetic images have shape {synthetic.images.shape}, expected {expected} "
                              "(num_classes*ipc, H, W, C)")
        stored = synthetic.images
        penalty = ()
        if spec.penalty is not None and spec.penalty.importance is not None:
            penalty = PenaltyState(jnp.zeros_like(stored), jnp.zeros((), jnp.int32), jnp.zeros_like(stored))
        didd = DIDDState(previous=jnp.copy(stored), has_previous=jnp.zeros((), bool),
                         rates=spec.update.init(stored.shape[0]), penalty=penalty)
        return DistillState(step=jnp.zeros((), jnp.int32), rng=key, synthetic=with_decoded(spec, synthetic, stored),
                            opt_state=spec.image_opt.init(stored), extras={"didd": didd})

    return Algorithm(init, lambda state, data: didd_step(spec, state, data))


def make_spec(config: ml_collections.ConfigDict, model: nn.Module, num_classes: int,
              image_shape: tuple[int, int, int], mesh: Mesh | None = None) -> StepSpec:
    """Validate ``config.didd`` and build the static :class:`StepSpec` of :func:`didd_step`."""
    image_shape = tuple(int(d) for d in image_shape)
    _check(config, image_shape, mesh)
    hp, ipc = config.didd, config.ipc
    return StepSpec(model=model, num_classes=num_classes, ipc=ipc, image_shape=image_shape, factor=hp.factor,
                    strategy=config.dsa_strategy, aug_mode=hp.aug_mode, batch_real=hp.batch_real,
                    scales=tuple(float(s) for s in hp.sigmas), unbiased=bool(hp.unbiased),
                    init_mix=bool(hp.init_mix) and hp.factor > 1, split=sharding.flat_batch_splitter(mesh),
                    update=make_update(hp.mode, hp, ipc),
                    penalty=make_penalty(hp.mode, hp),
                    image_opt=optax.sgd(hp.lr_img, momentum=hp.momentum or None), eta_x=float(hp.lr_img),
                    meta_normalise=bool(hp.meta_normalise))


def boundary(state: DistillState, phase_index: int | jax.Array, reset_rates: bool = False) -> DistillState:
    """The domain-boundary hook (Algorithm 1, line 2), run before phase ``phase_index`` (0-based): for
    ``phase_index ≥ 1`` the current stored set becomes the frozen x̂ᵗ⁻¹ (a copy), L_stable switches on, and the
    EWC / MAS importance of the finished domain is added to Ω; α, β are kept (the paper's reading), or with
    ``reset_rates`` (``config.didd.reset_rates``) set back to their initial 0 with a fresh SGD state. Phase 0:
    unchanged. Pure."""
    didd: DIDDState = state.extras["didd"]
    stored = state.synthetic.extras["stored"]
    later = jnp.asarray(phase_index) > 0
    penalty = didd.penalty
    if isinstance(penalty, PenaltyState):
        finished = penalty.running / jnp.maximum(penalty.count, 1).astype(penalty.running.dtype)
        penalty = PenaltyState(jnp.where(later, 0.0, penalty.running), jnp.where(later, 0, penalty.count),
                               jnp.where(later, penalty.importance + finished, penalty.importance))
    rates = didd.rates
    if reset_rates:
        rates = jax.tree.map(lambda v: jnp.where(later, jnp.zeros_like(v), v), rates)
    didd = DIDDState(previous=jnp.where(later, stored, didd.previous), has_previous=didd.has_previous | later,
                     rates=rates, penalty=penalty)
    return state.replace(extras={**state.extras, "didd": didd})


def rates_in_use(state: DistillState, config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
    """``(ᾱ, β̄)`` per stored sample as the mode applies them on later domains: learned (bilevel, eq. 8), assigned
    (linear, §5.3), constant otherwise (Finetune and the baselines: ᾱ = 0, β̄ = 1; + L_stable: 1, 1)."""
    hp = config.didd
    num = state.synthetic.extras["stored"].shape[0]
    if hp.mode == "bilevel":
        rates = state.extras["didd"].rates
        return bounded_rates(rates.alpha, tuple(hp.alpha_range)), bounded_rates(rates.beta, tuple(hp.beta_range))
    if hp.mode == "linear":
        return linear_rates(num, config.ipc, tuple(hp.alpha_range), tuple(hp.beta_range))
    return jnp.full((num,), 1.0 if hp.mode == "stable" else 0.0), jnp.ones((num,))


def rate_difference(state: DistillState, config: ml_collections.ConfigDict) -> jax.Array:
    """ᾱ_i − β̄_i per stored sample (Fig. 6)."""
    alpha_bar, beta_bar = rates_in_use(state, config)
    return alpha_bar - beta_bar


def focus_indices(state: DistillState, config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
    """Per class, the stored index with the largest ᾱ − β̄ (stability-focused) and the smallest (plasticity-focused),
    Fig. 6; each ``(K,)``."""
    diff = rate_difference(state, config).reshape(-1, config.ipc)
    offset = jnp.arange(diff.shape[0]) * config.ipc
    return offset + jnp.argmax(diff, axis=1), offset + jnp.argmin(diff, axis=1)


def focus_images(state: DistillState, config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
    """``{"stability": (K, H, W, C), "plasticity": (K, H, W, C)}``: per class, the stored image with the largest /
    smallest ᾱ − β̄ (the paper's Fig. 6 panels b / a)."""
    stable_idx, plastic_idx = focus_indices(state, config)
    stored = state.synthetic.extras["stored"]
    return {"stability": stored[stable_idx], "plasticity": stored[plastic_idx]}


def summarize(state: DistillState, config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
    """What a staged run keeps at each domain's end: per-sample ``alpha_bar``, ``beta_bar`` (the rates in use, eq. 8;
    constants for Finetune / + L_stable, the assignment for linear), their means, and the Fig. 6 focus images
    (stored, model space) ``focus_stability`` / ``focus_plasticity``, each ``(K, H, W, C)``."""
    alpha_bar, beta_bar = rates_in_use(state, config)
    focus = focus_images(state, config)
    return {"alpha_bar": alpha_bar, "beta_bar": beta_bar, "alpha_bar_mean": jnp.mean(alpha_bar),
            "beta_bar_mean": jnp.mean(beta_bar), "focus_stability": focus["stability"],
            "focus_plasticity": focus["plasticity"]}
