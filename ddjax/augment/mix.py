r"""CutMix (Yun et al., ICCV'19) as IDC uses it (``snu-mllab/Efficient-Dataset-Condensation``, ``train.py`` and
``misc/utils.py:rand_bbox``), a pure function of ``(key, images)``.

With probability ``prob`` per batch: :math:`\lambda \sim \mathrm{Beta}(\beta, \beta)`, a random permutation
:math:`\pi` of the batch, a box of side :math:`\lfloor H\sqrt{1-\lambda}\rfloor \times \lfloor W\sqrt{1-\lambda}\rfloor`
centred at a uniform pixel :math:`(c_y, c_x)` and clipped to the image; the box of every image is replaced by the
same box of image :math:`\pi(i)`. The loss is :math:`r\,\mathrm{CE}(y_i) + (1 - r)\,\mathrm{CE}(y_{\pi(i)})` with
:math:`r = 1 - \text{box area} / (HW)` (the kept fraction, computed after clipping as the reference does).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["cutmix", "cutmix_box"]


def cutmix_box(height: int, width: int, lam: jax.Array, cy: jax.Array, cx: jax.Array
               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """IDC's ``rand_bbox``: rows ``[y0, y1)`` and columns ``[x0, x1)`` of the pasted box.

    ``cut = sqrt(1 - lam)``; ``ch = int(H cut)``, ``cw = int(W cut)``; ``y0 = clip(cy - ch // 2, 0, H)``,
    ``y1 = clip(cy + ch // 2, 0, H)`` (likewise columns). ``lam``, ``cy``, ``cx`` may be traced."""
    cut = jnp.sqrt(1.0 - lam)
    ch = jnp.floor(cut * height).astype(jnp.int32)
    cw = jnp.floor(cut * width).astype(jnp.int32)
    y0, y1 = jnp.clip(cy - ch // 2, 0, height), jnp.clip(cy + ch // 2, 0, height)
    x0, x1 = jnp.clip(cx - cw // 2, 0, width), jnp.clip(cx + cw // 2, 0, width)
    return y0, y1, x0, x1


def cutmix(key: jax.Array, images: jax.Array, prob: float, beta: float = 1.0
           ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """CutMix of NHWC ``images``: ``(mixed, permutation, kept)`` where ``kept`` is the loss weight ``r`` of each
    image's own label (1 when the coin ``u < prob`` fails, and the images are then returned unchanged)."""
    n, h, w = images.shape[:3]
    k_coin, k_lam, k_perm, k_y, k_x = jax.random.split(key, 5)
    lam = jax.random.beta(k_lam, beta, beta)
    perm = jax.random.permutation(k_perm, n)
    y0, y1, x0, x1 = cutmix_box(h, w, lam, jax.random.randint(k_y, (), 0, h), jax.random.randint(k_x, (), 0, w))
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1) & (jax.random.uniform(k_coin) < prob)
    mixed = jnp.where(box[None, :, :, None], images[perm], images)
    kept = 1.0 - jnp.sum(box) / (h * w)
    return mixed, perm, kept.astype(images.dtype)
