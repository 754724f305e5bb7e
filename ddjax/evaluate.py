"""The evaluation protocol of dataset distillation: train fresh networks on a (synthetic) set, test on real data.

Reference: DM's ``evaluate_synset`` (``VICO-UoE/DatasetCondensation:utils.py``), used by DC/DSA/DM and, with
``lr_net`` = the learned ``syn_lr``, by MTT. The reference trains ONE network per call with
``SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)``, minibatches of 256 from a shuffled ``DataLoader``
(``drop_last=False``), DSA applied per sample (unseeded) to every training batch, ``range(Epoch + 1)`` epochs
and, after epoch ``Epoch // 2 + 1``, ``lr *= 0.1`` with a *re-created* optimizer (so the momentum buffer restarts);
test accuracy is read after the last epoch.

``protocol="idc"`` is IDC's evaluation instead (``snu-mllab/Efficient-Dataset-Condensation:train.py``,
``argument.py``; DREAM+ evaluates with it too): ``MultiStepLR(milestones=[2E//3, 5E//6], gamma=0.2)`` stepped per
epoch with no optimizer re-creation (so no momentum reset), IDC's DiffAug per sample (:func:`ddjax.augment.idc_augment`:
flip and colour every batch, one of the other groups per batch, cutout dropped while CutMix is on) and CutMix with
probability ``cutmix_p`` per batch (:func:`ddjax.augment.cutmix`, loss ``r CE(y) + (1 - r) CE(y_π)``). IDC's
batch size (64) and ``mix_p`` (0.5 for CIFAR, SVHN, (Fashion-)MNIST) are the caller's ``batch_size`` and
``cutmix_p``. IDC reads test accuracy after the last epoch too (its "best" is over ``num_val`` checkpoints that
coincide with the last one on these datasets).

ddjax runs ``num_seeds`` such trainings as ONE jitted program: ``vmap`` over seeds of a ``lax.scan`` over epochs
(one fresh permutation per epoch) of a ``lax.scan`` over the epoch's SGD steps. The data stay one array on device
and each step gathers its minibatch by index, so the same function trains teachers on full real data (60,000
Fashion-MNIST images) without materialising any epoch's batches. The per-seed initialisation is a separate
small jitted program (:func:`init_networks`), so its PRNG-heavy compilation is shared by every epochs/batch
configuration. Where ddjax differs from the reference, on purpose:

- ``epochs=E`` trains exactly ``E`` epochs (the reference trains ``E + 1``); the lr drops ×0.1 at the start of
  epoch ``E // 2`` (0-based), i.e. after ``E // 2`` epochs (the reference after ``E // 2 + 2`` of ``E + 1``).
  Like the reference the momentum buffer is reset at the drop. ``lr_decay=False`` keeps the lr constant
  (MTT's expert training).
- Each epoch has ``ceil(N / B)`` steps with ``B = min(batch_size, N)``. The last batch of an epoch is filled up
  to ``B`` by wrapping around the epoch's permutation; the wrapped images get loss weight 0, so the loss and its
  gradient are the mean over the real remainder exactly as the reference's short last batch. (Batch-norm
  batch statistics of that one step do see the wrapped images; instance norm, the default, is per sample.)

Weight decay is PyTorch-style coupled L2 on every parameter (norm affines and biases included, as the
reference): ``g <- g + wd * theta``; ``buf <- momentum * buf + g``; ``theta <- theta - lr * buf``
(``optax.chain(add_decayed_weights(wd), sgd(schedule, momentum))``). Batch-norm models train on batch statistics,
update their running averages every step, and are tested with the running averages.

Performance note (XLA CPU, measured with jax 0.10.2): inside a ``while``/``scan`` body XLA CPU leaves the conv
kernel-gradient in a non-canonical layout and runs it ~100x slower than outside a loop; the training speed of
this module therefore depends on the model's conv computing its kernel gradient in canonical form (see the
models' conv VJP).
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ddjax import sam, sharding
from ddjax.augment import DSAParams, cutmix, dsa, idc_augment, parse_strategy
from ddjax.errors import ConfigError, check_choice
from ddjax.models import apply_model, init_model

__all__ = ["EvalResult", "PROTOCOLS", "accuracy", "epoch_batches", "evaluate_synthetic", "init_networks",
           "lr_schedule", "make_optimizer", "random_real_subset", "train_networks"]

Variables = dict[str, Any]

#: The reference's evaluation augmentation (DM ``main_DM.py`` default ``--dsa_strategy``).
DEFAULT_DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"
SEED_AXES = ("vmap", "map")
SEED_LOOP_OVERRIDE: str | None = None  # benchmarks set this to compare the two seed axes
#: Factor applied to the learning rate at half the epochs (reference ``lr *= 0.1``).
LR_DROP_FACTOR = 0.1
#: Evaluation protocols: DM's ``evaluate_synset`` and IDC's ``train.py`` (module docstring).
PROTOCOLS = ("dm", "idc")
#: IDC's MultiStepLR: milestones at these fractions of the epochs (``2E//3``, ``5E//6``), ×0.2 at each.
IDC_MILESTONES = ((2, 3), (5, 6))
IDC_LR_GAMMA = 0.2


class EvalResult(NamedTuple):
    """Test accuracies of ``num_seeds`` independently initialised networks.

    ``mean`` and ``std`` are over seeds; ``std`` is the population standard deviation (``ddof=0``, numpy's
    default, as ``np.std`` in the reference's reporting).
    """

    per_seed: np.ndarray
    mean: float
    std: float

    def to_dict(self) -> dict[str, Any]:
        """``{"mean", "std", "per_seed"}`` with plain Python floats (JSON-ready)."""
        return {"mean": float(self.mean), "std": float(self.std),
                "per_seed": [float(a) for a in np.asarray(self.per_seed).ravel()]}

    @classmethod
    def from_accuracies(cls, per_seed: Any) -> EvalResult:
        """Build from per-seed accuracies (population std)."""
        per_seed = np.asarray(per_seed, dtype=np.float64)
        return cls(per_seed=per_seed, mean=float(np.mean(per_seed)), std=float(np.std(per_seed)))


# --------------------------------------------------------------------------------------------------- schedule


def lr_drop_step(epochs: int, steps_per_epoch: int) -> int:
    """The first SGD step (0-based) that uses the dropped lr: the start of epoch ``epochs // 2``."""
    return (epochs // 2) * steps_per_epoch


def idc_milestones(epochs: int) -> tuple[int, ...]:
    """IDC's MultiStepLR milestones ``(2E//3, 5E//6)``: the lr is ×0.2 from the start of each of these (0-based)
    epochs on, ×0.04 after both."""
    return tuple(epochs * num // den for num, den in IDC_MILESTONES)


def lr_schedule(lr: Any, epochs: int, steps_per_epoch: int, *, lr_decay: bool = True,
                protocol: str = "dm") -> optax.Schedule:
    """Step -> learning rate. ``"dm"``: ``lr`` for the first ``epochs // 2`` epochs, then ``lr * 0.1`` (constant
    ``lr`` if ``not lr_decay`` or ``epochs < 2``). ``"idc"``: ``lr * 0.2^m`` with ``m`` the number of
    :func:`idc_milestones` at or before the step's epoch. ``lr`` may be a traced scalar (no recompilation)."""
    if protocol == "idc" and lr_decay:
        scales: dict[int, float] = {}
        for milestone in idc_milestones(epochs):  # a repeated milestone decays twice, as PyTorch's Counter
            boundary = milestone * steps_per_epoch
            scales[boundary] = scales.get(boundary, 1.0) * IDC_LR_GAMMA
        return optax.piecewise_constant_schedule(lr, scales)
    drop = lr_drop_step(epochs, steps_per_epoch)
    if not lr_decay or drop == 0:
        return optax.constant_schedule(lr)
    return optax.piecewise_constant_schedule(lr, {drop: LR_DROP_FACTOR})


def make_optimizer(lr: Any, momentum: Any, weight_decay: Any, epochs: int, steps_per_epoch: int, *,
                   lr_decay: bool = True, protocol: str = "dm") -> optax.GradientTransformation:
    """PyTorch ``SGD(lr, momentum, weight_decay)``: ``g + wd*theta`` first, then momentum, then the lr."""
    schedule = lr_schedule(lr, epochs, steps_per_epoch, lr_decay=lr_decay, protocol=protocol)
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(schedule, momentum=momentum))


def _reset_momentum(opt_state: Any, reset: jax.Array) -> Any:
    """Zero every momentum buffer (``optax.TraceState``) where ``reset`` is true; other state is kept."""
    def f(s: Any) -> Any:
        if isinstance(s, optax.TraceState):
            return optax.TraceState(trace=jax.tree.map(lambda t: jnp.where(reset, jnp.zeros_like(t), t), s.trace))
        return s
    return jax.tree.map(f, opt_state, is_leaf=lambda s: isinstance(s, optax.TraceState))


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    r"""Per-sample cross-entropy against target distributions: :math:`-\sum_k t_k \log\mathrm{softmax}(z)_k`."""
    return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)


# ----------------------------------------------------------------------------------------------- validation


def _check_int(what: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_float(what: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False) -> None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a real number, got {value!r}") from None
    ok = math.isfinite(v) and (v > low if low_open else v >= low) and v < high
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high})"
        raise ConfigError(f"{what} must be finite and in {interval}, got {v!r}")


