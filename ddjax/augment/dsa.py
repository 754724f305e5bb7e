r"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML'21) as pure functions of ``(key, images)``.

Reference: ``VICO-UoE/DatasetCondensation:utils.py`` (``ParamDiffAug``, ``DiffAugment``, ``rand_*``); see
``shared/notes/reference-implementations.md`` §2. Images are NHWC float; every op is differentiable w.r.t. the
images and safe under ``jit``/``vmap``/``grad``.

Op groups (strategy tokens) and their formulas, with :math:`u \sim U[0, 1)`:

* ``color`` = brightness → saturation → contrast (three independent draws):
  :math:`x \leftarrow x + (u_b - \tfrac12)\,b`;
  :math:`x \leftarrow (x - \bar x_c)(u_s\, s) + \bar x_c` (:math:`\bar x_c` mean over channels, per pixel);
  :math:`x \leftarrow (x - \bar x)(u_c + c) + \bar x` (:math:`\bar x` mean over H, W, C, per image).
* ``crop``: integer translation :math:`y_{ij} = x_{i+t_y,\,j+t_x}` (zero where the read falls outside the image),
  :math:`t_y \in [-\lfloor H r + \tfrac12\rfloor, +\lfloor H r + \tfrac12\rfloor]`, likewise :math:`t_x` with W.
  (The reference pads one zero pixel and clamps the read index, which is exactly this.)
* ``cutout``: zero the rectangle of rows :math:`[o_y - \lfloor s_h/2\rfloor,\ o_y - \lfloor s_h/2\rfloor + s_h)`
  (clipped to the image), :math:`s_h = \lfloor H r + \tfrac12\rfloor`,
  :math:`o_y \in [0, H + 1 - (s_h \bmod 2))`; likewise columns.
* ``flip``: horizontal flip (reverse W) when :math:`u < p`.
* ``scale``: affine :math:`\theta = [[s_x, 0, 0], [0, s_y, 0]]`, :math:`s_x, s_y \sim U(1/r, r)`.
* ``rotate``: affine :math:`\theta = [[\cos a, -\sin a, 0], [\sin a, \cos a, 0]]`,
  :math:`a \sim U(-r, r)` degrees.

Affine ops reproduce PyTorch ``affine_grid`` + ``grid_sample`` (bilinear, ``align_corners=False``, zero
padding): output pixel :math:`(i, j)` has normalised coordinates
:math:`x_n = (2j + 1)/W - 1,\ y_n = (2i + 1)/H - 1`; the source is :math:`(x_s, y_s) = \theta\,(x_n, y_n, 1)`, read
at pixel coordinates :math:`i_x = ((x_s + 1) W - 1)/2,\ i_y = ((y_s + 1) H - 1)/2` with bilinear weights
:math:`\max(0, 1 - |i_y - h|)\,\max(0, 1 - |i_x - w|)` over in-image pixels :math:`(h, w)` (taps outside read 0).

Siamese property: with ``per_sample=False`` every random parameter is a scalar drawn from the key alone (its shape
does not depend on the batch size), so ``dsa(k, real)`` and ``dsa(k, syn)`` apply the same transform.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from ddjax.errors import ConfigError, check_choice

Array = jax.Array

