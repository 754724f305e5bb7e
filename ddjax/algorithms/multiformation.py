"""IDC's multi-formation (Kim et al., "Dataset Condensation via Efficient Synthetic-Data Parameterization", ICML'22,
Sec. 3.1; ``snu-mllab/Efficient-Dataset-Condensation:condense.py``).

A stored image holds ``factor × factor`` smaller images: :func:`decode_zoom` cuts it into that grid and resizes
every part back to full size (bilinear, half-pixel centres = PyTorch ``nn.Upsample(mode='bilinear')``), so ``n``
stored images train like ``n · factor²`` images. :func:`mosaic` is the inverse used for IDC's ``init='mix'``:
``factor²`` real images, each shrunk to its cell (nearest neighbour, as ``F.interpolate``'s default), tiled into one
stored image.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ddjax.errors import ConfigError

__all__ = ["check_factor", "decode_zoom", "decode_labels", "idc_image_lr", "mosaic"]


def check_factor(factor: int, image_shape: tuple[int, int, int]) -> None:
    """ConfigError unless ``1 <= factor <= min(H, W)``."""
    if factor < 1 or factor > min(image_shape[:2]):
        raise ConfigError(f"multi-formation factor must be in [1, {min(image_shape[:2])}] for "
                          f"{image_shape[0]}x{image_shape[1]} images, got {factor}; IDC uses 2 for 28-32 px data")


def decode_zoom(images: jax.Array, factor: int) -> jax.Array:
    """``(..., n, H, W, C)`` stored images -> ``(..., factor² · n, H, W, C)`` decoded ones.

    Crop ``(i, j)`` of every image comes before crop ``(i, j + 1)`` (the reference's concatenation order). An image
    whose side is not a multiple of ``factor`` is padded at the bottom/right with 0 (the channel mean in
    normalised space; the reference pads 0.5 in pixel space) to ``factor · ⌈H / factor⌉``.
    """
    if factor == 1:
        return images
    *lead, n, h, w, c = images.shape
    s_h, s_w = math.ceil(h / factor), math.ceil(w / factor)
    pad = [(0, 0)] * (len(lead) + 1) + [(0, s_h * factor - h), (0, s_w * factor - w), (0, 0)]
    padded = jnp.pad(images, pad)
    crops = []
    for i in range(factor):
        for j in range(factor):
            crop = padded[..., i * s_h:(i + 1) * s_h, j * s_w:(j + 1) * s_w, :]
            crops.append(jax.image.resize(crop, (*lead, n, h, w, c), method="bilinear", antialias=False))
    return jnp.concatenate(crops, axis=len(lead))


def decode_labels(labels: jax.Array, factor: int) -> jax.Array:
    """Labels of :func:`decode_zoom` applied to one class-major set: ``(n,)`` -> ``(factor² · n,)`` (per class
    blocks are kept class-major by decoding class by class; see the algorithms)."""
    return jnp.tile(labels, factor * factor)


def mosaic(parts: jax.Array, factor: int) -> jax.Array:
    """``(..., factor² · n, H, W, C)`` images -> ``(..., n, H, W, C)``: image ``k · n + m`` fills cell
    ``(k // factor, k % factor)`` of stored image ``m`` (reference ``init='mix'``; the first ``H mod factor``
    rows/columns of cells are one pixel larger)."""
    if factor == 1:
        return parts
    *lead, total, h, w, c = parts.shape
    n = total // (factor * factor)
    sizes_h = [h // factor + (1 if i < h % factor else 0) for i in range(factor)]
    sizes_w = [w // factor + (1 if j < w % factor else 0) for j in range(factor)]
    rows = []
    k = 0
    for i in range(factor):
        cells = []
        for j in range(factor):
            part = parts[..., k * n:(k + 1) * n, :, :, :]
            cells.append(jax.image.resize(part, (*lead, n, sizes_h[i], sizes_w[j], c), method="nearest"))
            k += 1
        rows.append(jnp.concatenate(cells, axis=-2))
    return jnp.concatenate(rows, axis=-3)


#: IDC's ``tune_lr_img`` reference point: lr_img is given for IPC 10 at 32x32 (28x28 for MNIST) and scaled.
IDC_LR_BASE_IPC = 10
IDC_LR_BASE_SIZE = 32


def idc_image_lr(lr_pixel: float, ipc: int, size: int, std: float, *, base_size: int = IDC_LR_BASE_SIZE) -> float:
    r"""The authors' image learning rate (IDC ``argument.py:tune_lr_img``, used by DREAM too) for ddjax's
    normalised images: :math:`\eta = \eta_{px}\,\frac{ipc}{10}\,\big(\frac{size}{base}\big)^2 / \sigma^2`.

    The authors optimise pixels in [0, 1] and normalise inside the matching; with :math:`z = (x - \mu)/\sigma` an
    SGD step :math:`\Delta x = -\eta_{px}\,\partial L/\partial x = -\eta_{px}\,\sigma^{-1}\partial L/\partial z` is
    :math:`\Delta z = -\eta_{px}\sigma^{-2}\,\partial L/\partial z` (momentum is linear, so the same holds for it).
    ``base_size`` is 32 except for MNIST (28) in IDC. ``std`` is the dataset's per-channel std (one channel)."""
    if not (lr_pixel > 0 and ipc >= 1 and size >= 1 and std > 0 and base_size >= 1):
        raise ConfigError(f"idc_image_lr needs lr_pixel > 0, ipc >= 1, size >= 1, std > 0; got {lr_pixel}, {ipc}, "
                          f"{size}, {std}")
    return float(lr_pixel) * ipc / IDC_LR_BASE_IPC * (size / base_size) ** 2 / float(std) ** 2