def _resolve_num_classes(model: nn.Module, num_classes: int | None) -> int:
    model_k = getattr(model, "num_classes", None)
    if num_classes is None:
        if model_k is None:
            raise ConfigError(f"cannot tell the number of classes of {type(model).__name__}; pass num_classes=")
        return int(model_k)
    k = _check_int("num_classes", num_classes)
    if model_k is not None and int(model_k) != k:
        raise ConfigError(f"num_classes={k} but the model has {model_k} outputs; build the model with "
                          f"num_classes={k} or drop the argument")
    return k


def _check_images(what: str, images: Any) -> tuple[int, ...]:
    shape = tuple(np.shape(images))
    if len(shape) != 4 or min(shape) < 1:
        raise ConfigError(f"{what} must be non-empty NHWC images (N, H, W, C), got shape {shape}")
    return shape


def _check_labels(what: str, labels: Any, n: int, num_classes: int, *, allow_soft: bool) -> bool:
    """Validate labels; return True for soft (N, K) probabilities, False for int (N,) classes."""
    labels_np = np.asarray(labels)
    if labels_np.shape[:1] != (n,):
        raise ConfigError(f"{what} has {labels_np.shape[0] if labels_np.ndim else 0} entries but there are {n} "
                          "images; pass one label per image")
    if labels_np.ndim == 1 and np.issubdtype(labels_np.dtype, np.integer):
        if n and (labels_np.min() < 0 or labels_np.max() >= num_classes):
            raise ConfigError(f"{what} must lie in [0, {num_classes}), got values in "
                              f"[{labels_np.min()}, {labels_np.max()}]; relabel or set num_classes")
        return False
    if allow_soft and labels_np.ndim == 2 and np.issubdtype(labels_np.dtype, np.floating):
        if labels_np.shape[1] != num_classes:
            raise ConfigError(f"soft {what} have {labels_np.shape[1]} columns but the model has {num_classes} "
                              "classes; pass (N, num_classes) probabilities")
        if not np.all(np.isfinite(labels_np)):
            raise ConfigError(f"soft {what} contain NaN or inf; pass finite probabilities")
        return True
    kinds = "int (N,) classes or float (N, K) probabilities" if allow_soft else "int (N,) classes"
    raise ConfigError(f"{what} must be {kinds}, got dtype {labels_np.dtype} shape {labels_np.shape}")


