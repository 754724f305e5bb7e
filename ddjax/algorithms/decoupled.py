r"""Decoupled distillation (squeeze → recover → relabel): SRe2L and RDED, and the pieces DD for DG's DTL shares.

- squeeze: :mod:`ddjax.squeeze`, made in ``prepare`` (kept in the pretrained store, keyed by the seen domains);
- recover: an ``(init, step)`` pair. SRe2L (Yin et al., 2023; ``VILA-Lab/SRe2L:recover/data_synthesis.py``)
  optimises noise images with Adam(0.25, betas (0.5, 0.9)), cosine lr, each step a random flip and a random
  forward roll of 0..``H/8`` pixels (the reference's 32 of 224, 4 of 32 for CIFAR), loss
  :math:`\mathrm{CE}(\phi(x), y) + r_{bn}\sum_l \rho_l\,(\|\mu_l(x) - \mu_l^{run}\|_2 + \|\sigma^2_l(x) -
  \sigma^{2,run}_l\|_2)` with :math:`\rho_1 = 10` (``first_bn_multiplier``), else 1; images clipped to the valid
  pixel range after every step. Batches are *class-first* (each holds ``batch_ipc`` images of every class); every
  batch has its own Adam state and runs ``iterations`` steps (the launcher's ``steps`` = iterations × batches).
  RDED (Sun et al., 2024; ``LINs-lab/RDED:synthesize``) selects and stitches real patches (``rded_select``).
- relabel: :func:`ddjax.relabel.relabel` in ``eval_view`` (soft labels on augmented views).

"SRe2L per domain" (DD for DG Sec. 3.1): ``sre2l.per_domain`` trains one squeeze model per seen domain and gives
each domain ``ipc / E`` of every class's images (config ``ipc`` = E × the per-domain IPC), recovered from and
relabelled by its own domain's model.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ddjax import models, relabel as relabel_lib, squeeze
from ddjax.algorithms.base import Algorithm, DistillState, RealPool, SyntheticSet
from ddjax.augment.views import random_flip, random_resized_crop
from ddjax.data.domains import collection_from_config
from ddjax.errors import ConfigError
from ddjax.losses import bn_statistics_loss



class RecoverData(flax.struct.PyTreeNode):
    """What ``prepare`` gives a recover step: the squeeze variables (stacked over seen domains, leading axis E,
    for per-domain SRe2L; else a leading axis of 1), the normalised value of pixel 0 and 1 per channel (images
    are clipped there), DTL's domain styles (per style layer ``(m (E, C), s (E, C))``) and RDED's images."""
    teacher: Any
    pixel_low: jax.Array
    pixel_high: jax.Array
    styles: Any = None
    images: Any = None


# ------------------------------------------------------------------------------------------ config sections


def squeeze_config() -> ml_collections.ConfigDict:
    """The ``squeeze`` section: DD for DG Sec. 4.1 defaults (ImageNet-pretrained there; from scratch here)."""
    return ml_collections.ConfigDict(dict(
        model="resnet18",           # squeeze network (batch norm)
        width=64,                   # first-stage width (64 = ResNet-18); small widths for CPU configs
        steps=5000, batch_size=32,  # ERM steps; images per seen domain per step (DomainBed)
        lr=5e-5, betas=[0.9, 0.999],
        bn="trained",               # trained | frozen (needs checkpoint: DomainBed freeze_bn)
        augment=True,               # random resized crop (0.7-1), flip, colour jitter 0.3, grayscale 0.1
        flip=True,                  # False for digits (not mirror-symmetric)
        seed=0,
        checkpoint="",              # orbax dir of pretrained {"params", "batch_stats"} (docs/domain_generalization.md)
    ))


def relabel_config() -> ml_collections.ConfigDict:
    """The ``relabel`` section: soft labels on ``views`` augmented copies of every synthetic image."""
    return ml_collections.ConfigDict(dict(
        views=10,                   # views per image (FKD: one per validation epoch)
        temperature=4.0,            # teacher softmax temperature
        crop_scale=[0.08, 1.0],     # RandomResizedCrop scale (SRe2L relabel)
        cutmix_alpha=1.0,
        flip=True,                  # False for digits
        seed=0,
    ))


def sre2l_config() -> ml_collections.ConfigDict:
    """``config.sre2l``: recover hyper-parameters of ``VILA-Lab/SRe2L`` (``recover_cifar.sh``)."""
    return ml_collections.ConfigDict(dict(
        iterations=1000,            # Adam steps per batch (CIFAR script: 1000)
        batch_ipc=0,                # images of every class per batch (0: all of them, one batch)
        lr=0.25, betas=[0.5, 0.9],
        r_bn=0.01, first_bn_multiplier=10.0,
        flip=True,                  # recover augmentation: random flip (False for digits) and a roll of <= H/8
        per_domain=False,           # "SRe2L per domain": one squeeze model per seen domain
        squeeze=squeeze_config(),
        relabel=relabel_config(),
    ))


def rded_config() -> ml_collections.ConfigDict:
    """``config.rded``: ``LINs-lab/RDED`` (CIFAR-10 script: factor 1, num_crop 5, mipc 300)."""
    return ml_collections.ConfigDict(dict(
        factor=1,                   # stitch factor x factor patches into one image
        num_crop=5,                 # random crops scored per candidate image
        mipc=300,                   # candidate real images per class
        crop_scale=[0.08, 1.0],
        squeeze=squeeze_config(),
        relabel=relabel_config(),
    ))


# ------------------------------------------------------------------------------------------------ batches


def recover_batches(num_classes: int, ipc: int, batch_ipc: int, *, num_groups: int = 1
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Index batches into a class-major set of ``num_classes * ipc`` images: ``(batches (num_batches, K * b), group
    of each batch (num_batches,))``.

    The ``ipc`` images of a class are split into ``num_groups`` equal blocks (per-domain groups); each block into
    chunks of ``b = batch_ipc``; a batch holds one chunk of every class, class-major: SRe2L's class-first batch, or
    DTL's K class-wise batches ``S_{1,m} .. S_{K,m}`` side by side.
    """
    if ipc % num_groups:
        raise ConfigError(f"ipc={ipc} must be a multiple of the {num_groups} seen domains for a per-domain set; "
                          f"set --config.ipc to a multiple of {num_groups}")
    per_group = ipc // num_groups
    batch_ipc = batch_ipc or per_group
    if per_group % batch_ipc:
        raise ConfigError(f"batch_ipc={batch_ipc} must divide the {per_group} images per class and group")
    batches, groups = [], []
    for g in range(num_groups):
        for m in range(per_group // batch_ipc):
            j = g * per_group + m * batch_ipc + np.arange(batch_ipc)
            batches.append((np.arange(num_classes)[:, None] * ipc + j[None]).reshape(-1))
            groups.append(g)
    return np.stack(batches).astype(np.int32), np.asarray(groups, np.int32)


def check_steps(config: Any, name: str, iterations: int, num_batches: int) -> None:
    """The launcher's ``steps`` must be ``iterations × num_batches`` (every batch gets its iterations)."""
    if config.steps != iterations * num_batches:
        raise ConfigError(f"{name} runs {iterations} iterations on each of {num_batches} batches: set "
                          f"--config.steps={iterations * num_batches} (got {config.steps})")


def roll_jitter(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
    """SRe2L's random roll of the whole batch: ``off = random.randint(0, jitter)`` per axis, then ``torch.roll(x,
    shifts=(off1, off2))``, i.e. forward by 0..``max_shift`` pixels (``VILA-Lab/SRe2L:recover/data_synthesis.py``)."""
    k_y, k_x = jax.random.split(key)
    dy = jax.random.randint(k_y, (), 0, max_shift + 1)
    dx = jax.random.randint(k_x, (), 0, max_shift + 1)
    return jnp.roll(images, (dy, dx), axis=(1, 2))


def recover_augment(key: jax.Array, images: jax.Array, flip: bool = True) -> jax.Array:
    """Flip and roll (SRe2L recover's augmentation; its 224-pixel random resized crop is left out on small images)."""
    k_flip, k_roll = jax.random.split(key)
    x = random_flip(k_flip, images) if flip else images
    return roll_jitter(k_roll, x, max(1, images.shape[1] // 8))


def pick(tree: Any, index: jax.Array) -> Any:
    """Entry ``index`` of every leaf's leading axis."""
    return jax.tree.map(lambda x: x[index], tree)


def batched_image_step(state: DistillState, data: RecoverData, *, batches: np.ndarray, groups: np.ndarray,
                       steps_per_visit: int, tx: optax.GradientTransformation,
                       loss_fn: Callable[..., tuple[jax.Array, tuple[dict, Any]]],
                       tx_aux: optax.GradientTransformation | None = None) -> tuple[DistillState, dict]:
    """One recover step on batch ``b = (step // steps_per_visit) mod num_batches`` with that batch's own image
    optimiser state (``state.opt_state["images"]``, stacked over batches) and the shared ``state.extras["aux"]``
    parameters (DTL's ψ; ``None`` otherwise) with ``state.opt_state["aux"]``.

    ``loss_fn(images, aux, labels, teacher, group, data, key) -> (loss, (metrics, _))``, differentiated in both
    ``images`` and ``aux``. Images are clipped to the valid pixel range after the update."""
    b = (state.step // steps_per_visit) % batches.shape[0]
    idx = jnp.asarray(batches)[b]
    group = jnp.asarray(groups)[b]
    x = state.synthetic.images[idx]
    y = state.synthetic.labels[idx]
    teacher = pick(data.teacher, group if jax.tree.leaves(data.teacher)[0].shape[0] > 1 else 0)
    key = jax.random.fold_in(state.rng, state.step)
    aux = state.extras.get("aux")
    (loss, (metrics, _)), (gx, gaux) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
        x, aux, y, teacher, group, data, key)
    opt_b = pick(state.opt_state["images"], b)
    updates, opt_b = tx.update(gx, opt_b, x)
    x = jnp.clip(optax.apply_updates(x, updates), data.pixel_low, data.pixel_high)
    opt_images = jax.tree.map(lambda s, v: s.at[b].set(v), state.opt_state["images"], opt_b)
    opt_state = {**state.opt_state, "images": opt_images}
    extras = {**state.extras, "teacher": data.teacher}
    if tx_aux is not None:
        aux_updates, opt_aux = tx_aux.update(gaux, state.opt_state["aux"], aux)
        extras["aux"] = optax.apply_updates(aux, aux_updates)
        opt_state["aux"] = opt_aux
    synthetic = state.synthetic.replace(images=state.synthetic.images.at[idx].set(x))
    new_state = state.replace(step=state.step + 1, synthetic=synthetic, opt_state=opt_state, extras=extras)
    return new_state, {"loss": loss, "batch": b, **metrics}


def init_batched(key: jax.Array, synthetic: SyntheticSet, *, batches: np.ndarray, tx: optax.GradientTransformation,
                 teacher_shape: Any, aux: Any = None, tx_aux: optax.GradientTransformation | None = None
                 ) -> DistillState:
    """State of a batched recover: per-batch image optimiser states, a zero teacher slot (the step fills it from
    ``data``, so ``eval_view`` can relabel from the state alone), optional shared ``aux`` parameters."""
    images = synthetic.images
    per_batch = jax.vmap(lambda i: tx.init(images[i]))(jnp.asarray(batches))
    opt_state: dict[str, Any] = {"images": per_batch}
    extras: dict[str, Any] = {"teacher": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), teacher_shape)}
    if tx_aux is not None:
        opt_state["aux"] = tx_aux.init(aux)
        extras["aux"] = aux
    return DistillState(step=jnp.zeros((), jnp.int32), rng=key, synthetic=synthetic, opt_state=opt_state,
                        extras=extras)


def image_optimizer(lr: float, betas: Sequence[float], iterations: int) -> optax.GradientTransformation:
    """Adam with a cosine lr over one batch's ``iterations`` (SRe2L recover)."""
    return optax.adam(optax.cosine_decay_schedule(lr, iterations), b1=betas[0], b2=betas[1])


def teacher_shape(squeeze_cfg: Any, num_classes: int, image_shape: tuple[int, int, int], copies: int) -> Any:
    """Abstract squeeze variables stacked ``copies`` times (one per teacher)."""
    model = squeeze.build_squeeze_model(squeeze_cfg, num_classes)
    one = jax.eval_shape(lambda: models.init_model(model, jax.random.PRNGKey(0), image_shape))
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct((copies,) + s.shape, s.dtype), one)


# ------------------------------------------------------------------------------------------------- SRe2L


def sre2l_loss(x: jax.Array, aux: Any, y: jax.Array, teacher: dict, group: jax.Array, data: RecoverData,
               key: jax.Array, *, model: nn.Module, r_bn: float, first_bn_multiplier: float, flip: bool = True
               ) -> tuple[jax.Array, tuple[dict, Any]]:
    """SRe2L's recover loss on one (augmented) batch: CE + r_bn Σ_l ρ_l BN-statistics loss."""
    del aux, group, data
    logits, layers = models.bn_inputs(model, teacher, recover_augment(key, x, flip))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    bn = sum((first_bn_multiplier if i == 0 else 1.0) * bn_statistics_loss(maps, rm, rv)
             for i, (maps, rm, rv) in enumerate(layers))
    return ce + r_bn * bn, ({"ce": ce, "bn": bn}, None)


def make_sre2l(config: Any, model: nn.Module, num_classes: int, image_shape: tuple[int, int, int],
               mesh: Any = None) -> Algorithm:
    """SRe2L's recover as an ``(init, step)`` pair (class-first batches; one Adam state per batch)."""
    del model, mesh
    hp = config.sre2l
    groups_n = num_seen_domains(config) if hp.per_domain else 1
    batches, groups = recover_batches(num_classes, config.ipc, hp.batch_ipc, num_groups=groups_n)
    check_steps(config, "sre2l", hp.iterations, len(batches))
    tx = image_optimizer(hp.lr, hp.betas, hp.iterations)
    squeeze_model = squeeze.build_squeeze_model(hp.squeeze, num_classes)
    loss = functools.partial(sre2l_loss, model=squeeze_model, r_bn=hp.r_bn,
                             first_bn_multiplier=hp.first_bn_multiplier, flip=hp.flip)
    shape = teacher_shape(hp.squeeze, num_classes, image_shape, groups_n)
    init = functools.partial(init_batched, batches=batches, tx=tx, teacher_shape=shape)
    step = functools.partial(batched_image_step, batches=batches, groups=groups, steps_per_visit=hp.iterations,
                             tx=tx, loss_fn=loss)
    return Algorithm(init=init, step=step)


# ------------------------------------------------------------------------------------------ seen domains


def staged(config: Any) -> bool:
    """Whether the run is over a domain collection (``config.domains.source`` set)."""
    return bool("domains" in config and config.domains.source)


def num_seen_domains(config: Any) -> int:
    """How many domains a phase learns from: every domain but the held-out one under ``leave_one_out``."""
    if not staged(config):
        return 1
    names = [n for n in str(config.domains.names).split(",") if n.strip()]
    total = len(names) if names else collection_from_config(config).num_domains  # names: no data needed to count them
    return total - 1 if config.domains.plan == "leave_one_out" else total


def seen_domains(config: Any, dataset: Any) -> tuple[list[str], list[tuple[np.ndarray, np.ndarray]]]:
    """The seen domains of a phase as ``(names, [(images, labels), ...])``.

    A staged run's phase dataset is the union ``<collection>/<d1>+<d2>+...`` (``DomainCollection.load_many``); each
    seen domain is loaded again on its own. A plain dataset is one domain."""
    if not staged(config) or "/" not in dataset.name:
        return [dataset.name], [(dataset.train_images, dataset.train_labels)]
    collection = collection_from_config(config)
    names = dataset.name.split("/", 1)[1].split("+")
    parts = [collection.load(collection.index(n)) for n in names]
    return names, [(p.train_images, p.train_labels) for p in parts]


def pixel_range(dataset: Any) -> tuple[jax.Array, jax.Array]:
    """Normalised values of pixels 0 and 1 per channel (``(p - mean) / std``)."""
    mean, std = np.asarray(dataset.mean, np.float32), np.asarray(dataset.std, np.float32)
    return jnp.asarray((0.0 - mean) / std), jnp.asarray((1.0 - mean) / std)


def load_teachers(config: Any, hp: Any, dataset: Any, *, per_domain: bool, stream: Any = None
                  ) -> tuple[Any, list[str], list[tuple[np.ndarray, np.ndarray]]]:
    """Squeeze variables stacked on a leading axis (one per seen domain if ``per_domain``, else one model on all
    seen domains), with the seen domains' names and data."""
    names, domains = seen_domains(config, dataset)
    base = dataset.name.split("/", 1)[0]
    groups = [([n], [d]) for n, d in zip(names, domains)] if per_domain else [(names, domains)]
    teachers = []
    for seen, data in groups:
        variables, _ = squeeze.load_or_make_squeeze(
            hp.squeeze, base, seen, data, mean=dataset.mean, std=dataset.std, num_classes=dataset.num_classes,
            root=config.pretrained_dir, allow_make=config.make_pretrained, stream=stream)
        teachers.append(variables)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *teachers), names, domains


