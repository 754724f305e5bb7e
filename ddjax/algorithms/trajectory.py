"""Trajectory matching: MTT (Cazenavette et al., CVPR 2022) and SATM (sharpness-aware trajectory matching).

**MTT.** Each step samples an expert ``e`` and a start epoch ``t < max_start_epoch``, starts a student at the
expert's snapshot θ*_t, runs N = ``syn_steps`` SGD steps on minibatches of the synthetic set ϕ with the learnable
rate α (:func:`ddjax.inner.student_steps`, per-sample DSA) and minimises

.. math:: \\mathcal{L}(\\phi, \\alpha) = \\frac{\\|\\theta_N - \\theta^*_{t+M}\\|^2}{\\|\\theta^*_t - \\theta^*_{t+M}\\|^2}

by differentiating through the unrolled steps; images and α use SGD with momentum 0.5 (``lr_img``, ``lr_lr``).

**SATM** (``satm-sharpness-aware-trajectory-matching``, §3) on the same loop, F(ϕ) = 𝓛(θ_N(ϕ)):

1. *Landscape smoothing* (§3.2): the ascent gradient is taken at ϕ̃, each image ϕ̃_j = ϕ_j + n_j,
   n_j ~ N(0, (γ‖ϕ_j‖₂)² I) (ddjax reads the paper's "N(0, γ‖ϕ_j‖)" as a standard deviation γ‖ϕ_j‖₂ per pixel).
2. *Truncated unrolling* (§3.3.1): only the last N − ι steps are differentiated (``truncate`` = ι).
3. *SAM on the outer loop*: ε = ρ ∇F(ϕ̃)/‖∇F(ϕ̃)‖₂ (or the ASAM/Vasso/GSAM variants of :mod:`ddjax.sam`).
4. *Trajectory reusing* (§3.3.2): the second unroll, on ϕ + ε, starts at θ_τ of the first (``reuse_at`` = τ,
   default ι) and runs the remaining N − τ steps on the same minibatches; its gradient updates ϕ.
5. *First-order learnable α* (eq. 12): ∂𝓛/∂α ≈ (∂𝓛/∂θ_N) · (−Σ_{i<N} ∇_θ L_CE(θ_i, ϕ)), from the first unroll,
   with no differentiation through the loop.

Options: EMA of the synthetic images (FTD; evaluated instead of the raw images), an easy-to-hard start-epoch
window (SATM-DA, after DATM), flat experts (SATM-FI: ``experts.sharpness``). MTT is the same step with no
perturbation, no noise, ι = 0 and α learned by autodiff; with those settings SATM's hypergradient equals MTT's.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, TextIO

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from jax.sharding import Mesh
from ml_collections import config_dict

from ddjax import augment, experts, inner, models, pretrained, sam
from ddjax.algorithms.base import Algorithm, DistillState, SyntheticSet, apply_gradients
from ddjax.errors import ConfigError, check_choice
from ddjax.sharding import split_batch

LR_GRADIENTS = ("autodiff", "first_order")
SAM_VARIANTS = ("none",) + sam.VARIANTS


def _experts_config() -> ml_collections.ConfigDict:
    """``config.<algo>.experts``: how the expert trajectories are trained (reference ``buffer.py`` values)."""
    return ml_collections.ConfigDict(dict(
        # lr: buffer.py's own --lr_teacher (0.01); the distillation's lr_teacher only initialises syn_lr.
        num_experts=100, epochs=50, lr=0.01, batch_size=256, momentum=0.0, weight_decay=0.0,
        dsa_strategy=config_dict.placeholder(str),   # None: the run's dsa_strategy
        seed=0,
        sharpness=ml_collections.ConfigDict(dict(variant="none", rho=0.01, alpha=0.4)),  # FTD flat experts: gsam
    ))


def _common_config() -> dict:
    # mtt-distillation distill.py defaults.
    return dict(syn_steps=20, expert_epochs=3, max_start_epoch=25, min_start_epoch=0, lr_img=1000.0, lr_lr=1e-5,
                lr_teacher=0.01, momentum=0.5, batch_syn=0,
                # jax.checkpoint each differentiated inner step; None = auto (resolved_remat)
                remat=config_dict.placeholder(bool),
                # lax.scan unroll of the differentiated inner steps; 0 = auto (resolved_scan_unroll)
                scan_unroll=0, experts=_experts_config())


def mtt_config() -> ml_collections.ConfigDict:
    """MTT hyper-parameters (``config.mtt``): reference ``distill.py`` defaults. ``batch_syn=0``: whole set."""
    return ml_collections.ConfigDict(dict(
        **_common_config(), truncate=0, lr_gradient="autodiff",
        sam=ml_collections.ConfigDict(dict(variant="none", rho=0.0, rho_relative=False, asam_eta=0.01,
                                           gsam_alpha=0.4, vasso_theta=0.9)),
        noise_gamma=0.0, reuse=False, reuse_at=config_dict.placeholder(int), ema_decay=0.0,
        window=ml_collections.ConfigDict(dict(initial_max_start_epoch=0, grow_steps=0))))


def satm_config() -> ml_collections.ConfigDict:
    """SATM hyper-parameters (``config.satm``). The paper's Table 6 values are not in the text we have; ρ and γ
    are ddjax's defaults (documented in docs/design.md), ι keeps the last third of the loop (paper §A.7/A.9)."""
    c = mtt_config()
    c.truncate = config_dict.placeholder(int)  # None: N − int(N/3) (keep the last third)
    c.lr_gradient = "first_order"
    c.sam.variant = "sam"
    # ‖ε‖ = 2 % of ‖ϕ‖ and smoothing std γ‖ϕ_j‖ per pixel, γ = 0.01 (γ√D = 0.08 on 8×8 digits): the sweep in
    # docs/results.md (the old absolute ρ = 0.01 moved the loss by 0.03 %, i.e. SAM was off).
    c.sam.rho = 0.02
    c.sam.rho_relative = True
    c.noise_gamma = 0.01
    c.reuse = True
    return c


