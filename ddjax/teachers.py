"""Teacher pools: networks trained once on real data, one sampled per distillation step (IID's class
centralization runs the synthetic images through a pretrained teacher).

Reference (``VincenDen/IID:DM+ours/pre_model.py``): ``num_premodels`` ResNet-18s (the DC/DM ``ResNet18``, instance
norm) each trained from scratch with SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256, constant lr, no
augmentation, for 40 epochs (the paper says 30); every distillation step loads a random one (``get_premodel``).
ddjax trains all ``num_teachers`` in ONE jitted program (:func:`ddjax.evaluate.train_networks`) and keeps them as one
pytree whose leaves have a leading teacher axis; :func:`sample_teacher` picks one inside a jitted step::

    pool = train_teachers(key, model, images, labels, num_teachers=8, epochs=30)
    variables = sample_teacher(k, pool)          # one teacher's {"params", ...}, traced index: jit-safe

The launcher stores pools with :mod:`ddjax.pretrained` keyed by :func:`teacher_spec` (everything that determines the
networks), so every run with the same data and teacher settings reuses one pool.
"""
from __future__ import annotations

from typing import Any, TextIO

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ddjax import evaluate, models, pretrained
from ddjax.errors import ConfigError

__all__ = ["default_teacher_config", "build_teacher_model", "train_teachers", "sample_teacher", "pool_size",
           "teacher_embed", "teacher_spec", "load_or_make_teachers", "check_teacher_embedding", "KIND"]

#: The :mod:`ddjax.pretrained` kind of teacher pools.
KIND = "teachers"


def default_teacher_config() -> ml_collections.ConfigDict:
    """Teacher-pool settings (``config.<algorithm>.teacher``): the reference ``pre_model.py`` values, except that
    the pool is 8 networks (the reference: 1,000) and 30 epochs (the paper; the code: 40)."""
    return ml_collections.ConfigDict(dict(
        model="resnet18", width=64, depth=3, norm="instance",   # depth: ConvNet only
        num_teachers=8, epochs=30, lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=256,
        dsa_strategy="none",   # the reference trains teachers without augmentation
        lr_decay=False,        # constant lr, as pre_model.py
        seed=0,
    ))