DSA_OPS: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
DSA_MODES: tuple[str, ...] = ("S", "M")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclasses.dataclass(frozen=True)
class DSAParams:
    """Augmentation strengths; defaults are the reference ``ParamDiffAug``. Hashable, so usable as a static arg."""

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"DSAParams.{f.name} must be a finite number, got {v!r}")
        if not 0.0 <= self.prob_flip <= 1.0:
            raise ConfigError(f"DSAParams.prob_flip must be in [0, 1], got {self.prob_flip}")
        if self.ratio_scale <= 0:
            raise ConfigError(f"DSAParams.ratio_scale must be > 0 (reference 1.2), got {self.ratio_scale}")
        if not 0.0 <= self.ratio_crop_pad <= 1.0:
            raise ConfigError(f"DSAParams.ratio_crop_pad must be in [0, 1] (reference 0.125), "
                              f"got {self.ratio_crop_pad}")
        if not 0.0 <= self.ratio_cutout <= 1.0:
            raise ConfigError(f"DSAParams.ratio_cutout must be in [0, 1] (reference 0.5), got {self.ratio_cutout}")


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """Split a strategy like ``"color_crop_cutout_flip_scale_rotate"`` into op-group tokens.

    ``""``, ``"none"`` and ``"None"`` mean no augmentation and give ``()``. Order (and repeats) are kept: in mode
    "M" groups run in this order; in mode "S" each token is one equally likely choice.
    Raises ConfigError on a non-string or an unknown/empty token (listing the valid ops).
    """
    if not isinstance(strategy, str):
        raise ConfigError(f"DSA strategy must be a string like {DEFAULT_STRATEGY!r} or 'none', got {strategy!r}")
    if strategy in ("", "none", "None"):
        return ()
    tokens = tuple(strategy.split("_"))
    for t in tokens:
        check_choice(f"DSA op (in strategy {strategy!r})", t, DSA_OPS)
    return tokens


# ----------------------------------------------------------------------------------------------------------------
# Explicit-parameter primitives. A parameter is either a scalar (one transform for the batch) or an (N,) array
# (one per image). Jitted so eager calls compile once per shape; inside an outer jit they are inlined.


def _per_image(p, x: Array) -> Array:
    """Cast ``p`` to x's dtype and make it broadcast against NHWC ``x`` (scalar stays scalar, (N,) → (N,1,1,1))."""
    p = jnp.asarray(p, x.dtype)
    return p.reshape(p.shape + (1,) * (x.ndim - p.ndim)) if p.ndim else p


@jax.jit
def brightness(x: Array, u, strength: float = 1.0) -> Array:
    r""":math:`x + (u - \tfrac12)\,\mathrm{strength}`."""
    return x + (_per_image(u, x) - 0.5) * strength


@jax.jit
def saturation(x: Array, u, strength: float = 2.0) -> Array:
    r""":math:`(x - \bar x_c)(u\,\mathrm{strength}) + \bar x_c`, :math:`\bar x_c` = mean over channels per pixel."""
    m = jnp.mean(x, axis=-1, keepdims=True)
    return (x - m) * (_per_image(u, x) * strength) + m


@jax.jit
def contrast(x: Array, u, strength: float = 0.5) -> Array:
    r""":math:`(x - \bar x)(u + \mathrm{strength}) + \bar x`, :math:`\bar x` = mean over (H, W, C) per image."""
    m = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - m) * (_per_image(u, x) + strength) + m


@jax.jit
def flip(x: Array, do_flip) -> Array:
    """Reverse the W axis where ``do_flip`` (bool scalar or (N,)) is true."""
    cond = jnp.asarray(do_flip, bool)
    cond = cond.reshape(cond.shape + (1,) * 3) if cond.ndim else cond
    return jnp.where(cond, x[:, :, ::-1, :], x)


def _linear_weights(src: Array, size: int, dtype) -> Array:
    """1-D bilinear weights with zero padding: ``w[..., o, k] = max(0, 1 - |src[..., o] - k|)``, k in [0, size)."""
    return jnp.maximum(0.0, 1.0 - jnp.abs(src[..., None] - jnp.arange(size, dtype=src.dtype))).astype(dtype)


def _separable_resample(x: Array, wy: Array, wx: Array) -> Array:
    """``y[n,i,j,c] = Σ_{h,w} wy[(n,)i,h] x[n,h,w,c] wx[(n,)j,w]``: two small matmuls (shared or per image).

    HIGHEST precision: on GPUs the default float32 matmul may use TF32, which would round the pixel values
    (one-hot translation would no longer be exact)."""
    hi = lax.Precision.HIGHEST
    if wy.ndim == 2 and wx.ndim == 2:
        return jnp.einsum("ih,nhwc,jw->nijc", wy, x, wx, precision=hi)
    n = x.shape[0]
    wy = jnp.broadcast_to(wy, (n,) + wy.shape[-2:])
    wx = jnp.broadcast_to(wx, (n,) + wx.shape[-2:])
    return jnp.einsum("nih,nhwc,njw->nijc", wy, x, wx, precision=hi)