def _seed_keys(key: Any, num_seeds: int) -> jax.Array:
    """One key -> ``split(key, num_seeds)``; a stack of ``num_seeds`` keys is used as is."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    single_ndim = 0 if typed else 1
    if not typed and (key.dtype != jnp.uint32 or key.ndim < 1):
        raise ConfigError(f"key must be a jax.random key (or a stack of per-seed keys), got dtype {key.dtype} "
                          f"shape {key.shape}; use jax.random.key(seed)")
    if key.ndim == single_ndim:
        return jax.random.split(key, num_seeds)
    if key.ndim == single_ndim + 1 and key.shape[0] == num_seeds:
        return key
    raise ConfigError(f"key must be one key or a stack of num_seeds={num_seeds} keys, got shape {key.shape}")


# ---------------------------------------------------------------------------------------------- training


def _split_seed_key(seed_key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One seed's key -> (init, permutation, augmentation) keys."""
    k_init, k_perm, k_aug = jax.random.split(seed_key, 3)
    return k_init, k_perm, k_aug


def epoch_batches(key: jax.Array, n: int, steps_per_epoch: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """One epoch's minibatches: indices ``(steps, B)`` into the data and loss weights ``(steps, B)``.

    A fresh permutation of ``n`` is cut into ``steps_per_epoch`` batches of ``B``; the slots past ``n`` (only in
    the last batch) wrap around to the permutation's start and get weight 0, so every image has weight 1 exactly
    once per epoch.
    """
    perm = jax.random.permutation(key, n)
    pos = jnp.arange(steps_per_epoch * batch_size)
    idx = perm[pos % n].reshape(steps_per_epoch, batch_size)
    weight = (pos < n).astype(jnp.float32).reshape(steps_per_epoch, batch_size)
    return idx, weight


def init_networks(key: Any, model: nn.Module, image_shape: tuple[int, int, int], *, num_seeds: int) -> Variables:
    """The initial variables that :func:`train_networks` with the same ``key``/``num_seeds`` starts from.

    Stacked over seeds (leading axis ``num_seeds``); e.g. the start of an expert trajectory.
    """
    num_seeds = _check_int("num_seeds", num_seeds)
    seed_keys = _seed_keys(key, num_seeds)
    shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else ()
    if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
                                  for d in shape):
        raise ConfigError(f"image_shape must be (H, W, C) with positive ints, got {image_shape!r}")
    return _init_core(seed_keys, model=model, image_shape=tuple(int(d) for d in shape))