def build_teacher_model(tc: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    """The teacher network described by ``tc`` (validated names)."""
    return models.build_model(tc.model, num_classes, width=tc.width, depth=tc.depth, norm=tc.norm)


def train_teachers(key: jax.Array, model: nn.Module, images: Any, labels: Any, *, num_teachers: int, epochs: int,
                   lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 256,
                   dsa_strategy: str = "none", lr_decay: bool = False, num_classes: int | None = None,
                   seed_axis: str | None = None, mesh: Any = None) -> dict:
    """Train ``num_teachers`` fresh copies of ``model`` on real ``(images, labels)`` in one program.

    Defaults are the reference ``pre_model.py`` values (SGD 0.01, momentum 0.9, wd 5e-4, constant lr, no
    augmentation). ``mesh``: the teachers are split over its devices (:func:`ddjax.sharding.map_over_seeds`).
    Returns stacked variables: every leaf has a leading axis of size ``num_teachers``.
    """
    return evaluate.train_networks(key, model, images, labels, num_seeds=num_teachers, epochs=epochs, lr=lr,
                                   momentum=momentum, weight_decay=weight_decay, batch_size=batch_size,
                                   dsa_strategy=dsa_strategy, lr_decay=lr_decay, num_classes=num_classes,
                                   seed_axis=seed_axis, mesh=mesh)


def pool_size(pool: Any) -> int:
    """Number of teachers in a stacked pool."""
    leaves = jax.tree.leaves(pool)
    if not leaves:
        raise ConfigError("the teacher pool is empty; make it with python -m launch.teachers --config=...")
    return int(np.shape(leaves[0])[0])


def sample_teacher(key: jax.Array, pool: Any) -> tuple[Any, jax.Array]:
    """One teacher drawn uniformly from ``pool``: ``(variables, index)``; the index is traced (jit-safe)."""
    index = jax.random.randint(key, (), 0, pool_size(pool))
    return jax.tree.map(lambda leaf: leaf[index], pool), index


def teacher_embed(model: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
    """A teacher's embeddings (pooled features before its head) of ``images``, ``(N, D)``.

    Eval mode: a batch-norm teacher uses its running statistics, so one image's embedding does not depend on the
    rest of the batch (the reference's instance-norm ResNet-18 behaves the same in either mode).
    """
    out, _ = models.apply_model(model, variables, images, train=False, output="embed")
    return out


def teacher_spec(tc: ml_collections.ConfigDict, data_config: ml_collections.ConfigDict, num_classes: int,
                 image_shape: tuple[int, int, int], num_train: int) -> dict:
    """Everything that determines a teacher pool (the :mod:`ddjax.pretrained` key): data, preprocessing, model and
    training settings, seed."""
    return {
        "dataset": str(data_config.name), "zca": bool(data_config.zca),
        "zca_regularization": float(data_config.zca_regularization) if data_config.zca else None,
        "num_classes": int(num_classes), "image_shape": [int(d) for d in image_shape], "num_train": int(num_train),
        "model": str(tc.model), "width": int(tc.width), "depth": int(tc.depth) if tc.model == "convnet" else None,
        "norm": str(tc.norm), "num_teachers": int(tc.num_teachers), "epochs": int(tc.epochs), "lr": float(tc.lr),
        "momentum": float(tc.momentum), "weight_decay": float(tc.weight_decay), "batch_size": int(tc.batch_size),
        "dsa_strategy": str(tc.dsa_strategy), "lr_decay": bool(tc.lr_decay), "seed": int(tc.seed),
    }


def check_teacher_config(tc: ml_collections.ConfigDict) -> None:
    """Raise ConfigError on a bad teacher setting (one line, the field named)."""
    for name in ("num_teachers", "epochs", "batch_size", "width"):
        value = tc[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"teacher.{name} must be an integer >= 1, got {value!r}")
    if not tc.lr > 0:
        raise ConfigError(f"teacher.lr must be > 0, got {tc.lr}")
    models.build_model(tc.model, 2, width=tc.width, depth=tc.depth, norm=tc.norm)  # validates names


def check_teacher_embedding(model: nn.Module, pool: Any, images: np.ndarray) -> None:
    """Raise ConfigError when teacher 0's embedding does not depend on the input (e.g. instance norm on a 1×1
    map: ResNet-18's last stage on 8×8 images), which would make class centralization a constant."""
    variables = jax.tree.map(lambda leaf: jnp.asarray(leaf[0]), pool)
    emb = np.asarray(teacher_embed(model, variables, jnp.asarray(images)))
    if emb.shape[0] > 1 and float(np.max(np.std(emb, axis=0))) < 1e-6:
        raise ConfigError(f"the teacher's embedding is the same for every image (model {type(model).__name__}, "
                          "norm on a 1x1 map?); use teacher.norm=batch or a ConvNet teacher for such small images")


def load_or_make_teachers(config: ml_collections.ConfigDict, tc: ml_collections.ConfigDict, dataset: Any, *,
                          allow_make: bool | None = None, stream: TextIO | None = None,
                          config_hint: str = "<this run's config file>", mesh: Any = None
                          ) -> tuple[Any, str, nn.Module]:
    """Load the teacher pool ``tc`` describes for ``dataset``, or train and store it (when allowed).

    ``allow_make`` defaults to ``config.make_pretrained``; ``config.pretrained_dir`` is the store's root. Returns
    ``(stacked variables, path, teacher model)``; ``mesh``: the teachers train split over its devices; raises DataNotFoundError naming the command that makes the pool.
    """
    check_teacher_config(tc)
    model = build_teacher_model(tc, dataset.num_classes)
    spec = teacher_spec(tc, config.data, dataset.num_classes, dataset.image_shape, len(dataset.train_labels))

    def make() -> Any:
        return train_teachers(jax.random.PRNGKey(tc.seed), model, dataset.train_images, dataset.train_labels,
                              num_teachers=tc.num_teachers, epochs=tc.epochs, lr=tc.lr, momentum=tc.momentum,
                              weight_decay=tc.weight_decay, batch_size=tc.batch_size, dsa_strategy=tc.dsa_strategy,
                              lr_decay=tc.lr_decay, num_classes=dataset.num_classes, mesh=mesh)

    allow = bool(config.get("make_pretrained", True)) if allow_make is None else allow_make
    pool, path = pretrained.load_or_make(
        KIND, spec, make, root=config.get("pretrained_dir"), allow_make=allow,
        how_to_make=f"python -m launch.teachers --config={config_hint} plus this run's --config.* overrides",
        stream=stream)
    return pool, path, model