def resolved_truncate(hp: ml_collections.ConfigDict) -> int:
    """ι: ``hp.truncate``, or N − int(N/3) when unset (the paper keeps the last third of the loop)."""
    n = hp.syn_steps
    return n - n // 3 if hp.truncate is None else int(hp.truncate)


def resolved_reuse_at(hp: ml_collections.ConfigDict) -> int:
    """τ: ``hp.reuse_at``, or ι when unset (the paper sets τ = ι)."""
    return resolved_truncate(hp) if hp.reuse_at is None else int(hp.reuse_at)


#: On CPU, ``scan_unroll=0`` rolls a differentiated stretch of at least this many inner steps and fully unrolls a
#: shorter one. Measured 2026-12-07 (idle 2-core CPU, ConvNet-3 w128, 32x32, batch 100; docs/performance.md, "Rolled
#: or unrolled, again"): rolled / unrolled seconds per step 1.20 at 5 differentiated steps (MTT N=5), 1.29 at 6 (SATM
#: N=20, iota=14), 1.25-1.28 at 20 (1.22 on tcmalloc) and 0.97 at 30 (MTT N=20 and N=30). Unrolled needs less
#: temporary memory (9.2 / 13.2 GB at 20, 13.7 / 19.3 GB at 30) but compiles slower (30 / 8 s at 20, 68 / 10 s at
#: 30; at N=80 266 / 6 s).
#: Rolling from 25 keeps N=20 unrolled and rolls N=30, where speed ties and the compile is 7x faster. A rolled stretch
#: is also rematerialised by default (:func:`resolved_remat`): at N=80 unrolled compiles in 505 s with 36.1 GB of
#: temp, rolled in 17 s with 49.9 GB, rolled + remat in 16 s with 0.79 GB (2026-12-07 late, a 119 GFLOP/s machine).
ROLL_FROM_STEPS = 25


def resolved_scan_unroll(hp: ml_collections.ConfigDict) -> int | bool:
    """``lax.scan``'s ``unroll`` for the differentiated inner steps: ``hp.scan_unroll`` when set (1 rolled, ``k``
    unroll factor, ``True`` fully unrolled); 0 (auto) is rolled (1) off CPU, and on CPU fully unrolled (``True``)
    when the differentiated stretch N − ι is shorter than :data:`ROLL_FROM_STEPS`, rolled otherwise."""
    if hp.scan_unroll:
        return hp.scan_unroll
    if jax.default_backend() != "cpu":
        return 1
    return 1 if _long_differentiated_stretch(hp) else True