@functools.partial(jax.jit, static_argnames=("max_shift",))
def translate(x: Array, ty, tx, *, max_shift: tuple[int, int] | None = None) -> Array:
    r"""Integer translation with zero fill: :math:`y_{ij} = x_{i + t_y,\, j + t_x}` (0 outside the image).

    Scalar shifts (one for the batch): one zero-pad by ``max_shift`` (default (H, W)) and one ``dynamic_slice``;
    shifts must satisfy :math:`|t| \le` ``max_shift``. Per-image (N,) shifts: exact one-hot separable resampling
    (two batched matmuls), any shift.
    """
    n, h, w, _ = x.shape
    ty = jnp.asarray(ty, jnp.int32)
    tx = jnp.asarray(tx, jnp.int32)
    if ty.ndim == 0 and tx.ndim == 0:
        py, px = (h, w) if max_shift is None else max_shift
        if py == 0 and px == 0:
            return x
        xp = jnp.pad(x, ((0, 0), (py, py), (px, px), (0, 0)))
        return lax.dynamic_slice(xp, (0, py + ty, px + tx, 0), x.shape)
    ty = jnp.broadcast_to(ty, (n,))
    tx = jnp.broadcast_to(tx, (n,))
    wy = _linear_weights(jnp.arange(h, dtype=jnp.int32)[None, :] + ty[:, None], h, x.dtype)
    wx = _linear_weights(jnp.arange(w, dtype=jnp.int32)[None, :] + tx[:, None], w, x.dtype)
    return _separable_resample(x, wy, wx)


@functools.partial(jax.jit, static_argnames=("size",))
def cutout(x: Array, oy, ox, size: tuple[int, int]) -> Array:
    r"""Zero rows :math:`[o_y - \lfloor s_h/2 \rfloor, o_y - \lfloor s_h/2 \rfloor + s_h)` × the analogous columns
    (clipped to the image). ``oy``/``ox``: int scalars or (N,); ``size`` = (s_h, s_w), static."""
    _, h, w, _ = x.shape
    sh, sw = size
    y0 = jnp.asarray(oy, jnp.int32)[..., None] - sh // 2
    x0 = jnp.asarray(ox, jnp.int32)[..., None] - sw // 2
    rows = jnp.arange(h, dtype=jnp.int32)
    cols = jnp.arange(w, dtype=jnp.int32)
    in_y = (rows >= y0) & (rows < y0 + sh)          # (H,) or (N, H)
    in_x = (cols >= x0) & (cols < x0 + sw)          # (W,) or (N, W)
    keep = ~(in_y[..., :, None] & in_x[..., None, :])
    return x * keep[..., None].astype(x.dtype)


@jax.jit
def scale(x: Array, sy, sx) -> Array:
    r"""Affine scale :math:`\theta = [[s_x, 0, 0], [0, s_y, 0]]` (``affine_grid``/``grid_sample``,
    ``align_corners=False``, zeros). Separable: computed as two small matmuls with 1-D bilinear weights."""
    _, h, w, _ = x.shape
    sy = jnp.asarray(sy, jnp.float32)
    sx = jnp.asarray(sx, jnp.float32)
    yn = (2 * jnp.arange(h, dtype=jnp.float32) + 1) / h - 1
    xn = (2 * jnp.arange(w, dtype=jnp.float32) + 1) / w - 1
    iy = ((sy[..., None] * yn + 1) * h - 1) / 2                  # (H,) or (N, H)
    ix = ((sx[..., None] * xn + 1) * w - 1) / 2
    return _separable_resample(x, _linear_weights(iy, h, x.dtype), _linear_weights(ix, w, x.dtype))