@functools.partial(jax.jit, static_argnames=("model", "image_shape"))
def _init_core(seed_keys: jax.Array, *, model: nn.Module, image_shape: tuple[int, int, int]) -> Variables:
    """Per-seed initial variables, vmapped. A separate jitted program from :func:`_train_core` so that its
    (PRNG-heavy, slow on CPU) compilation is shared by every epochs/batch-size configuration."""
    return jax.vmap(lambda k: init_model(model, _split_seed_key(k)[0], image_shape))(seed_keys)


EXPERT_SHARPNESS_VARIANTS = ("sam", "asam", "gsam")  # stateless ones (ddjax.sam); FTD's flat experts use gsam


def _check_sharpness(sharpness: Any) -> tuple[str, float, float]:
    """``(variant, rho, alpha)`` validated: a stateless :mod:`ddjax.sam` variant, rho > 0, alpha >= 0."""
    if not (isinstance(sharpness, (tuple, list)) and len(sharpness) == 3):
        raise ConfigError(f"sharpness must be (variant, rho, alpha), got {sharpness!r}")
    variant, rho, alpha = sharpness
    check_choice("sharpness variant", variant, EXPERT_SHARPNESS_VARIANTS)
    _check_float("sharpness rho", rho, low=0.0, low_open=True)
    _check_float("sharpness alpha", alpha, low=0.0)
    return str(variant), float(rho), float(alpha)