def _long_differentiated_stretch(hp: ml_collections.ConfigDict) -> bool:
    """N − ι ≥ :data:`ROLL_FROM_STEPS`: the stretch the CPU auto rule rolls (and auto remat rematerialises)."""
    return hp.syn_steps - resolved_truncate(hp) >= ROLL_FROM_STEPS


def resolved_remat(hp: ml_collections.ConfigDict) -> bool:
    """Whether each differentiated inner step is rematerialised (``jax.checkpoint``): ``hp.remat`` when set; None
    (auto) is True exactly where the CPU auto rule rolls the loop (``scan_unroll=0``, N − ι ≥ :data:`ROLL_FROM_STEPS`).

    A rolled loop stacks every step's residuals: 19.3 / 31.5 / 49.9 GB of XLA temp at N = 30 / 50 / 80 (MTT,
    ConvNet-3 w128, 32x32, batch 100), more than the unrolled program (13.7 / 22.7 / 36.1 GB) and than a 23 GB
    machine holds from N = 50 (N = 30 too under tcmalloc). Rematerialised it needs 0.73-0.79 GB and, measured on
    the 2-core CPU at N = 30, ran no slower (59.2 s a step against 66.6 s on glibc: the recomputation costs 1.33x
    the FLOPs and saves the stacking's memory traffic and page faults; docs/performance.md, "Remat where the
    loop rolls"). Off CPU, and wherever ``scan_unroll`` is set, auto keeps every residual."""
    if hp.remat is not None:
        return bool(hp.remat)
    return jax.default_backend() == "cpu" and not hp.scan_unroll and _long_differentiated_stretch(hp)


def validate(hp: ml_collections.ConfigDict, num_images: int, name: str) -> None:
    """One-line ConfigErrors for every bad value, before tracing."""
    n = hp.syn_steps
    if n < 1:
        raise ConfigError(f"{name}.syn_steps must be >= 1, got {n}")
    iota = resolved_truncate(hp)
    if not 0 <= iota < n:
        raise ConfigError(f"{name}.truncate (iota) must satisfy 0 <= iota < syn_steps={n} so at least one step is "
                          f"differentiated, got {iota}")
    check_choice(f"{name}.lr_gradient", hp.lr_gradient, LR_GRADIENTS)
    check_choice(f"{name}.sam.variant", hp.sam.variant, SAM_VARIANTS)
    if hp.sam.rho < 0:
        raise ConfigError(f"{name}.sam.rho must be >= 0, got {hp.sam.rho}")
    if hp.noise_gamma < 0:
        raise ConfigError(f"{name}.noise_gamma must be >= 0, got {hp.noise_gamma}")
    if hp.reuse:
        tau = resolved_reuse_at(hp)
        if not iota <= tau < n:
            raise ConfigError(f"{name}.reuse_at (tau) must satisfy truncate={iota} <= tau < syn_steps={n}, got {tau}")
    if not 0 <= hp.ema_decay < 1:
        raise ConfigError(f"{name}.ema_decay must be in [0, 1), got {hp.ema_decay}")
    if hp.lr_img <= 0 or hp.lr_teacher <= 0 or hp.lr_lr < 0 or hp.experts.lr <= 0:
        raise ConfigError(f"{name}: lr_img, lr_teacher and experts.lr must be > 0 and lr_lr >= 0")
    batch = hp.batch_syn or num_images
    if not 1 <= batch <= num_images:
        raise ConfigError(f"{name}.batch_syn must be in [1, {num_images}] (num_classes*ipc) or 0 for all, got "
                          f"{hp.batch_syn}")
    w = hp.window
    if w.initial_max_start_epoch and not 0 < w.initial_max_start_epoch <= hp.max_start_epoch:
        raise ConfigError(f"{name}.window.initial_max_start_epoch must be in (0, max_start_epoch], got "
                          f"{w.initial_max_start_epoch}")
    if hp.min_start_epoch < 0 or hp.min_start_epoch >= (w.initial_max_start_epoch or hp.max_start_epoch):
        raise ConfigError(f"{name}.min_start_epoch must be in [0, max_start_epoch), got {hp.min_start_epoch}")


