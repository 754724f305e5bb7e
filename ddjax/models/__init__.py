"""Networks: the reference ConvNet family, AlexNet, VGG-11, ResNet-18/50, with pure init/apply helpers.

``build_model`` validates names and returns a flax module; ``init_model``/``apply_model`` are pure functions of
explicit keys and variables (``{"params"}`` plus ``{"batch_stats"}`` for batch norm), safe under ``jit``, ``vmap``
and ``grad``; e.g. ``jax.vmap(lambda k: init_model(model, k, shape))(keys)`` samples a stack of random networks.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
import math
import operator
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddjax.errors import ConfigError, check_choice
from ddjax.models.convnet import (ACTIVATION_NAMES, NORM_NAMES, OUTPUT_NAMES, POOLING_NAMES, ConvNet,
                                  check_output)
from ddjax.models.classic import VGG11, AlexNet
from ddjax.models.resnet import ResNet18, ResNet50
from ddjax.models.style_transfer import ConditionalInstanceNorm, StyleTransfer, bn_inputs, domain_weights

MODEL_NAMES = ("convnet", "resnet18", "resnet50", "alexnet", "vgg11")

__all__ = ["build_from_config", "ACTIVATION_NAMES", "MODEL_NAMES", "NORM_NAMES", "OUTPUT_NAMES", "POOLING_NAMES",
           "ConvNet", "ResNet18", "ResNet50", "AlexNet", "VGG11", "ARCHITECTURE_EXAMPLES", "build_architecture",
           "parse_architectures", "ConditionalInstanceNorm", "StyleTransfer", "bn_inputs", "domain_weights",
           "apply_model", "build_model", "count_params", "init_model"]


def build_model(name: str, num_classes: int, *, width: int | None = None, depth: int = 3, norm: str | None = None,
                pooling: str = "avg", activation: str = "relu") -> nn.Module:
    """Build a model by name (one of :data:`MODEL_NAMES`); all names are validated for every model.

    ``width``/``norm`` default to the model's own defaults when ``None``: ConvNet width 128, norm ``"instance"``;
    ResNet-18/50 width 64 (the first stage; stages are w, 2w, 4w, 8w), norm ``"batch"``; AlexNet width 128, norm
    ``"none"``; VGG-11 width 64, norm ``"instance"``. Models other than ConvNet ignore ``depth`` and ``pooling``
    (theirs are fixed), so one config can drive any model.
    """
    check_choice("model", name, MODEL_NAMES)
    if norm is not None:
        check_choice("norm", norm, NORM_NAMES)
    check_choice("pooling", pooling, POOLING_NAMES)
    check_choice("activation", activation, ACTIVATION_NAMES)
    if name == "convnet":
        return ConvNet(num_classes, width=128 if width is None else width, depth=depth,
                       norm="instance" if norm is None else norm, pooling=pooling, activation=activation)
    cls = {"resnet18": ResNet18, "resnet50": ResNet50, "alexnet": AlexNet, "vgg11": VGG11}[name]
    kwargs = {"activation": activation}
    if width is not None:
        kwargs["width"] = width
    if norm is not None:
        kwargs["norm"] = norm
    return cls(num_classes, **kwargs)


#: The cross-architecture names of the DD literature (DC's ``get_network``), case-insensitive in
#: :func:`build_architecture`: ConvNet variants take one suffix each (width ``W<n>``, depth ``D<n>``, norm
#: ``NN/BN/LN/IN/GN``, pooling ``AP/MP/NP``) from the reference ConvNet-3, width 128, instance norm, avg pooling.
ARCHITECTURE_EXAMPLES = ("ConvNet", "ConvNetW64", "ConvNetD4", "ConvNetBN", "ConvNetNN", "ConvNetMP", "AlexNet",
                         "AlexNetBN", "VGG11", "VGG11BN", "ResNet18", "ResNet18BN", "ResNet50")
_CONVNET_NORMS = {"nn": "none", "bn": "batch", "ln": "layer", "in": "instance", "gn": "group"}
_CONVNET_POOLS = {"ap": "avg", "mp": "max", "np": "none"}


def parse_architectures(names: str) -> tuple[str, ...]:
    """``"AlexNet, VGG11"`` -> ``("AlexNet", "VGG11")``; each name checked by :func:`build_architecture` (one-line
    ConfigError naming the valid architectures); ``""`` -> ``()``."""
    parsed = tuple(n.strip() for n in str(names).split(",") if n.strip())
    for name in parsed:
        build_architecture(name, 2)   # validates the name; builds no parameters
    return parsed


def build_architecture(name: str, num_classes: int) -> nn.Module:
    """A network by its DD-literature name (:data:`ARCHITECTURE_EXAMPLES`; case-insensitive), as DC's
    ``get_network`` builds it: ``ResNet18`` is instance norm there and here, ``ResNet18BN`` batch norm,
    ``ResNet50`` batch norm (ddjax's default), ``VGG11`` instance norm, ``AlexNet`` no norm. Unknown → ConfigError."""
    key = name.strip().lower()
    fixed = {"alexnet": ("alexnet", None), "alexnetbn": ("alexnet", "batch"), "vgg11": ("vgg11", "instance"),
             "vgg11bn": ("vgg11", "batch"), "resnet18": ("resnet18", "instance"), "resnet18bn": ("resnet18", "batch"),
             "resnet50": ("resnet50", "batch")}
    if key in fixed:
        model, norm = fixed[key]
        return build_model(model, num_classes, norm=norm)
    match = re.fullmatch(r"convnet(?:w(\d+)|d(\d+)|(nn|bn|ln|in|gn)|(ap|mp|np))?", key)
    if match is None:
        raise ConfigError(f"unknown architecture {name!r}; use one of {', '.join(ARCHITECTURE_EXAMPLES)} (ConvNet "
                          "also as ConvNetW<width>, ConvNetD<depth>, ConvNetNN/BN/LN/IN/GN, ConvNetAP/MP/NP)")
    width, depth, norm, pool = match.groups()
    return build_model("convnet", num_classes, width=int(width) if width else 128, depth=int(depth) if depth else 3,
                       norm=_CONVNET_NORMS[norm] if norm else "instance",
                       pooling=_CONVNET_POOLS[pool] if pool else "avg")


def build_from_config(model_config: Any, num_classes: int) -> nn.Module:
    """:func:`build_model` from a config's ``model`` section (fields ``name, width, depth, norm, pooling``): the
    distillation/evaluation network the launcher, expert training and buffer checks must all agree on."""
    m = model_config
    return build_model(m.name, num_classes, width=m.width, depth=m.depth, norm=m.norm, pooling=m.pooling)


def _check_image_shape(image_shape: Any) -> tuple[int, int, int]:
    try:  # accepts Python or NumPy ints (e.g. ``images.shape[1:]``), rejects bools and floats
        shape = tuple(operator.index(d) for d in image_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1 or any(isinstance(d, bool) for d in image_shape):
        raise ConfigError(f"image_shape must be (H, W, C) with positive ints, got {image_shape!r}")
    return shape  # type: ignore[return-value]


def init_model(model: nn.Module, key: jax.Array, image_shape: tuple[int, int, int]) -> dict:
    """Fresh variables ``{"params": ..., ["batch_stats": ...]}`` for images of shape ``(H, W, C)``.

    Pure in ``key``: vmapping over keys gives independently initialised networks with a leading axis.
    """
    return _init(model, key, _check_image_shape(image_shape))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init(model: nn.Module, key: jax.Array, shape: tuple[int, int, int]) -> dict:
    # jitted (model and shape static; modules hash by their fields) so an eager call compiles one program, not
    # one per primitive; under an outer jit/vmap this is simply inlined.
    return dict(model.init(key, jnp.zeros((1, *shape), jnp.float32), train=False))


def apply_model(model: nn.Module, variables: dict, x: jax.Array, *, train: bool,
                output: str = "logits") -> tuple[Any, dict]:
    """Run ``model`` on images ``x`` (B, H, W, C); returns ``(out, variables)``.

    With ``train=True`` and ``"batch_stats"`` in ``variables``, batch norm normalises with batch statistics and
    the returned variables carry the updated running averages; otherwise the variables come back unchanged
    (eval mode uses the running averages). ``output`` is ``"logits"``, ``"embed"`` or ``"features"``.
    """
    check_output(output)
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise ConfigError("variables must be the dict returned by init_model (with a 'params' entry), got "
                          f"{type(variables).__name__}")
    if train and "batch_stats" in variables:
        out, stats = _apply_train(model, variables, x, output)
        return out, {**dict(variables), "batch_stats": stats}
    return _apply(model, variables, x, bool(train), output), variables


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _apply(model: nn.Module, variables: dict, x: jax.Array, train: bool, output: str) -> Any:
    return model.apply(variables, x, train=train, output=output)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _apply_train(model: nn.Module, variables: dict, x: jax.Array, output: str) -> tuple[Any, Any]:
    out, updates = model.apply(variables, x, train=True, output=output, mutable=["batch_stats"])
    return out, updates["batch_stats"]


def count_params(variables_or_params: Any) -> int:
    """Number of trainable parameters: the ``"params"`` entry of a variables dict, or every leaf of a params tree.

    Running statistics (``batch_stats``) are not parameters, as in PyTorch. Works on ``jax.eval_shape`` output.
    """
    tree = variables_or_params
    if isinstance(tree, Mapping) and "params" in tree:
        tree = tree["params"]
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)))
