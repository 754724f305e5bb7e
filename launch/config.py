"""The config schema shared by every ``configs/*.py`` file, and its validation.

A config file's ``get_config()`` starts from :func:`base_config` and changes what it needs; the launcher calls
:func:`validate_config` before touching data, so a bad name or value fails in a second with one clear line.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from ddjax import algorithms, augment, evaluate, models
from ddjax.data import DATASET_NAMES
from ddjax.errors import ConfigError, check_choice

# Fields that may change between a run and its resumption without making the workdir "a different run".
RESUMABLE_FIELDS = ("steps", "log_every", "checkpoint_every", "eval.every", "keep_checkpoints",
                    "data.data_dir", "data.source_dir", "pretrained_dir",  # where the same data / networks live
                    "make_pretrained", "compilation_cache")


def base_config(algorithm: str = "dm") -> ml_collections.ConfigDict:
    """Every field the launcher reads, with the reference defaults (DM on digits)."""
    c = ml_collections.ConfigDict()
    c.algorithm = algorithm
    c.seed = 0
    c.ipc = 10                      # images per class
    c.steps = 1000                  # outer (distillation) steps
    c.init = "real"                 # synthetic init: real | noise
    c.dsa_strategy = "color_crop_cutout_flip_scale_rotate"
    c.log_every = 10
    c.checkpoint_every = 100
    c.keep_checkpoints = 2
    # Networks trained once and reused (expert trajectories, teacher pools; see ddjax.pretrained).
    c.pretrained_dir = config_dict.placeholder(str)  # None: $DDJAX_CACHE_DIR/pretrained or ~/.cache/ddjax/pretrained
    c.make_pretrained = True        # make missing ones on the fly; False: fail with the command that makes them
    # JAX's persistent compilation cache (launch.compile_cache): auto = $DDJAX_CACHE or <workdir's parent>/.jax_cache;
    # "off"; or a directory. A repeated or resumed run skips its compiles.
    c.compilation_cache = "auto"

    c.data = ml_collections.ConfigDict(dict(
        name="digits",              # digits (embedded) | fashion_mnist | any tfds dataset prepared in data_dir
        data_dir=config_dict.placeholder(str),    # tfds data dir (default ~/.cache/ddjax/tfds)
        source_dir=config_dict.placeholder(str),  # folder with Fashion-MNIST IDX .gz files
        zca=False,
        zca_regularization=0.1,
    ))
    # A run over several domains (ddjax.data.domains; launch.staged): off while source is "".
    c.domains = ml_collections.ConfigDict(dict(
        source="",                  # "" (off: one dataset, config.data) | rotated | styled | folder
        base="digits",              # rotated/styled: the dataset rotated or styled (digits | fashion_mnist)
        num_domains=0,              # 0: the source's default (rotated: 20; styled/folder: every domain)
        angle_step=9.0,             # rotated: degrees between consecutive domains (domain k at k * angle_step)
        root="",                    # folder: DIR holding DIR/<domain>/<class>/*.png|jpg (DomainBed layout)
        names="",                   # comma-separated subset of domains, in the wanted order ("": all)
        order="default",            # default | random (a permutation drawn with order_seed; DIDD Table 5)
        order_seed=0,
        image_size=0,               # square side; 0: the base size (rotated/styled), 32 (folder)
        split_seed=0,               # folder: DomainBed's trial seed of the per-domain 8:2 split
        train_per_domain=0,         # styled: class-balanced train images kept per domain (0: the whole split)
        test_per_class=0,           # > 0: evaluate on the first n test images of each class per domain (0: all)
        plan="stream",              # stream | joint | gather | leave_one_out | whole (launch.staged); steps = per phase
    ))
    c.model = ml_collections.ConfigDict(dict(name="convnet", width=128, depth=3, norm="instance", pooling="avg"))

    c.eval = ml_collections.ConfigDict(dict(
        every=500,                  # evaluate the synthetic set every N steps (and always at the end); 0: end only
        num_seeds=5,                # K networks trained in one vmapped program; 0: distil only, no evaluation
        epochs=1000,                # reference: 1000 (300 for DC without augmentation)
        lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=256,
        dsa_strategy="color_crop_cutout_flip_scale_rotate",
        random_real=True,           # also evaluate IPC random real images (the baseline)
        learned_lr=True,            # train with the algorithm's learned lr when it has one (MTT/SATM: syn_lr)
        # dm: DM's evaluate_synset (lr x0.1 at E/2, DSA); idc: IDC's train.py (x0.2 at 2E/3 and 5E/6, IDC's DiffAug;
        # IDC also uses batch_size 64 and cutmix_p 0.5: see use_idc_evaluation). ddjax.evaluate documents both.
        protocol="dm",
        cutmix_p=0.0,               # CutMix probability per training batch (IDC's mix_p); 0: off
        model="",                   # evaluation network ("": config.model; else a MODEL_NAMES entry, cross-arch)
        width=0,                    # its width (0: config.model.width)
        architectures="",           # also train these on the final set, e.g. "AlexNet,VGG11" (eval_<NAME>.json)
    ))
    c[algorithm] = algorithms.default_config(algorithm)
    return c


def use_idc_evaluation(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Evaluate as IDC's ``train.py`` (the protocol of IDC's and DREAM+'s paper numbers): MultiStepLR ×0.2 at
    2E/3 and 5E/6, IDC's DiffAug, batch 64, CutMix with probability 0.5 (``argument.py`` for CIFAR, SVHN and
    (Fashion-)MNIST). Returns ``config``, changed in place."""
    config.eval.protocol = "idc"
    config.eval.batch_size = 64
    config.eval.cutmix_p = 0.5
    return config