def _sharpness_aware_gradient(loss: Any, params: Any, grads: Any, sharpness: tuple[str, float, float]) -> Any:
    """The gradient at ``params + ε`` (ε from :func:`ddjax.sam.sam_perturbation`); GSAM's descent for ``"gsam"``."""
    variant, rho, alpha = sharpness
    eps = sam.sam_perturbation(grads, rho, variant=variant, params=params)
    g_perturbed = jax.grad(loss)(optax.tree.add(params, eps))
    return sam.gsam_descent(grads, g_perturbed, alpha) if variant == "gsam" else g_perturbed


@functools.partial(jax.jit, static_argnames=("model", "epochs", "steps_per_epoch", "batch_size", "dsa_strategy",
                                             "dsa_params", "lr_decay", "num_classes", "seed_axis", "snapshots",
                                             "sharpness", "protocol", "cutmix_p"))
def _train_core(init_variables: Variables, seed_keys: jax.Array, images: jax.Array, labels: jax.Array,
                lr: jax.Array, momentum: jax.Array, weight_decay: jax.Array, *, model: nn.Module, epochs: int,
                steps_per_epoch: int, batch_size: int, dsa_strategy: str, dsa_params: DSAParams, lr_decay: bool,
                num_classes: int, seed_axis: str = "vmap", snapshots: bool = False,
                sharpness: tuple[str, float, float] | None = None, protocol: str = "dm",
                cutmix_p: float = 0.0) -> Variables:
    """The jitted program: ``vmap`` over seeds of ``scan`` over epochs of ``scan`` over steps (see module doc).

    ``snapshots``: also return the parameters at initialisation and after every epoch (expert trajectories),
    stacked as ``(seeds, epochs + 1, ...)``. ``sharpness``: ``(variant, rho, alpha)`` trains with a sharpness-aware
    gradient (:mod:`ddjax.sam`; FTD's flat experts use ``("gsam", rho, alpha)``). ``protocol``/``cutmix_p``: see
    the module docstring."""
    n = images.shape[0]
    soft = labels.ndim == 2
    tx = make_optimizer(lr, momentum, weight_decay, epochs, steps_per_epoch, lr_decay=lr_decay, protocol=protocol)
    drop = lr_drop_step(epochs, steps_per_epoch)
    reset_at_drop = protocol == "dm" and lr_decay and drop > 0  # DM re-creates its optimizer; IDC's scheduler not

    def one_seed(variables: Variables, seed_key: jax.Array) -> Variables:
        _, k_perm, k_aug = _split_seed_key(seed_key)
        params = variables["params"]
        state = {k: v for k, v in variables.items() if k != "params"}
        opt_state = tx.init(params)

        def step(carry, inputs):
            params, state, opt_state = carry
            idx, weight, t = inputs
            x = images[idx]
            y = labels[idx]
            targets = y if soft else jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
            k_step = jax.random.fold_in(k_aug, t)
            if dsa_strategy and protocol == "idc":
                x = idc_augment(k_step, x, dsa_strategy, params=dsa_params, cutout=cutmix_p == 0)
            elif dsa_strategy:
                x = dsa(k_step, x, dsa_strategy, per_sample=True, params=dsa_params)
            if cutmix_p > 0:
                # CE is linear in the targets: mixing them is IDC's r CE(y) + (1 - r) CE(y_perm).
                x, perm, kept = cutmix(jax.random.fold_in(k_step, 1), x, cutmix_p)
                targets = kept * targets + (1.0 - kept) * targets[perm]

            def loss_fn(p):
                logits, new_vars = apply_model(model, {"params": p, **state}, x, train=True)
                loss = jnp.sum(soft_cross_entropy(logits, targets) * weight) / jnp.sum(weight)
                return loss, new_vars

            grads, new_vars = jax.grad(loss_fn, has_aux=True)(params)
            if sharpness is not None:
                grads = _sharpness_aware_gradient(lambda p: loss_fn(p)[0], params, grads, sharpness)
            if reset_at_drop:
                opt_state = _reset_momentum(opt_state, t == drop)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            state = {k: new_vars[k] for k in state}
            return (params, state, opt_state), None

        def epoch(carry, e):
            idx, weight = epoch_batches(jax.random.fold_in(k_perm, e), n, steps_per_epoch, batch_size)
            t = e * steps_per_epoch + jnp.arange(steps_per_epoch)
            carry, _ = jax.lax.scan(step, carry, (idx, weight, t))
            return carry, (carry[0] if snapshots else None)

        (params, state, _), trajectory = jax.lax.scan(epoch, (params, state, opt_state), jnp.arange(epochs))
        if snapshots:
            start = variables["params"]
            trajectory = jax.tree.map(lambda p0, ps: jnp.concatenate([p0[None], ps]), start, trajectory)
            return {"params": params, **state, "trajectory": trajectory}
        return {"params": params, **state}

    if seed_axis == "map":
        return jax.lax.map(lambda args: one_seed(*args), (init_variables, seed_keys))
    return jax.vmap(one_seed)(init_variables, seed_keys)


