"""AlexNet and VGG-11 of the dataset-distillation cross-architecture table (DC, DSA, DM, MTT, IDC all report it).

Reference: ``VICO-UoE/DatasetCondensation:utils.py/networks.py`` (classes ``AlexNet`` and ``VGG``), which the
later papers reuse. Images are NHWC here (NCHW there); shapes and parameter counts are the same.

* **AlexNet** (no norm layers): conv5x5(128, pad 2) → ReLU → max-pool 2 → conv5x5(192, pad 2) → ReLU → max-pool 2
  → conv3x3(256) → ReLU → conv3x3(192) → ReLU → conv3x3(192) → ReLU → max-pool 2 → flatten → Linear. On 32x32x3
  with 10 classes: 1,872,202 parameters.
* **VGG-11** (``[64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M]``): each number is conv3x3(pad 1) → norm →
  ReLU, each ``M`` a 2x2 max-pool; then flatten → Linear(512, K). The reference's default norm is instance norm
  (``GroupNorm(C, C)``: ``VGG11``), batch norm gives ``VGG11BN``. On 32x32x3 with 10 classes: 9,231,114 parameters
  with instance norm.

28x28 inputs get the first conv's extra padding (AlexNet 4, VGG 3) so they behave as 32x32, as in the reference
(which keys this on one channel; here, as in :class:`ddjax.models.ConvNet`, on the 28x28 size).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from ddjax.errors import ConfigError
from ddjax.models.convnet import (activation_fn, check_images, check_model_fields, check_output, head_outputs,
                                  make_norm, torch_conv)

#: VGG-11's layer list: channel counts and ``"M"`` (2x2 max-pool).
VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def _is_28(x: jax.Array) -> bool:
    return x.shape[1] == 28 and x.shape[2] == 28


def _pool(h: jax.Array, image: jax.Array, network: str) -> jax.Array:
    if h.shape[1] < 2 or h.shape[2] < 2:
        raise ConfigError(f"{network} needs larger images: a {image.shape[1]}x{image.shape[2]} input is reduced to "
                          f"{h.shape[1]}x{h.shape[2]} before one of its 2x2 poolings; use 32x32 (or 28x28) images "
                          "or a ConvNet")
    return nn.max_pool(h, (2, 2), strides=(2, 2), padding="VALID")


class AlexNet(nn.Module):
    """The DC AlexNet (no norm, max-pooling); ``width`` scales every conv (128 gives the reference's 128/192/256/192/192).

    ``norm`` is ``"none"`` as in the reference; any :data:`ddjax.models.NORM_NAMES` entry adds that norm after
    each conv (the DD literature's ``AlexNetBN``/``AlexNetIN`` variants)."""

    num_classes: int
    width: int = 128
    norm: str = "none"
    activation: str = "relu"

    def __post_init__(self) -> None:
        check_model_fields(self.num_classes, self.width, self.norm, self.activation)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, output: str = "logits") -> Any:
        """Images ``(B, H, W, C)`` -> logits ``(B, K)``, embed ``(B, D)`` or the features dict (``blocks``: the maps
        after each pooling)."""
        check_output(output)
        check_images(x)
        act = activation_fn(self.activation)
        w = self.width
        layers = ((w, 5, 4 if _is_28(x) else 2, True), (w * 3 // 2, 5, 2, True), (w * 2, 3, 1, False),
                  (w * 3 // 2, 3, 1, False), (w * 3 // 2, 3, 1, True))
        h, blocks = x, []
        for i, (features, kernel, padding, pool) in enumerate(layers):
            h = torch_conv(features, h.shape[-1], kernel, padding=padding, use_bias=True, name=f"conv_{i}")(h)
            h = act(make_norm(self.norm, train, name=f"norm_{i}")(h))
            if pool:
                h = _pool(h, x, "AlexNet")
                blocks.append(h)
        return head_outputs(self.num_classes, h.reshape(h.shape[0], -1), blocks, output)


class VGG11(nn.Module):
    """The DC VGG-11: :data:`VGG11_LAYERS` with ``norm`` after each conv (``"instance"``: reference ``VGG11``,
    ``"batch"``: ``VGG11BN``); ``width`` is the first stage's width (64 gives the reference's 64 ... 512)."""

    num_classes: int
    width: int = 64
    norm: str = "instance"
    activation: str = "relu"

    def __post_init__(self) -> None:
        check_model_fields(self.num_classes, self.width, self.norm, self.activation)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, output: str = "logits") -> Any:
        """Images ``(B, H, W, C)`` -> logits ``(B, K)``, embed ``(B, 8*width*h*w)`` or the features dict."""
        check_output(output)
        check_images(x)
        act = activation_fn(self.activation)
        h, blocks, conv = x, [], 0
        for layer in VGG11_LAYERS:
            if layer == "M":
                h = _pool(h, x, "VGG-11")
                blocks.append(h)
                continue
            padding = 3 if conv == 0 and _is_28(x) else 1
            h = torch_conv(layer * self.width // 64, h.shape[-1], 3, padding=padding, use_bias=True,
                           name=f"conv_{conv}")(h)
            h = act(make_norm(self.norm, train, name=f"norm_{conv}")(h))
            conv += 1
        return head_outputs(self.num_classes, h.reshape(h.shape[0], -1), blocks, output)