def prepare_sre2l(config: Any, dataset: Any, real: RealPool, mesh: Any, stream: Any) -> RecoverData:
    """SRe2L's step data: the squeeze model(s) of the seen domains (made and stored when missing)."""
    del real, mesh
    hp = config.sre2l
    teachers, _, _ = load_teachers(config, hp, dataset, per_domain=hp.per_domain, stream=stream)
    low, high = pixel_range(dataset)
    return RecoverData(teacher=teachers, pixel_low=low, pixel_high=high)


# -------------------------------------------------------------------------------------------------- RDED


@functools.partial(jax.jit, static_argnames=("model", "ipc", "factor", "num_crop", "crop_scale"))
def rded_select(key: jax.Array, model: nn.Module, teacher: dict, candidates: jax.Array, *, ipc: int, factor: int,
                num_crop: int, crop_scale: tuple[float, float]) -> tuple[jax.Array, jax.Array]:
    """RDED for every class (``LINs-lab/RDED:synthesize/utils.py``): ``candidates`` ``(K, M, H, W, C)`` real
    images; each gets ``num_crop`` square random resized crops (``MultiRandomCrop``: ``RandomResizedCrop(H //
    factor, ratio=(1, 1))``), scored by the teacher's CE on the patch zero-padded (centred) to ``H × W``
    (``selector``'s ``pad``); the lowest-CE crop of each image is kept, the ``ipc * factor²`` lowest of those per
    class are stitched ``factor × factor`` into ``ipc`` images with ``mix_images``' layout: grid slot ``k``
    (row-major) of image ``i`` holds the patch ranked ``k * ipc + i``. Returns ``(images (K*ipc, H, W, C), mean
    CE)``. (ddjax crops at ``H × W`` and resizes to ``H/factor``; RDED resizes the box to ``H/factor`` directly.)"""
    num_classes, m, h, w, c = candidates.shape
    ph, pw = h // factor, w // factor
    top, left = (h - ph) // 2, (w - pw) // 2   # RDED's pad: the smaller half of the padding above / left

    def one_class(k, label, images):
        crops = jax.vmap(lambda kk: random_resized_crop(kk, images, scale=crop_scale, ratio=(1.0, 1.0)))(
            jax.random.split(k, num_crop))
        crops = crops.reshape((num_crop * m, h, w, c))
        small = jax.image.resize(crops, (num_crop * m, ph, pw, c), "linear") if factor > 1 else crops
        scored = (jnp.pad(small, ((0, 0), (top, h - ph - top), (left, w - pw - left), (0, 0))) if factor > 1
                  else small)
        logits = model.apply(teacher, scored, train=False)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.full(num_crop * m, label)).reshape(num_crop, m)
        best = jnp.argmin(ce, axis=0)
        best_ce = jnp.min(ce, axis=0)
        patches = small.reshape((num_crop, m, ph, pw, c))[best, jnp.arange(m)]
        order = jnp.argsort(best_ce)[:ipc * factor * factor]
        chosen = patches[order].reshape((factor, factor, ipc, ph, pw, c))   # [row, col, image]: rank k * ipc + i
        stitched = chosen.transpose(2, 0, 3, 1, 4, 5).reshape((ipc, factor * ph, factor * pw, c))
        if factor * ph != h or factor * pw != w:
            stitched = jax.image.resize(stitched, (ipc, h, w, c), "linear")
        return stitched, jnp.mean(best_ce[order])

    keys = jax.random.split(key, num_classes)
    # one class at a time (lax.map, not vmap): the teacher scores num_crop * M crops per class; all K classes at
    # once held 12-13.5 GB on styled Fashion-MNIST (K 10, M 300, 28x28) and was OOM-killed on a 23 GB machine;
    # one at a time peaks at 3.5 GB and gives bit-identical images (checked, docs/results.md)
    images, ce = jax.lax.map(lambda a: one_class(*a), (keys, jnp.arange(num_classes), candidates))
    return images.reshape((num_classes * ipc, h, w, c)), jnp.mean(ce)


