"""Pure preprocessing: per-channel normalisation and ZCA whitening, both fitted on the train split only.

The functions take and return NHWC arrays. They are written against an array namespace chosen from the input:
a NumPy array gives a NumPy result, a JAX array (or a tracer under ``jit``/``vmap``/``grad``) gives a JAX result,
so the same transform can run eagerly on a whole dataset or inside a jitted step.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ddjax.errors import ConfigError

__all__ = ["channel_stats", "normalize", "denormalize", "ZCAWhitening", "fit_zca"]


def _xp(x):
    """``jax.numpy`` for JAX arrays and tracers, ``numpy`` otherwise."""
    return jnp if isinstance(x, jax.Array) else np


def _check_nhwc(images, what: str) -> None:
    if getattr(images, "ndim", None) != 4:
        raise ConfigError(f"{what}: images must be NHWC with 4 axes, got shape {getattr(images, 'shape', None)}; "
                          "add a channel axis with images[..., None]")


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-channel mean and standard deviation over ``(N, H, W)``, in float64 then cast to float32.

    .. math:: \mu_c = \tfrac{1}{NHW}\sum_{n,h,w} x_{nhwc}, \qquad
              \sigma_c = \sqrt{\tfrac{1}{NHW}\sum_{n,h,w} (x_{nhwc} - \mu_c)^2}

    (population std, ``ddof=0``, as torchvision's ``Normalize`` constants are usually computed).
    """
    _check_nhwc(images, "channel_stats")
    x = np.asarray(images, dtype=np.float64)
    mean = x.mean(axis=(0, 1, 2))
    std = x.std(axis=(0, 1, 2))
    return mean.astype(np.float32), std.astype(np.float32)


def normalize(images, mean, std):
    r"""Per-channel standardisation :math:`(x - \mu_c) / \sigma_c` (broadcast over the last, channel axis)."""
    xp = _xp(images)
    return (images - xp.asarray(mean, dtype=images.dtype)) / xp.asarray(std, dtype=images.dtype)


def denormalize(images, mean, std):
    r"""Inverse of :func:`normalize`: :math:`x \sigma_c + \mu_c`."""
    xp = _xp(images)
    return images * xp.asarray(std, dtype=images.dtype) + xp.asarray(mean, dtype=images.dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class ZCAWhitening:
    r"""A fitted ZCA whitening transform (kornia ``ZCAWhitening`` as used by MTT, Cazenavette et al. 2022).

    Images are flattened to :math:`D = H W C` features. With the train mean :math:`\mu \in \mathbb{R}^D` and the
    unbiased covariance :math:`\Sigma = \tfrac{1}{N-1} (X-\mu)^\top (X-\mu) = U \,\mathrm{diag}(S)\, U^\top`:

    .. math:: W = U\,\mathrm{diag}\big((S+\epsilon)^{-1/2}\big)\,U^\top, \qquad
              W^{-1} = U\,\mathrm{diag}\big((S+\epsilon)^{1/2}\big)\,U^\top

    ``apply``: :math:`z = (x - \mu) W`; ``invert``: :math:`x = z W^{-1} + \mu`. (kornia flattens CHW, we flatten HWC;
    the two differ by a permutation of features, to which ZCA is equivariant, so the images are the same.)
    A pytree (arrays are leaves), so it can be passed into jitted functions.

    Attributes:
      mean: ``(D,)`` float32 train mean of the flattened images.
      matrix: ``(D, D)`` float32 whitening matrix :math:`W` (symmetric).
      inverse: ``(D, D)`` float32 :math:`W^{-1}`.
    """
    mean: np.ndarray
    matrix: np.ndarray
    inverse: np.ndarray

    @property
    def num_features(self) -> int:
        return int(self.mean.shape[-1])

    def _check(self, images, what: str) -> None:
        _check_nhwc(images, f"ZCAWhitening.{what}")
        d = int(np.prod(images.shape[1:]))
        if d != self.num_features:
            raise ConfigError(f"ZCAWhitening.{what}: images of shape {tuple(images.shape)} have {d} features per "
                              f"image but the transform was fitted on {self.num_features}; fit it on images of "
                              "the same H, W, C")

    def apply(self, images):
        r"""Whiten: :math:`z = (x - \mu) W`, per image, shape preserved."""
        self._check(images, "apply")
        xp = _xp(images)
        flat = images.reshape(images.shape[0], -1)
        out = (flat - xp.asarray(self.mean, dtype=images.dtype)) @ xp.asarray(self.matrix, dtype=images.dtype)
        return out.reshape(images.shape)

    def invert(self, images):
        r"""Un-whiten: :math:`x = z W^{-1} + \mu`, shape preserved (for pictures of whitened images)."""
        self._check(images, "invert")
        xp = _xp(images)
        flat = images.reshape(images.shape[0], -1)
        out = flat @ xp.asarray(self.inverse, dtype=images.dtype) + xp.asarray(self.mean, dtype=images.dtype)
        return out.reshape(images.shape)


def fit_zca(images: np.ndarray, regularization: float = 0.1) -> ZCAWhitening:
    r"""Fit :class:`ZCAWhitening` on ``images`` (NHWC, usually the train split), :math:`\epsilon` = ``regularization``.

    The covariance and its eigendecomposition are computed in float64 with NumPy (``eigh`` of the symmetric
    covariance; equal to kornia's SVD up to the order of eigenpairs, which does not change :math:`W`).
    MTT uses :math:`\epsilon = 0.1` on images in [0, 1].
    """
    _check_nhwc(images, "fit_zca")
    if not regularization > 0:
        raise ConfigError(f"fit_zca: regularization must be > 0, got {regularization}; the reference uses 0.1")
    if images.shape[0] < 2:
        raise ConfigError(f"fit_zca: need at least 2 images to estimate a covariance, got {images.shape[0]}")
    x = np.asarray(images, dtype=np.float64).reshape(images.shape[0], -1)
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / (x.shape[0] - 1)
    s, u = np.linalg.eigh(cov)
    s = np.clip(s, 0.0, None)  # tiny negative eigenvalues from round-off
    matrix = (u * (1.0 / np.sqrt(s + regularization))) @ u.T
    inverse = (u * np.sqrt(s + regularization)) @ u.T
    return ZCAWhitening(mean=mean.astype(np.float32), matrix=matrix.astype(np.float32),
                        inverse=inverse.astype(np.float32))
