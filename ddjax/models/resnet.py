"""ResNet-18, small-image ("CIFAR") variant.

Reference: ``VICO-UoE/DatasetCondensation:networks.py`` (``ResNet``/``BasicBlock``, after kuangliu/pytorch-cifar):
stem ``conv3x3(64, stride 1, no bias) -> norm -> relu`` (no max-pool); four stages of two BasicBlocks with widths
64/128/256/512 and strides 1/2/2/2; BasicBlock ``conv3x3(stride) -> norm -> relu -> conv3x3 -> norm``, plus a
shortcut that is identity, or ``conv1x1(stride, no bias) -> norm`` when the shape changes; add, relu. Then global
average pooling (the reference's ``avg_pool2d(out, 4)`` on 32x32 inputs) and a linear head. Convs pad
symmetrically like PyTorch (flax ``"SAME"`` pads stride-2 convs asymmetrically). Init: PyTorch defaults, as in
:mod:`ddjax.models.convnet`. 10 classes on 32x32x3 with batch norm: 11,173,962 parameters.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddjax.models.convnet import (activation_fn, check_images, check_model_fields, check_output, head_outputs,
                                  make_norm, torch_conv)

STAGE_SIZES = (2, 2, 2, 2)


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
        if self.stride != 1 or in_ch != self.features:
            x = torch_conv(self.features, in_ch, 1, stride=self.stride, padding=0, use_bias=False,
                           name="shortcut_conv")(x)
            x = make_norm(self.norm, train, name="shortcut_norm")(x)
        return act(h + x)


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
        act = activation_fn(self.activation)
        h = torch_conv(self.width, x.shape[-1], 3, padding=1, use_bias=False, name="stem_conv")(x)
        h = act(make_norm(self.norm, train, name="stem_norm")(h))
        blocks = []
        for s, num_blocks in enumerate(STAGE_SIZES):
            features = self.width * 2**s
            for b in range(num_blocks):
                stride = 2 if s > 0 and b == 0 else 1
                h = BasicBlock(features, stride, self.norm, self.activation, name=f"stage{s + 1}_block{b}")(h, train)
            blocks.append(h)
        embed = jnp.mean(h, axis=(1, 2))
        return head_outputs(self.num_classes, embed, blocks, output)
