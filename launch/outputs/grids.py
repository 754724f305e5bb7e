"""Image grids: one row per class, images of a class left to right (PIL; written atomically)."""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from ddjax.atomic import atomic_open
from ddjax.errors import ConfigError

__all__ = ["grid_layout", "save_image_grid"]


def grid_layout(image_hw: tuple[int, int], num_classes: int, ipc: int, *, gap: int = 2, min_cell: int = 32,
                scale: int | None = None) -> dict[str, int]:
    """Geometry of :func:`save_image_grid` (without a label column).

    ``scale = scale or max(1, ceil(min_cell / min(H, W)))`` (integer nearest-neighbour factor), cell
    ``(H*scale, W*scale)``; a ``gap``-pixel border around and between cells, so
    ``width = ipc*cell_w + (ipc+1)*gap`` and ``height = num_classes*cell_h + (num_classes+1)*gap``. The cell of
    (row r, column c) has its top-left corner at ``(gap + r*(cell_h+gap), label_w + gap + c*(cell_w+gap))``.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    if scale is None:
        scale = max(1, math.ceil(min_cell / max(1, min(h, w))))
    scale = int(scale)
    if scale < 1:
        raise ConfigError(f"image grid scale must be a positive integer, got {scale}; use scale=None for automatic")
    if gap < 0:
        raise ConfigError(f"image grid gap must be >= 0, got {gap}")
    cell_h, cell_w = h * scale, w * scale
    return {
        "scale": scale,
        "cell_h": cell_h,
        "cell_w": cell_w,
        "gap": int(gap),
        "rows": int(num_classes),
        "cols": int(ipc),
        "width": ipc * cell_w + (ipc + 1) * gap,
        "height": num_classes * cell_h + (num_classes + 1) * gap,
    }


def _label_column(names: Sequence[str], gap: int) -> tuple[Any, int]:
    """Return (PIL font, column width in pixels) for the class-name column."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    widest = 0
    for name in names:
        left, _, right, _ = draw.textbbox((0, 0), name, font=font)
        widest = max(widest, right - left)
    return font, widest + 2 * max(gap, 2)


def save_image_grid(path: str | os.PathLike, images: Any, labels: Any, num_classes: int,
                    class_names: Sequence[str] | None = None, *, gap: int = 2, min_cell: int = 32,
                    scale: int | None = None, background: float = 1.0) -> dict[str, int]:
    """Save images as a PNG grid: one row per class (label 0 at the top), images of a class in input order.

    Args:
      images: float ``(N, H, W, C)`` pixels in [0, 1] (values are clipped, NaN drawn as 0), ``C`` 1 (grayscale
        PNG) or 3 (RGB PNG). Use ``Dataset.to_pixels`` first for normalised images.
      labels: int ``(N,)`` in ``[0, num_classes)``, or soft ``(N, num_classes)`` (drawn by their argmax).
      num_classes: number of rows; a class with no image gets an empty row.
      class_names: optional names (one per class) drawn in a label column on the left.
      gap, min_cell, scale: layout, see :func:`grid_layout`; columns = the largest per-class count (at least 1),
        cells of classes with fewer images are left as ``background``.
      background: gap/padding grey level in [0, 1] (1 = white).

    Returns the layout dict of :func:`grid_layout` plus ``label_w`` (0 without class names).
    Written atomically. Pixels are ``round(x * 255)`` upscaled by nearest neighbour (``np.repeat``).
    """
    from PIL import Image, ImageDraw

    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[0] == images.shape[0] and np.issubdtype(labels.dtype, np.floating):
        labels = labels.argmax(axis=1)  # soft labels (relabelled sets): drawn in their most likely class's row
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ConfigError(f"save_image_grid needs images of shape (N, H, W, C) with C 1 or 3, got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ConfigError(f"save_image_grid needs labels of shape ({images.shape[0]},), got {labels.shape}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ConfigError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    if class_names is not None and len(class_names) != num_classes:
        raise ConfigError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
    labels = labels.astype(np.int64)

    n, h, w, c = images.shape
    counts = np.bincount(labels, minlength=num_classes) if n else np.zeros(num_classes, np.int64)
    ipc = max(1, int(counts.max()) if n else 1)
    layout = grid_layout((h, w), num_classes, ipc, gap=gap, min_cell=min_cell, scale=scale)
    s, cell_h, cell_w = layout["scale"], layout["cell_h"], layout["cell_w"]

    names = [str(x) for x in class_names] if class_names is not None else None
    font, label_w = _label_column(names, gap) if names else (None, 0)

    pixels = np.rint(np.clip(np.nan_to_num(images, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    bg = int(round(float(np.clip(background, 0.0, 1.0)) * 255))
    canvas = np.full((layout["height"], label_w + layout["width"], c), bg, dtype=np.uint8)
    column = np.zeros(num_classes, dtype=np.int64)
    for i in range(n):  # stable: images of a class keep their input order
        r = int(labels[i])
        col = column[r]
        column[r] += 1
        top = gap + r * (cell_h + gap)
        left = label_w + gap + col * (cell_w + gap)
        cell = np.repeat(np.repeat(pixels[i], s, axis=0), s, axis=1)
        canvas[top:top + cell_h, left:left + cell_w] = cell

    if c == 1:
        img = Image.fromarray(canvas[..., 0], mode="L")
        ink: Any = 0
    else:
        img = Image.fromarray(canvas, mode="RGB")
        ink = (0, 0, 0)
    if names:
        draw = ImageDraw.Draw(img)
        for r, name in enumerate(names):
            top = gap + r * (cell_h + gap)
            _, t, _, b = draw.textbbox((0, 0), name, font=font)
            y = top + (cell_h - (b - t)) // 2 - t
            draw.text((max(gap, 2), y), name, fill=ink, font=font)

    with atomic_open(path, "wb") as f:
        img.save(f, format="PNG")
    return {**layout, "label_w": label_w}