def train_networks(key: Any, model: nn.Module, images: Any, labels: Any, *, num_seeds: int, epochs: int,
                   lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 256,
                   dsa_strategy: str = DEFAULT_DSA_STRATEGY, dsa_params: DSAParams | None = None,
                   num_classes: int | None = None, lr_decay: bool = True, seed_axis: str | None = None,
                   trajectory: bool = False, sharpness: tuple[str, float, float] | None = None,
                   protocol: str = "dm", cutmix_p: float = 0.0, mesh: Any = None) -> Variables:
    """Train ``num_seeds`` freshly initialised copies of ``model`` on ``(images, labels)``; one jitted program.

    Protocol (DM ``evaluate_synset``, see the module docstring for the exact differences): SGD with momentum and
    PyTorch-style weight decay on all parameters, ``epochs`` epochs of ``ceil(N / min(batch_size, N))`` steps
    over a fresh permutation each epoch (every image seen once per epoch), lr ×0.1 from epoch ``epochs // 2``
    with the momentum buffer reset there, DSA per sample on every batch unless ``dsa_strategy`` is
    ``""``/``"none"``, cross-entropy against int labels or soft ``(N, K)`` target distributions.

    Args:
      key: a ``jax.random`` key, split into ``num_seeds`` per-seed keys; or already a stack of ``num_seeds``
        per-seed keys (seed ``i`` then trains exactly as a one-seed call with ``key[i:i+1]``).
      model: a flax module (ddjax ConvNet/ResNet18); it is a static argument of the jitted program.
      images: ``(N, H, W, C)`` float images; labels: int ``(N,)`` or float ``(N, K)`` probabilities.
      num_seeds, epochs, batch_size: positive ints. lr (> 0), momentum (in [0, 1)), weight_decay (>= 0) are
        traced, so changing them (e.g. MTT's learned lr) does not recompile; neither do new data values of the
        same shapes.
      dsa_params: ``DSAParams()`` when None. num_classes: defaults to ``model.num_classes``.
      lr_decay: False keeps the lr constant (MTT expert training), True drops it ×0.1 at half the epochs.
      seed_axis: how the seeds share the one program: ``"vmap"`` (batched; the default on GPU/TPU) or ``"map"``
        (``lax.map``, seeds one after another; the default on CPU, where XLA runs the grouped convolutions that
        vmapping over different kernels produces several times slower than plain ones — measured in
        docs/results.md). Both give the same result (tested).
      trajectory: also return ``"trajectory"``: the parameters at initialisation and after every epoch, each leaf
        shaped ``(num_seeds, epochs + 1, ...)`` (MTT's expert trajectories, :mod:`ddjax.experts`).
      sharpness: ``(variant, rho, alpha)`` to descend a sharpness-aware gradient instead of the plain one
        (:func:`ddjax.sam.sharpness_aware_gradient`; FTD's flat experts: ``("gsam", rho, alpha)``).
      protocol: ``"dm"`` (above) or ``"idc"``: IDC's MultiStepLR, IDC's DiffAug (module docstring).
      cutmix_p: CutMix probability per batch (IDC's ``mix_p``; 0 = off), with either protocol.
      mesh: a ``jax.sharding.Mesh`` (e.g. the run's ``data`` mesh): the seeds are split over its devices
        (:func:`ddjax.sharding.map_over_seeds`; K = 8 on 8 devices trains one seed a device at once), each seed
        trained exactly as without a mesh. None: all seeds on the default device.
    Returns:
      The trained variables (``{"params", ...}``, ``batch_stats`` for batch-norm models), every leaf with a
      leading axis of size ``num_seeds``.
    """
    num_seeds = _check_int("num_seeds", num_seeds)
    epochs = _check_int("epochs", epochs)
    batch_size = _check_int("batch_size", batch_size)
    _check_float("lr", lr, low=0.0, low_open=True)
    _check_float("momentum", momentum, low=0.0, high=1.0)
    _check_float("weight_decay", weight_decay, low=0.0)
    check_choice("evaluation protocol", protocol, PROTOCOLS)
    _check_float("cutmix_p", cutmix_p, low=0.0)
    if float(cutmix_p) > 1.0:
        raise ConfigError(f"cutmix_p is a probability in [0, 1], got {cutmix_p}")
    shape = _check_images("images", images)
    k = _resolve_num_classes(model, num_classes)
    soft = _check_labels("labels", labels, shape[0], k, allow_soft=True)
    strategy = "" if not parse_strategy(dsa_strategy) else dsa_strategy
    params = DSAParams() if dsa_params is None else dsa_params
    if not isinstance(params, DSAParams):
        raise ConfigError(f"dsa_params must be a ddjax.augment.DSAParams, got {type(params).__name__}")
    seed_keys = _seed_keys(key, num_seeds)
    if seed_axis is None:
        seed_axis = SEED_LOOP_OVERRIDE or ("map" if jax.default_backend() == "cpu" else "vmap")
    check_choice("seed_axis", seed_axis, SEED_AXES)

    n = shape[0]
    b = min(batch_size, n)
    steps_per_epoch = -(-n // b)
    init_variables = _init_core(seed_keys, model=model, image_shape=tuple(int(d) for d in shape[1:]))
    return sharding.map_over_seeds(
        _train_core, mesh, (init_variables, seed_keys),
        (jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.float32 if soft else jnp.int32),
         jnp.float32(lr), jnp.float32(momentum), jnp.float32(weight_decay)),
        model=model, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=b, dsa_strategy=strategy,
        dsa_params=params, lr_decay=bool(lr_decay), num_classes=k, seed_axis=seed_axis, snapshots=bool(trajectory),
        sharpness=None if sharpness is None else _check_sharpness(sharpness), protocol=protocol,
        cutmix_p=float(cutmix_p))