def rotation_theta(angle) -> Array:
    """Reference rotation matrix ``[[cos a, -sin a, 0], [sin a, cos a, 0]]`` (radians), shape (..., 2, 3)."""
    a = jnp.asarray(angle, jnp.float32)
    c, s, z = jnp.cos(a), jnp.sin(a), jnp.zeros_like(a)
    return jnp.stack([jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1)], -2)


def affine_source_coords(theta: Array, h: int, w: int) -> tuple[Array, Array]:
    """Source pixel coordinates ``(iy, ix)``, each (..., H, W), read by output pixel (i, j) (see module doc)."""
    theta = jnp.asarray(theta, jnp.float32)
    yn = ((2 * jnp.arange(h, dtype=jnp.float32) + 1) / h - 1)[:, None]
    xn = ((2 * jnp.arange(w, dtype=jnp.float32) + 1) / w - 1)[None, :]
    t = theta[..., None, None]  # (..., 2, 3, 1, 1)
    xs = t[..., 0, 0, :, :] * xn + t[..., 0, 1, :, :] * yn + t[..., 0, 2, :, :]
    ys = t[..., 1, 0, :, :] * xn + t[..., 1, 1, :, :] * yn + t[..., 1, 2, :, :]
    return ((ys + 1) * h - 1) / 2, ((xs + 1) * w - 1) / 2


def _bilinear_taps(iy: Array, ix: Array, h: int, w: int, dtype):
    """The 4 bilinear taps: flat indices (clipped into the image) and weights (0 for taps outside)."""
    y0 = jnp.floor(iy)
    x0 = jnp.floor(ix)
    fy = iy - y0
    fx = ix - x0
    taps = []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            valid = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
            idx = (jnp.clip(yy, 0, h - 1) * w + jnp.clip(xx, 0, w - 1)).astype(jnp.int32)
            taps.append((idx.reshape(idx.shape[:-2] + (h * w,)),
                         jnp.where(valid, wy * wx, 0.0).astype(dtype).reshape(idx.shape[:-2] + (h * w,))))
    return taps


@jax.jit
def affine(x: Array, theta) -> Array:
    """Bilinear resampling by a 2×3 ``theta`` (shared (2, 3) or per image (N, 2, 3)), equal to PyTorch
    ``grid_sample(x, affine_grid(theta, x.shape, align_corners=False), align_corners=False)`` (zero padding).

    Shared theta: 4 row-gathers on an (H·W, N·C) view (each index copies a contiguous row). Per image: 4 batched
    gathers along the flattened spatial axis.
    """
    n, h, w, c = x.shape
    theta = jnp.asarray(theta, jnp.float32)
    iy, ix = affine_source_coords(theta, h, w)
    taps = _bilinear_taps(iy, ix, h, w, x.dtype)
    if theta.ndim == 2:
        xt = x.reshape(n, h * w, c).transpose(1, 0, 2).reshape(h * w, n * c)
        out = sum(jnp.take(xt, idx, axis=0) * wt[:, None] for idx, wt in taps)
        return out.reshape(h * w, n, c).transpose(1, 0, 2).reshape(x.shape)
    xf = x.reshape(n, h * w, c)
    out = sum(jnp.take_along_axis(xf, idx[:, :, None], axis=1) * wt[:, :, None] for idx, wt in taps)
    return out.reshape(x.shape)


@jax.jit
def rotate(x: Array, angle) -> Array:
    """Affine rotation by ``angle`` radians (scalar or (N,)), reference sign convention (see rotation_theta)."""
    return affine(x, rotation_theta(angle))


# ----------------------------------------------------------------------------------------------------------------
# Random op groups: draw parameters of shape ``shape`` (() = one transform for the batch, (N,) = per image).


def _crop_sizes(h: int, w: int, ratio: float) -> tuple[int, int]:
    return int(h * ratio + 0.5), int(w * ratio + 0.5)


def _uniforms(key, shape: tuple[int, ...], count: int) -> list[Array]:
    """``count`` independent U[0, 1) arrays of ``shape`` from ONE draw (one threefry call: cheaper to compile)."""
    u = jax.random.uniform(key, shape + (count,))
    return [u[..., i] for i in range(count)]


