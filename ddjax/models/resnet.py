"""ResNet-18 and ResNet-50, small-image ("CIFAR") variants.

Reference: ``VICO-UoE/DatasetCondensation:networks.py`` (``ResNet``/``BasicBlock``, after kuangliu/pytorch-cifar):
stem ``conv3x3(64, stride 1, no bias) -> norm -> relu`` (no max-pool); four stages of two BasicBlocks with widths
64/128/256/512 and strides 1/2/2/2; BasicBlock ``conv3x3(stride) -> norm -> relu -> conv3x3 -> norm``, plus a
shortcut that is identity, or ``conv1x1(stride, no bias) -> norm`` when the shape changes; add, relu. Then global
average pooling (the reference's ``avg_pool2d(out, 4)`` on 32x32 inputs) and a linear head. Convs pad
symmetrically like PyTorch (flax ``"SAME"`` pads stride-2 convs asymmetrically). Init: PyTorch defaults, as in
:mod:`ddjax.models.convnet`. 10 classes on 32x32x3 with batch norm: 11,173,962 parameters.

ResNet-50 (kuangliu/pytorch-cifar ``ResNet50``; torchvision's ``Bottleneck`` with the stride on the 3x3 conv):
the same stem, four stages of (3, 4, 6, 3) Bottlenecks ``conv1x1(w) -> norm -> relu -> conv3x3(w, stride) -> norm
-> relu -> conv1x1(4w) -> norm`` plus the projection shortcut, stage widths w/2w/4w/8w (outputs 4x that). 10
classes, width 64: 23,520,842 parameters (torchvision's 25,557,032 for 1,000 classes, less the 7x7 stem and the
larger head).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddjax.models.convnet import (activation_fn, check_images, check_model_fields, check_output, head_outputs,
                                  make_norm, torch_conv)

STAGE_SIZES = (2, 2, 2, 2)
RESNET50_STAGE_SIZES = (3, 4, 6, 3)
BOTTLENECK_EXPANSION = 4


def residual_out(h: jax.Array, x: jax.Array, out_ch: int, stride: int, norm: str, train: bool, act) -> jax.Array:
    """``act(h + shortcut(x))``, the shortcut a projection ``conv1x1(stride) -> norm`` when the shape changes (call
    inside a block's compact ``__call__``: its layers are named ``shortcut_conv``/``shortcut_norm`` there)."""
    if stride != 1 or x.shape[-1] != out_ch:
        x = torch_conv(out_ch, x.shape[-1], 1, stride=stride, padding=0, use_bias=False, name="shortcut_conv")(x)
        x = make_norm(norm, train, name="shortcut_norm")(x)
    return act(h + x)


class BasicBlock(nn.Module):
    """ResNet BasicBlock (expansion 1) with a projection shortcut when stride or width changes."""

    features: int
    stride: int = 1
    norm: str = "batch"
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = activation_fn(self.activation)
        in_ch = x.shape[-1]
        h = torch_conv(self.features, in_ch, 3, stride=self.stride, padding=1, use_bias=False, name="conv1")(x)
        h = act(make_norm(self.norm, train, name="norm1")(h))
        h = torch_conv(self.features, self.features, 3, padding=1, use_bias=False, name="conv2")(h)
        h = make_norm(self.norm, train, name="norm2")(h)
        return residual_out(h, x, self.features, self.stride, self.norm, train, act)


class Bottleneck(nn.Module):
    """ResNet Bottleneck (expansion 4), stride on the 3x3 conv, projection shortcut when the shape changes."""

    features: int
    stride: int = 1
    norm: str = "batch"
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = activation_fn(self.activation)
        in_ch, out_ch = x.shape[-1], self.features * BOTTLENECK_EXPANSION
        h = torch_conv(self.features, in_ch, 1, padding=0, use_bias=False, name="conv1")(x)
        h = act(make_norm(self.norm, train, name="norm1")(h))
        h = torch_conv(self.features, self.features, 3, stride=self.stride, padding=1, use_bias=False,
                       name="conv2")(h)
        h = act(make_norm(self.norm, train, name="norm2")(h))
        h = torch_conv(out_ch, self.features, 1, padding=0, use_bias=False, name="conv3")(h)
        h = make_norm(self.norm, train, name="norm3")(h)
        return residual_out(h, x, out_ch, self.stride, self.norm, train, act)


def _resnet_body(x: jax.Array, train: bool, *, width: int, norm: str, activation: str, block: Any,
                 stage_sizes: tuple[int, ...]) -> tuple[jax.Array, list]:
    """Small-image stem and the residual stages (call inside a compact ``__call__``); the last map and the stage
    outputs."""
    act = activation_fn(activation)
    h = torch_conv(width, x.shape[-1], 3, padding=1, use_bias=False, name="stem_conv")(x)
    h = act(make_norm(norm, train, name="stem_norm")(h))
    blocks = []
    for s, num_blocks in enumerate(stage_sizes):
        for b in range(num_blocks):
            stride = 2 if s > 0 and b == 0 else 1
            h = block(width * 2**s, stride, norm, activation, name=f"stage{s + 1}_block{b}")(h, train)
        blocks.append(h)
    return h, blocks


class ResNet18(nn.Module):
    """ResNet-18 with the small-image stem; ``width`` is the first stage's width (stages: w, 2w, 4w, 8w).

    ``norm`` defaults to ``"batch"`` (reference ``ResNet18BN``); ``"instance"`` gives the reference ``ResNet18``
    (GroupNorm with one group per channel); the other :data:`NORM_NAMES` work too.
    """

    num_classes: int
    width: int = 64
    norm: str = "batch"
    activation: str = "relu"

    def __post_init__(self) -> None:
        check_model_fields(self.num_classes, self.width, self.norm, self.activation)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, output: str = "logits") -> Any:
        """Images ``(B, H, W, C)`` -> logits ``(B, K)``, embed ``(B, 8*width)`` (pooled), or a features dict.

        ``output="features"`` gives ``{"logits", "embed", "blocks"}`` with ``blocks`` the four stage outputs.
        """
        check_output(output)
        check_images(x)
        h, blocks = _resnet_body(x, train, width=self.width, norm=self.norm, activation=self.activation,
                                 block=BasicBlock, stage_sizes=STAGE_SIZES)
        return head_outputs(self.num_classes, jnp.mean(h, axis=(1, 2)), blocks, output)


class ResNet50(nn.Module):
    """ResNet-50 with the small-image stem; ``width`` is the first stage's bottleneck width (outputs 4w ... 32w)."""

    num_classes: int
    width: int = 64
    norm: str = "batch"
    activation: str = "relu"

    def __post_init__(self) -> None:
        check_model_fields(self.num_classes, self.width, self.norm, self.activation)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, output: str = "logits") -> Any:
        """Images ``(B, H, W, C)`` -> logits ``(B, K)``, embed ``(B, 32*width)``, or the features dict."""
        check_output(output)
        check_images(x)
        h, blocks = _resnet_body(x, train, width=self.width, norm=self.norm, activation=self.activation,
                                 block=Bottleneck, stage_sizes=RESNET50_STAGE_SIZES)
        return head_outputs(self.num_classes, jnp.mean(h, axis=(1, 2)), blocks, output)