# ---------------------------------------------------------------------------------------------- accuracy


@functools.partial(jax.jit, static_argnames=("model",))
def _correct_counts(model: nn.Module, stacked_variables: Variables, x: jax.Array, y: jax.Array,
                    valid: jax.Array) -> jax.Array:
    """Number of correct argmax predictions among the valid rows, per seed: ``(num_seeds,)`` int32."""
    def one(variables):
        logits, _ = apply_model(model, variables, x, train=False)
        return jnp.sum((jnp.argmax(logits, axis=-1) == y) & valid, dtype=jnp.int32)
    return jax.vmap(one)(stacked_variables)


def accuracy(model: nn.Module, stacked_variables: Variables, images: Any, labels: Any,
             batch_size: int = 1024) -> np.ndarray:
    """Top-1 accuracy of each seed's network (eval mode: batch norm uses running averages).

    Runs a Python loop over test chunks of ``batch_size`` images (the last chunk padded and masked, so one
    compilation), each chunk one jitted call vmapped over seeds; peak memory grows with
    ``num_seeds * batch_size``. Returns ``(num_seeds,)`` float64 accuracies in [0, 1].
    """
    batch_size = _check_int("batch_size", batch_size)
    shape = _check_images("images", images)
    k = _resolve_num_classes(model, None) if getattr(model, "num_classes", None) is not None else None
    labels_np = np.asarray(labels)
    if k is not None:
        _check_labels("labels", labels_np, shape[0], k, allow_soft=False)
    elif labels_np.shape != (shape[0],) or not np.issubdtype(labels_np.dtype, np.integer):
        raise ConfigError(f"labels must be int (N,) classes for {shape[0]} images, got shape {labels_np.shape}")
    leaves = jax.tree.leaves(stacked_variables)
    if not leaves or any(jnp.ndim(a) < 1 for a in leaves) or len({np.shape(a)[0] for a in leaves}) != 1:
        raise ConfigError("stacked_variables must have a leading seed axis on every leaf; pass what "
                          "train_networks returned")

    n = shape[0]
    b = min(batch_size, n)
    images_np = np.asarray(images, np.float32)
    labels_np = labels_np.astype(np.int32)
    correct = np.zeros(np.shape(leaves[0])[0], np.int64)
    for start in range(0, n, b):
        x = images_np[start:start + b]
        y = labels_np[start:start + b]
        m = len(y)
        valid = np.arange(b) < m
        if m < b:
            x = np.concatenate([x, np.zeros((b - m,) + x.shape[1:], x.dtype)])
            y = np.concatenate([y, np.zeros(b - m, y.dtype)])
        correct += np.asarray(_correct_counts(model, stacked_variables, x, y, valid), np.int64)
    return correct / n