def prepare_rded(config: Any, dataset: Any, real: RealPool, mesh: Any, stream: Any) -> RecoverData:
    """RDED's step data: the squeeze model and the selected, stitched images (``rded.mipc`` candidates per class)."""
    del mesh
    from ddjax.algorithms.base import sample_per_class  # noqa: PLC0415
    hp = config.rded
    smallest = int(np.min(np.asarray(real.counts)))
    mipc = min(hp.mipc, smallest)
    if config.ipc * hp.factor ** 2 > mipc:  # each candidate image gives its one best crop
        raise ConfigError(f"rded needs ipc * factor^2 = {config.ipc * hp.factor ** 2} patches per class, one per "
                          f"candidate image, from {mipc} candidate images (rded.mipc={hp.mipc}, "
                          f"smallest class {smallest}); lower --config.ipc or raise rded.mipc")
    teachers, _, _ = load_teachers(config, hp, dataset, per_domain=False, stream=stream)
    key = jax.random.PRNGKey(config.seed)
    candidates = sample_per_class(jax.random.fold_in(key, 1), real, mipc)
    model = squeeze.build_squeeze_model(hp.squeeze, dataset.num_classes)
    images, ce = rded_select(jax.random.fold_in(key, 2), model, pick(teachers, 0), candidates, ipc=config.ipc,
                             factor=int(hp.factor), num_crop=int(hp.num_crop),
                             crop_scale=tuple(float(v) for v in hp.crop_scale))
    low, high = pixel_range(dataset)
    return RecoverData(teacher=teachers, pixel_low=low, pixel_high=high, images=images, styles=ce)