def _randint(u: Array, low: int, high: int) -> Array:
    """Uniform integer in ``[low, high)`` from ``u ~ U[0, 1)`` (clipped against float rounding at u → 1)."""
    return jnp.minimum(jnp.floor(u * (high - low)).astype(jnp.int32), high - low - 1) + low


def _group_color(key, x, shape, p: DSAParams):
    ub, us, uc = _uniforms(key, shape, 3)
    x = brightness(x, ub, p.brightness)
    x = saturation(x, us, p.saturation)
    return contrast(x, uc, p.contrast)


def _group_crop(key, x, shape, p: DSAParams):
    sy, sx = _crop_sizes(x.shape[1], x.shape[2], p.ratio_crop_pad)
    uy, ux = _uniforms(key, shape, 2)
    return translate(x, _randint(uy, -sy, sy + 1), _randint(ux, -sx, sx + 1), max_shift=(sy, sx))


def _group_cutout(key, x, shape, p: DSAParams):
    h, w = x.shape[1], x.shape[2]
    sh, sw = _crop_sizes(h, w, p.ratio_cutout)
    uy, ux = _uniforms(key, shape, 2)
    oy = _randint(uy, 0, h + (1 - sh % 2))
    ox = _randint(ux, 0, w + (1 - sw % 2))
    return cutout(x, oy, ox, (sh, sw))


def _group_flip(key, x, shape, p: DSAParams):
    (u,) = _uniforms(key, shape, 1)
    return flip(x, u < p.prob_flip)


def _group_scale(key, x, shape, p: DSAParams):
    r = p.ratio_scale
    ux, uy = _uniforms(key, shape, 2)
    return scale(x, 1.0 / r + uy * (r - 1.0 / r), 1.0 / r + ux * (r - 1.0 / r))


def _group_rotate(key, x, shape, p: DSAParams):
    (u,) = _uniforms(key, shape, 1)
    return rotate(x, (u - 0.5) * 2 * p.ratio_rotate / 180 * math.pi)


_GROUPS: dict[str, Callable] = {
    "color": _group_color, "crop": _group_crop, "cutout": _group_cutout,
    "flip": _group_flip, "scale": _group_scale, "rotate": _group_rotate,
}
assert tuple(_GROUPS) == DSA_OPS


def _check_images(images) -> None:
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4:
        raise ConfigError(f"DSA expects NHWC images of rank 4, got shape {shape}; add a batch axis (x[None])")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ConfigError(f"DSA expects floating-point images, got dtype {images.dtype}; cast with .astype(float32)")


def _check_flags(per_sample, params) -> None:
    if not isinstance(per_sample, bool):
        raise ConfigError(f"dsa per_sample must be a Python bool (static), got {per_sample!r}")
    if not isinstance(params, DSAParams):
        raise ConfigError(f"dsa params must be a ddjax.augment.DSAParams, got {type(params).__name__}")


def apply_group(key: Array, images: Array, group: str, *, per_sample: bool, params: DSAParams = DSAParams()
                ) -> Array:
    """Apply one op group (a DSA_OPS name) with parameters drawn from ``key``.

    ``per_sample=False``: scalar parameters (one transform whatever the batch size, siamese);
    ``per_sample=True``: (N,) parameters, one transform per image.
    """
    check_choice("DSA op", group, DSA_OPS)
    _check_flags(per_sample, params)
    _check_images(images)
    return _apply_group_jit(key, images, group, per_sample, params)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _apply_group_jit(key, images, group, per_sample, params):
    shape = (images.shape[0],) if per_sample else ()
    return _GROUPS[group](key, images, shape, params)


def select_group(key: Array, num_groups: int) -> tuple[Array, Array]:
    """Mode "S" draw: ``(index, subkey)``; index ~ uniform over ``range(num_groups)`` picks the op group and
    ``subkey`` drives that group's parameters."""
    kc, ko = jax.random.split(key)
    (u,) = _uniforms(kc, (), 1)
    return _randint(u, 0, num_groups), ko