def _positive(config, path: str, minimum: int = 1) -> None:
    value = config
    for part in path.split("."):
        value = value[part]
    if value < minimum:
        raise ConfigError(f"{path} must be >= {minimum}, got {value}; set --config.{path}=<integer >= {minimum}>")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Check every name and range the run depends on; raise ConfigError with one line on the first problem."""
    check_choice("algorithm", config.algorithm, algorithms.ALGORITHM_NAMES)
    if config.algorithm not in config:
        raise ConfigError(f"config has no '{config.algorithm}' section for algorithm {config.algorithm!r}; start "
                          "the config from launch.config.base_config(algorithm)")
    data_name = config.data.name
    if not isinstance(data_name, str) or not data_name:
        raise ConfigError(f"data.name must be a dataset name ({', '.join(DATASET_NAMES)}, or a prepared tfds name)")
    check_choice("model", config.model.name, models.MODEL_NAMES)
    if config.eval.get("model", ""):
        check_choice("eval.model", config.eval.model, models.MODEL_NAMES)
    check_choice("norm", config.model.norm, models.NORM_NAMES)
    models.parse_architectures(config.eval.get("architectures", ""))   # one line naming the valid architectures
    check_choice("synthetic init", config.init, algorithms.INIT_NAMES)
    augment.parse_strategy(config.dsa_strategy)
    augment.parse_strategy(config.eval.dsa_strategy)
    for path in ("ipc", "steps", "log_every", "checkpoint_every", "keep_checkpoints", "model.width", "model.depth",
                 "eval.epochs", "eval.batch_size"):
        _positive(config, path)
    staged = config.get("domains") is not None and bool(config.domains.source)
    _positive(config, "eval.num_seeds", minimum=1 if staged else 0)   # staged runs' A^T needs evaluations
    if not config.eval.num_seeds and config.eval.get("architectures", ""):
        raise ConfigError("eval.architectures needs trained networks but eval.num_seeds=0 (distil only); set "
                          "eval.num_seeds >= 1 or evaluate later with python -m launch.evaluate --num_seeds=K")
    _positive(config, "eval.every", minimum=0)
    check_choice("eval.protocol", config.eval.protocol, evaluate.PROTOCOLS)
    if not 0.0 <= config.eval.cutmix_p <= 1.0:
        raise ConfigError(f"eval.cutmix_p is a probability in [0, 1], got {config.eval.cutmix_p}")
    if config.data.zca_regularization <= 0:
        raise ConfigError(f"data.zca_regularization must be > 0, got {config.data.zca_regularization}")
    _validate_domains(config)


def _validate_domains(config: ml_collections.ConfigDict) -> None:
    """``config.domains`` (when ``source`` is set): names, ranges, and no ZCA (one whitening per domain set)."""
    d = config.get("domains")
    if d is None or not d.source:
        return
    from ddjax.continual import PLAN_NAMES  # noqa: PLC0415  (ddjax.continual imports nothing from launch)
    from ddjax.data.domains import BASE_NAMES, DOMAIN_ORDERS, DOMAIN_SOURCES  # noqa: PLC0415
    check_choice("domains.source", d.source, DOMAIN_SOURCES)
    check_choice("domains.order", d.order, DOMAIN_ORDERS)
    check_choice("domains.plan", d.plan, PLAN_NAMES)
    if d.source in ("rotated", "styled"):
        check_choice("domains.base dataset", d.base, BASE_NAMES)
    if d.source == "folder" and not d.root:
        raise ConfigError("domains.source=folder needs --config.domains.root=DIR (DIR/<domain>/<class>/*.png|jpg)")
    if d.get("train_per_domain", 0) and d.source != "styled":
        raise ConfigError(f"domains.train_per_domain applies to source=styled only (got source={d.source}); "
                          "set it to 0")
    for path in ("domains.num_domains", "domains.image_size", "domains.train_per_domain", "domains.test_per_class"):
        _positive(config, path, minimum=0)
    if not d.angle_step > 0:
        raise ConfigError(f"domains.angle_step must be > 0 degrees, got {d.angle_step}; DIDD's R-MNIST: 9")
    if config.data.zca:
        raise ConfigError("data.zca is not supported with config.domains (one normalisation spans every domain); "
                          "set --config.data.zca=False")


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    """A JSON-able plain dict of the config (stored in the workdir and in results.json)."""
    return config.to_dict()


def _as_json(value):
    """``value`` as ``config.json`` stores it: tuples become lists (recursively), so ``(0, 2)`` equals ``[0, 2]``."""
    if isinstance(value, (tuple, list)):
        return [_as_json(v) for v in value]
    return value


def differing_fields(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted names of fields that differ between two config dicts, ignoring :data:`RESUMABLE_FIELDS`.

    Values compare as JSON stores them: ``config.json`` has lists where the live config has tuples
    (e.g. ``didd.alpha_range``), and a resume must not read that as a change."""
    out = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differing_fields(a, b, name + ".")
        elif _as_json(a) != _as_json(b) and name not in RESUMABLE_FIELDS:
            out.append(name)
    return out