def _sq_dist(a: Any, b: Any) -> jax.Array:
    """‖a − b‖² over all leaves of two parameter pytrees."""
    return optax.tree.norm(optax.tree.sub(a, b), squared=True)


class TrajectoryExtras(NamedTuple):
    """MTT/SATM's own state (``DistillState.extras``)."""
    ema_images: jax.Array | None  # EMA of the images (FTD), evaluated instead of them; None when ema_decay = 0
    sam: Any                      # the perturbation's state (VaSSO's EMA direction; optax.EmptyState otherwise)


class Trajectory(NamedTuple):
    """Everything the step needs, resolved from ``hp`` once, eagerly (:func:`make_with`)."""
    hp: ml_collections.ConfigDict
    model: nn.Module
    image_shape: tuple[int, int, int]
    num_images: int
    iota: int                        # truncation ι: steps before it are not differentiated
    tau: int | None                  # trajectory reuse: the second unroll restarts at θ_τ (None: from θ_0)
    batch: int                       # inner-loop minibatch
    augment: Callable | None         # per-sample DSA of the inner loop
    batch_constraint: Callable | None  # the minibatch's split over the mesh
    scan_unroll: int | bool
    remat: bool                      # jax.checkpoint each differentiated inner step (resolved_remat)
    tx: optax.GradientTransformation  # on {"images", "lr"}
    perturbation: sam.Perturbation   # its state lives in TrajectoryExtras.sam; a no-op for MTT
    gradient: Callable               # (objective, sam_state, key, images, lr) -> ((loss, res), grads, state, info)
    lr_gradient: Callable            # (res, θ*, δ, autodiff's g_lr) -> g_lr
    ema: Callable                    # (ema_images, new images) -> ema_images


def mtt_gradient(objective: Callable, sam_state: Any, key: jax.Array, images: jax.Array, lr: jax.Array):
    """MTT: ``jax.value_and_grad`` of the objective in (images, α); no perturbation, so its state passes through."""
    del key
    (loss, res), grads = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(images, lr)
    return (loss, res), grads, sam_state, {}


def satm_gradient(perturbation: sam.Perturbation, noise_gamma: float, gsam_alpha: float | None,
                  objective: Callable, sam_state: Any, key: jax.Array, images: jax.Array, lr: jax.Array):
    """SATM: MTT's gradient at the perturbed, noise-smoothed images (:func:`ddjax.sam.value_and_grad`)."""
    return sam.value_and_grad(objective, perturbation, noise_gamma=noise_gamma, gsam_alpha=gsam_alpha)(
        sam_state, key, images, lr)


def _no_perturbation() -> sam.Perturbation:
    return sam.Perturbation(init=lambda params: optax.EmptyState(), perturb=lambda g, state, params=None: (g, state))


def _ema(decay: float, ema_images: jax.Array | None, images: jax.Array) -> jax.Array | None:
    """``decay · ema + (1 − decay) · images`` (FTD); None stays None (no EMA)."""
    return None if ema_images is None else decay * ema_images + (1 - decay) * images