def make_rded(config: Any, model: nn.Module, num_classes: int, image_shape: tuple[int, int, int],
              mesh: Any = None) -> Algorithm:
    """RDED has nothing to optimise: its one step copies the images ``prepare`` selected (``steps`` = 1)."""
    del model, mesh
    if config.steps != 1:
        raise ConfigError(f"rded selects its images in one step: set --config.steps=1 (got {config.steps})")
    shape = teacher_shape(config.rded.squeeze, num_classes, image_shape, 1)

    def init(key: jax.Array, synthetic: SyntheticSet) -> DistillState:
        teacher = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
        return DistillState(step=jnp.zeros((), jnp.int32), rng=key, synthetic=synthetic, opt_state={},
                            extras={"teacher": teacher})

    def step(state: DistillState, data: RecoverData) -> tuple[DistillState, dict]:
        synthetic = state.synthetic.replace(images=data.images)
        new = state.replace(step=state.step + 1, synthetic=synthetic, extras={**state.extras, "teacher": data.teacher})
        return new, {"loss": data.styles}

    return Algorithm(init=init, step=step)


# ------------------------------------------------------------------------------------------------ relabel


def relabel_view(state: DistillState, config: Any, name: str, *, psi_model: nn.Module | None = None,
                 dsm: bool = False) -> dict:
    """``eval_view`` of a decoupled method: the synthetic images relabelled by the squeeze model(s) kept in the
    state (per-domain SRe2L: each domain's block of every class by its own model), plus ψ's transfers for DTL."""
    hp = config[name]
    r = hp.relabel
    images = state.synthetic.images
    num_classes = int(state.synthetic.labels.shape[0] // config.ipc)
    model = squeeze.build_squeeze_model(hp.squeeze, num_classes)
    teachers = state.extras["teacher"]
    copies = jax.tree.leaves(teachers)[0].shape[0]
    key = jax.random.PRNGKey(r.seed)
    per_group = config.ipc // copies
    views, soft = [], []
    for g in range(copies):
        idx = (np.arange(num_classes)[:, None] * config.ipc + g * per_group + np.arange(per_group)).reshape(-1)
        v, s = relabel_lib.relabel(jax.random.fold_in(key, g), model, pick(teachers, g), images[idx],
                                   num_views=r.views, temperature=r.temperature, crop_scale=tuple(r.crop_scale),
                                   cutmix_alpha=r.cutmix_alpha, psi_model=psi_model,
                                   psi_params=state.extras.get("aux"), dsm=dsm, flip=r.flip)
        views.append(v)
        soft.append(s)
    return {"images": jnp.concatenate(views), "labels": jnp.concatenate(soft)}