def evaluate_synthetic(key: Any, model: nn.Module, images: Any, labels: Any, test_images: Any, test_labels: Any,
                       *, num_seeds: int, epochs: int, test_batch_size: int = 1024,
                       **train_kwargs: Any) -> EvalResult:
    """Train ``num_seeds`` networks on ``(images, labels)`` (:func:`train_networks`, ``train_kwargs`` passed on)
    and test them on ``(test_images, test_labels)`` (:func:`accuracy`): the DM ``evaluate_synset`` protocol,
    ``num_seeds`` = the reference's ``num_eval``. Returns per-seed accuracies, their mean and population std."""
    _check_images("test_images", test_images)
    variables = train_networks(key, model, images, labels, num_seeds=num_seeds, epochs=epochs, **train_kwargs)
    return EvalResult.from_accuracies(accuracy(model, variables, test_images, test_labels,
                                               batch_size=test_batch_size))


# ------------------------------------------------------------------------------------------------ baseline


def random_real_subset(key: Any, images: Any, labels: Any, ipc: int, num_classes: int) -> tuple[Any, Any]:
    """``ipc`` random real images per class, drawn without replacement, in class-major order.

    The "random real images, same IPC" baseline of the DD papers (and the reference's ``init='real'``).
    Returns ``(images[idx], labels[idx])`` with ``idx`` class 0's picks, then class 1's, ...; labels int32.
    Raises ConfigError if some class has fewer than ``ipc`` images.
    """
    ipc = _check_int("ipc", ipc)
    num_classes = _check_int("num_classes", num_classes)
    shape = tuple(np.shape(images))
    if len(shape) < 1:
        raise ConfigError(f"images must have a leading sample axis, got shape {shape}")
    _check_labels("labels", labels, shape[0], num_classes, allow_soft=False)
    labels_np = np.asarray(labels)
    picks = []
    for c in range(num_classes):
        members = np.flatnonzero(labels_np == c)
        if len(members) < ipc:
            raise ConfigError(f"class {c} has {len(members)} images, fewer than ipc={ipc}; lower ipc")
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, c), len(members)))
        picks.append(members[order[:ipc]])
    idx = np.concatenate(picks)
    return images[idx], labels_np[idx].astype(np.int32)