def make_with(hp: ml_collections.ConfigDict, name: str, config: ml_collections.ConfigDict, model: nn.Module,
              num_classes: int, image_shape: tuple[int, int, int], mesh: Mesh | None = None) -> Algorithm:
    """Build the trajectory-matching ``(init, step)`` from hyper-parameters ``hp`` (a ``config.mtt``/``satm``)."""
    num_images = num_classes * config.ipc
    validate(hp, num_images, name)
    strategy = config.dsa_strategy
    augment.parse_strategy(strategy)
    use_sam = hp.sam.variant != "none" and hp.sam.rho > 0
    batch = hp.batch_syn or num_images
    # Data parallelism: each inner step's minibatch is split over the mesh's ``data`` axis (XLA all-reduces the
    # student's gradient); a batch the devices do not divide is padded (ddjax.sharding's policy).
    what = f"{name}.batch_syn={batch}" if hp.batch_syn else f"{name}.batch_syn=0 (the whole set: {batch} images)"
    split = split_batch(mesh, batch, what)
    gradient, perturbation = mtt_gradient, _no_perturbation()
    if use_sam:
        perturbation = sam.perturbation(hp.sam.rho, variant=hp.sam.variant, eta=hp.sam.asam_eta,
                                        theta=hp.sam.vasso_theta, relative=bool(hp.sam.rho_relative))
        gsam_alpha = hp.sam.gsam_alpha if hp.sam.variant == "gsam" else None
        gradient = functools.partial(satm_gradient, perturbation, hp.noise_gamma, gsam_alpha)
    setup = Trajectory(
        hp=hp, model=model, image_shape=tuple(image_shape), num_images=num_images, iota=resolved_truncate(hp),
        tau=resolved_reuse_at(hp) if (use_sam and hp.reuse) else None, batch=batch,
        augment=functools.partial(_augment, strategy) if strategy and strategy != "none" else None,
        batch_constraint=split, scan_unroll=resolved_scan_unroll(hp), remat=resolved_remat(hp),
        tx=optax.partition({"images": optax.sgd(hp.lr_img, momentum=hp.momentum),
                            "lr": optax.sgd(hp.lr_lr, momentum=hp.momentum)}, {"images": "images", "lr": "lr"}),
        perturbation=perturbation, gradient=gradient,
        lr_gradient=_first_order_lr_grad if hp.lr_gradient == "first_order" else _autodiff_lr_grad,
        ema=functools.partial(_ema, hp.ema_decay))
    return Algorithm(functools.partial(trajectory_init, setup), functools.partial(trajectory_step, setup))


def _augment(strategy: str, key: jax.Array, x: jax.Array) -> jax.Array:
    return augment.dsa(key, x, strategy, per_sample=True)