def dsa(key: Array, images: Array, strategy: str = DEFAULT_STRATEGY, *, per_sample: bool,
        params: DSAParams = DSAParams(), mode: str = "S") -> Array:
    """Differentiable Siamese Augmentation of NHWC ``images`` (reference ``DiffAugment``).

    Args:
      key: PRNG key (may be traced). Same key ⇒ same transform for any batch size when ``per_sample=False``.
      images: (N, H, W, C) float.
      strategy: op groups joined by ``_`` (see :func:`parse_strategy`); ``""``/``"none"`` ⇒ identity.
      per_sample: False = one transform for the whole batch (siamese; distillation); True = independent
        transform per image (evaluation training). Static.
      params: strengths (:class:`DSAParams`). Static (hashable).
      mode: ``"S"`` (reference default) = ONE group drawn uniformly per call (``lax.switch``, so with a traced key
        only the drawn branch runs; under ``vmap`` over keys all branches run and are selected);
        ``"M"`` = every group in strategy order, each with its own subkey.
    Returns:
      Augmented images, same shape and dtype.
    """
    tokens = parse_strategy(strategy)
    check_choice("DSA mode", mode, DSA_MODES)
    _check_flags(per_sample, params)
    _check_images(images)
    if not tokens:
        return images
    # Validated above; the work is one jitted program per (shapes, static args), so eager calls compile once
    # (a bare eager lax.switch would re-trace every call) and an outer jit simply inlines it.
    return _dsa_jit(key, images, tokens, per_sample, params, mode)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _dsa_jit(key, images, tokens, per_sample, params, mode):
    shape = (images.shape[0],) if per_sample else ()
    if mode == "M":
        for tok, k in zip(tokens, jax.random.split(key, len(tokens))):
            images = _GROUPS[tok](k, images, shape, params)
        return images
    index, sub = select_group(key, len(tokens))
    if len(tokens) == 1:
        return _GROUPS[tokens[0]](sub, images, shape, params)
    branches = [lambda k, x, f=_GROUPS[t]: f(k, x, shape, params) for t in tokens]
    return lax.switch(index, branches, sub, images)


#: The groups IDC's DiffAug applies on every call (flip, then colour); cutout comes last when kept.
IDC_ALWAYS = ("flip", "color")


def idc_augment(key: Array, images: Array, strategy: str = DEFAULT_STRATEGY, *, per_sample: bool = True,
                params: DSAParams = DSAParams(), cutout: bool = True) -> Array:
    """IDC's DiffAug (``Efficient-Dataset-Condensation:misc/augment.py``, ``single_aug=True``).

    Of the groups in ``strategy``: ``flip`` (if present), then ``color`` (if present) on every call; then ONE of the
    remaining groups other than cutout, drawn uniformly per call (IDC's ``np.random.randint`` per batch; with
    ``per_sample`` its parameters are per image); then ``cutout`` if present and ``cutout`` is True (IDC's
    evaluation removes cutout from the strategy whenever CutMix is on). Keys: ``k_flip, k_color, k_one, k_cutout
    = split(key, 4)``, each used as :func:`dsa` (mode "S") uses its key on that group alone.
    """
    tokens = parse_strategy(strategy)
    _check_flags(per_sample, params)
    _check_images(images)
    k_flip, k_color, k_one, k_cutout = jax.random.split(key, 4)
    for group, k in zip(IDC_ALWAYS, (k_flip, k_color)):
        if group in tokens:
            images = dsa(k, images, group, per_sample=per_sample, params=params)
    rest = [t for t in tokens if t not in IDC_ALWAYS + ("cutout",)]
    if rest:
        images = dsa(k_one, images, "_".join(rest), per_sample=per_sample, params=params, mode="S")
    if cutout and "cutout" in tokens:
        images = dsa(k_cutout, images, "cutout", per_sample=per_sample, params=params)
    return images