def _ce(model: nn.Module, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    logits, _ = models.apply_model(model, {"params": params}, x, train=True)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def unroll(t: Trajectory, images: jax.Array, lr: jax.Array, labels: jax.Array, theta: Any, key: jax.Array,
           start: int, record_at: int | None = None) -> inner.InnerResult:
    """Student steps ``start .. N − 1`` on the synthetic set (:func:`ddjax.inner.student_steps`)."""
    n = t.hp.syn_steps
    return inner.student_steps(functools.partial(_ce, t.model), theta, images, labels, lr, key, num_steps=n - start,
                               batch_size=t.batch, start_step=start, total_steps=n, truncate=t.iota,
                               remat=t.remat, record_at=record_at, augment=t.augment,
                               batch_constraint=t.batch_constraint, scan_unroll=t.scan_unroll)


def trajectory_init(t: Trajectory, key: jax.Array, synthetic: SyntheticSet) -> DistillState:
    """The state: images, the learned α (``synthetic.extras["lr"]``, from ``lr_teacher``), their optimiser state,
    and :class:`TrajectoryExtras`."""
    if synthetic.images.shape != (t.num_images,) + t.image_shape:
        raise ConfigError(f"synthetic images have shape {synthetic.images.shape}, expected "
                          f"{(t.num_images,) + t.image_shape} (num_classes*ipc, H, W, C)")
    lr = jnp.asarray(t.hp.lr_teacher, jnp.float32)
    synthetic = synthetic.replace(extras={**synthetic.extras, "lr": lr})
    # the EMA gets its own buffer: the launcher donates the state
    extras = TrajectoryExtras(ema_images=jnp.copy(synthetic.images) if t.hp.ema_decay else None,
                              sam=t.perturbation.init(synthetic.images))
    return DistillState(step=jnp.zeros((), jnp.int32), rng=key, synthetic=synthetic,
                        opt_state=t.tx.init({"images": synthetic.images, "lr": lr}), extras=extras)


def max_start(hp: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """The upper end of the start-epoch window at ``step``: fixed, or (SATM-DA / DATM easy-to-hard) growing
    linearly from ``window.initial_max_start_epoch`` over ``window.grow_steps``."""
    window = hp.window
    if not window.initial_max_start_epoch:
        return jnp.asarray(hp.max_start_epoch)
    frac = jnp.clip(step / max(window.grow_steps, 1), 0.0, 1.0)
    grown = window.initial_max_start_epoch + frac * (hp.max_start_epoch - window.initial_max_start_epoch)
    return jnp.floor(grown).astype(jnp.int32)


def trajectory_step(t: Trajectory, state: DistillState, buffer: experts.ExpertBuffer
                    ) -> tuple[DistillState, dict[str, jax.Array]]:
    """One outer step (module doc): sample a segment, unroll the student, update images and α."""
    hp = t.hp
    rng, k_seg, k_inner, k_noise = jax.random.split(state.rng, 4)
    theta_start, theta_target, _, start_epoch = experts.sample_segment(
        k_seg, buffer, expert_epochs=hp.expert_epochs, max_start_epoch=max_start(hp, state.step),
        min_start_epoch=hp.min_start_epoch)
    denom = _sq_dist(theta_start, theta_target)
    images, labels, lr = state.synthetic.images, state.synthetic.labels, state.synthetic.extras["lr"]

    def objective(imgs, alpha, restart=None):
        """𝓛(ϕ, α). ``restart``: the first unroll's result, given to SAM's second evaluation; with trajectory
        reuse (τ set) that one starts at the recorded θ_τ (SATM §3.3.2), else again at θ*_t."""
        if restart is not None and t.tau is not None:
            res = unroll(t, imgs, alpha, labels, restart.params_at, k_inner, t.tau)
        else:
            res = unroll(t, imgs, alpha, labels, theta_start, k_inner, 0, record_at=t.tau if restart is None else None)
        return _sq_dist(res.params, theta_target) / denom, res

    lr_in = jax.lax.stop_gradient(lr) if hp.lr_gradient == "first_order" else lr
    (loss, res), (g_img, g_lr), sam_state, info = t.gradient(objective, state.extras.sam, k_noise, images, lr_in)
    g_lr = t.lr_gradient(res, theta_target, denom, g_lr)
    learned, opt_state = apply_gradients(t.tx, {"images": g_img, "lr": g_lr}, state.opt_state,
                                         {"images": images, "lr": lr})
    synthetic = state.synthetic.replace(images=learned["images"],
                                        extras={**state.synthetic.extras, "lr": learned["lr"]})
    extras = TrajectoryExtras(ema_images=t.ema(state.extras.ema_images, learned["images"]), sam=sam_state)
    new_state = state.replace(step=state.step + 1, rng=rng, synthetic=synthetic, opt_state=opt_state, extras=extras)
    metrics = dict(start_epoch=start_epoch.astype(jnp.float32), loss=loss, grad_norm=optax.tree.norm(g_img),
                   syn_lr=learned["lr"], **info)
    return new_state, metrics


def _autodiff_lr_grad(res: inner.InnerResult, theta_target: Any, denom: jax.Array, g_lr: jax.Array) -> jax.Array:
    """∂𝓛/∂α by differentiating through the unrolled steps (MTT): the gradient autodiff gave."""
    del res, theta_target, denom
    return g_lr


def _first_order_lr_grad(res: inner.InnerResult, theta_target: Any, denom: jax.Array, g_lr: Any = None
                         ) -> jax.Array:
    """SATM eq. 12 (``g_lr``, autodiff's, unused): ∂𝓛/∂α ≈ (∂𝓛/∂θ_N) · (−Σ_i ∇L_CE(θ_i)), ∂𝓛/∂θ_N = 2(θ_N − θ*)/δ."""
    d_theta = jax.tree.map(lambda a, b: 2.0 * (a - b) / denom, res.params, theta_target)
    return jax.lax.stop_gradient(-optax.tree.vdot(d_theta, res.grad_sum))


def make_mtt(config, model, num_classes, image_shape, mesh=None) -> Algorithm:
    """MTT's ``(init, step)``; hyper-parameters in ``config.mtt``."""
    return make_with(config.mtt, "mtt", config, model, num_classes, image_shape, mesh)


def make_satm(config, model, num_classes, image_shape, mesh=None) -> Algorithm:
    """SATM's ``(init, step)``; hyper-parameters in ``config.satm``."""
    return make_with(config.satm, "satm", config, model, num_classes, image_shape, mesh)


def expert_spec(config: ml_collections.ConfigDict, dataset: Any, hp: ml_collections.ConfigDict) -> dict:
    """Everything that determines the expert trajectories (the key of their store entry)."""
    e = hp.experts
    return {
        "dataset": dataset.name, "zca": bool(config.data.zca), "zca_regularization": float(config.data.zca_regularization),
        "num_train": int(dataset.train_images.shape[0]), "model": config.model.to_dict(),
        "num_experts": int(e.num_experts), "epochs": int(e.epochs), "lr": float(e.lr),
        "batch_size": int(e.batch_size), "momentum": float(e.momentum), "weight_decay": float(e.weight_decay),
        "dsa_strategy": e.dsa_strategy if e.dsa_strategy is not None else config.dsa_strategy, "seed": int(e.seed),
        "sharpness": e.sharpness.to_dict() if e.sharpness.variant != "none" else None,
    }


def make_expert_buffer(config: ml_collections.ConfigDict, dataset: Any, hp: ml_collections.ConfigDict,
                       mesh: Mesh | None = None) -> experts.ExpertBuffer:
    """Train the expert trajectories ``expert_spec`` describes (one jitted program; the experts split over the
    devices of ``mesh``)."""
    spec = expert_spec(config, dataset, hp)
    model = models.build_from_config(config.model, dataset.num_classes)
    sharp = spec["sharpness"]
    return experts.train_experts(
        jax.random.PRNGKey(spec["seed"]), model, dataset.train_images, dataset.train_labels,
        num_experts=spec["num_experts"], epochs=spec["epochs"], lr=spec["lr"], momentum=spec["momentum"],
        weight_decay=spec["weight_decay"], batch_size=spec["batch_size"], dsa_strategy=spec["dsa_strategy"],
        sharpness=None if sharp is None else (sharp["variant"], sharp["rho"], sharp["alpha"]),
        num_classes=dataset.num_classes, mesh=mesh)


def load_or_make_experts(config: ml_collections.ConfigDict, dataset: Any, hp: ml_collections.ConfigDict,
                         stream: TextIO | None = None, mesh: Mesh | None = None
                         ) -> tuple[experts.ExpertBuffer, str]:
    """The expert buffer for this config from the pretrained store, made first if missing and allowed."""
    spec = expert_spec(config, dataset, hp)
    tree, path = pretrained.load_or_make(
        "experts", spec, lambda: make_expert_buffer(config, dataset, hp, mesh).params, root=config.pretrained_dir,
        allow_make=config.make_pretrained, how_to_make="python -m launch.experts --config=<this config>",
        stream=stream)
    buffer = experts.ExpertBuffer(params=jax.tree.map(jnp.asarray, tree))
    return buffer, path


def check_buffer(buffer: experts.ExpertBuffer, model: nn.Module, image_shape: tuple[int, int, int],
                 where: str = "the expert buffer") -> None:
    """ConfigError unless ``buffer`` holds trajectories of ``model``'s parameters (same tree and leaf shapes)."""
    expected = jax.eval_shape(lambda: models.init_model(model, jax.random.PRNGKey(0), image_shape))["params"]
    want = jax.tree.map(lambda x: tuple(x.shape), expected)
    got = jax.tree.map(lambda x: tuple(x.shape[2:]), buffer.params)
    if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
        raise ConfigError(f"{where} does not hold parameters of this model ({config_model_text(model)}); remake the "
                          "experts with this config (python -m launch.experts --config=...)")


def config_model_text(model: nn.Module) -> str:
    fields = ("width", "depth", "norm", "num_classes")
    return ", ".join(f"{f}={getattr(model, f)}" for f in fields if hasattr(model, f))


def _prepare(name: str):
    def prepare(config, dataset, real, mesh, stream) -> experts.ExpertBuffer:
        hp = config[name]
        buffer, path = load_or_make_experts(config, dataset, hp, stream, mesh)
        model = models.build_from_config(config.model, dataset.num_classes)
        check_buffer(buffer, model, dataset.image_shape, where=f"the expert buffer at {path}")
        experts.check_segment(buffer.num_snapshots, hp.max_start_epoch, hp.expert_epochs, hp.min_start_epoch)
        return buffer
    return prepare


prepare_mtt = _prepare("mtt")
prepare_satm = _prepare("satm")


def eval_view(state: DistillState, hp: ml_collections.ConfigDict) -> dict:
    """What the launcher evaluates: the images (their EMA when ``ema_decay`` > 0) trained with the learned α
    (the reference evaluates MTT sets with ``lr_net = syn_lr``)."""
    images = state.extras.ema_images if hp.ema_decay else state.synthetic.images
    return {"images": images, "labels": state.synthetic.labels, "lr": state.synthetic.extras["lr"]}
