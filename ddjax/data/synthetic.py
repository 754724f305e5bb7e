r"""A self-describing distilled set: the keys of ``synthetic.npz`` and :func:`load_synthetic`.

``synthetic.npz`` (written by the launcher, read with ``numpy.load`` or :func:`load_synthetic`) holds:

==================  ==========================================================================================
``images``          float32 ``(N, H, W, C)``, model space (what the networks were trained on)
``pixels``          float32 ``(N, H, W, C)`` in [0, 1]: ``images`` mapped back to pictures
``labels``          int ``(N,)`` class indices, or float ``(N, K)`` soft labels (relabelled sets)
``lr``              (optional) the learned training learning rate (trajectory matching)
``mean``, ``std``   float32 ``(C,)`` per-channel normalisation, pixel scale (0 and 1 when ZCA is used)
``zca_mean``,       (only with ZCA) float32 ``(D,)``, ``(D, D)``, ``(D, D)`` with ``D = H W C``: the fitted
``zca_matrix``,     :class:`~ddjax.data.ZCAWhitening`
``zca_inverse``
``class_names``     str ``(K,)``
``image_shape``     int ``(3,)``: ``H, W, C``
``dataset``         str scalar: the dataset or domain-collection name
``config``          str scalar: the run's config as JSON
``format_version``  int scalar, :data:`FORMAT_VERSION`
==================  ==========================================================================================

Model space and pixels (the formula of :meth:`ddjax.data.Dataset.to_pixels`):

.. math:: x = \mathrm{clip}\big(\mathrm{zca}^{-1}(z)\,\sigma_c + \mu_c,\ 0,\ 1\big), \qquad
          z = \mathrm{zca}\big((x - \mu_c) / \sigma_c\big)

(``zca`` the identity when none was used). Every array is a plain numeric or unicode array, so
``numpy.load(path)`` reads the file without ``allow_pickle``.

Files written before these keys existed (format 0: ``images``, ``pixels``, ``labels`` only) still load: the missing
fields are ``None`` and :meth:`SyntheticSet.to_pixels` / :meth:`SyntheticSet.to_model` say so in one line.
"""
from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from typing import Any, Mapping, Sequence

import numpy as np

from ddjax.data import preprocess as _pre
from ddjax.errors import ConfigError, DataNotFoundError

__all__ = ["FORMAT_VERSION", "SyntheticSet", "synthetic_arrays", "load_synthetic"]

FORMAT_VERSION = 1
_ZCA_KEYS = ("zca_mean", "zca_matrix", "zca_inverse")


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticSet:
    """A distilled set read back from ``synthetic.npz`` (see the module docstring for the file's keys).

    Attributes:
      images: float32 ``(N, H, W, C)`` in model space.
      pixels: float32 ``(N, H, W, C)`` in [0, 1].
      labels: int ``(N,)`` or soft float ``(N, K)``.
      lr: the learned training learning rate, or None.
      mean, std: float32 ``(C,)`` normalisation (None in a format-0 file).
      zca: the fitted :class:`~ddjax.data.ZCAWhitening`, or None (no ZCA, or a format-0 file).
      class_names: ``K`` names (None in a format-0 file).
      image_shape: ``(H, W, C)``.
      dataset: the dataset name (None in a format-0 file).
      config: the run's config as a dict (None in a format-0 file).
      format_version: 0 for files written before the metadata keys, else :data:`FORMAT_VERSION`.
    """
    images: np.ndarray
    pixels: np.ndarray
    labels: np.ndarray
    lr: float | np.ndarray | None
    mean: np.ndarray | None
    std: np.ndarray | None
    zca: _pre.ZCAWhitening | None
    class_names: tuple[str, ...] | None
    image_shape: tuple[int, int, int]
    dataset: str | None
    config: dict | None
    format_version: int

    @property
    def num_classes(self) -> int:
        """``K``: the number of class names, else the soft-label width, else ``max(label) + 1``."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels.ndim == 2:
            return int(self.labels.shape[1])
        return int(self.labels.max()) + 1 if self.labels.size else 0

    @property
    def hard_labels(self) -> np.ndarray:
        """int32 ``(N,)`` class indices (the argmax of soft labels)."""
        labels = self.labels.argmax(-1) if self.labels.ndim == 2 else self.labels
        return np.asarray(labels, np.int32)

    def _need_normalisation(self, what: str) -> None:
        if self.mean is None or self.std is None:
            raise ConfigError(f"{what}: this synthetic.npz (format {self.format_version}) has no normalisation "
                              "(mean/std); use its `pixels`, or write it again with this version of ddjax")

    def to_pixels(self, images: Any = None) -> np.ndarray:
        r"""Model-space images (default: :attr:`images`) to pixels,
        :math:`\mathrm{clip}(\mathrm{zca}^{-1}(z)\,\sigma + \mu,\ 0,\ 1)`."""
        if images is None:
            return self.pixels
        self._need_normalisation("to_pixels")
        x = self._batch(images, "to_pixels")
        if self.zca is not None:
            x = self.zca.invert(x)
        return np.clip(_pre.denormalize(x, self.mean, self.std), 0.0, 1.0).astype(np.float32)

    def to_model(self, pixels: Any) -> np.ndarray:
        r"""Pixels in [0, 1] (e.g. your test images) to model space, :math:`\mathrm{zca}((x-\mu)/\sigma)`."""
        self._need_normalisation("to_model")
        x = _pre.normalize(self._batch(pixels, "to_model"), self.mean, self.std)
        return (self.zca.apply(x) if self.zca is not None else x).astype(np.float32)

    def _batch(self, images: Any, what: str) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.image_shape):
            raise ConfigError(f"{what}: expected images of shape (N, {', '.join(map(str, self.image_shape))}), "
                              f"got {x.shape}")
        return x


def synthetic_arrays(images: Any, labels: Any, *, pixels: Any, mean: Any, std: Any,
                     zca: _pre.ZCAWhitening | None, class_names: Sequence[str], dataset: str,
                     config: Mapping[str, Any] | None, lr: Any = None) -> dict[str, np.ndarray]:
    """The arrays of a self-describing ``synthetic.npz`` (pass them to ``numpy.savez``); keys in the module doc."""
    images = np.asarray(images, np.float32)
    out = {"images": images, "pixels": np.asarray(pixels, np.float32), "labels": np.asarray(labels),
           "mean": np.asarray(mean, np.float32).reshape(-1), "std": np.asarray(std, np.float32).reshape(-1),
           "class_names": np.asarray([str(c) for c in class_names], dtype=str),
           "image_shape": np.asarray(images.shape[1:], np.int64), "dataset": np.asarray(str(dataset)),
           "config": np.asarray(json.dumps(config if config is not None else {}, sort_keys=True, default=str)),
           "format_version": np.asarray(FORMAT_VERSION, np.int64)}
    if lr is not None:
        out["lr"] = np.asarray(lr)
    if zca is not None:
        out.update(zca_mean=np.asarray(zca.mean, np.float32), zca_matrix=np.asarray(zca.matrix, np.float32),
                   zca_inverse=np.asarray(zca.inverse, np.float32))
    return out


def _scalar_or_array(value: np.ndarray) -> float | np.ndarray:
    return float(value) if value.size == 1 else value


def load_synthetic(path: str | os.PathLike) -> SyntheticSet:
    """Read a ``synthetic.npz`` (a run's workdir file, or a folder holding one) into a :class:`SyntheticSet`.

    Needs neither the dataset nor jax devices: the normalisation and ZCA transform come from the file.
    Raises DataNotFoundError (missing or unreadable file) or ConfigError (a file without images/labels).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "synthetic.npz")
    if not os.path.isfile(path):
        raise DataNotFoundError(f"no synthetic set at {path}; pass a run's workdir or its synthetic.npz (a run "
                                "writes it when it finishes)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataNotFoundError(f"cannot read {path} as a synthetic.npz ({e}); write it again by rerunning the "
                                "run's command") from None
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise ConfigError(f"{path} has no {' or '.join(missing)} array (keys: {', '.join(sorted(arrays))}); it is "
                          "not a ddjax synthetic.npz")
    images = np.asarray(arrays["images"], np.float32)
    if images.ndim != 4:
        raise ConfigError(f"{path}: images have shape {images.shape}, expected (N, H, W, C)")
    version = int(arrays["format_version"]) if "format_version" in arrays else 0
    zca = None
    if all(k in arrays for k in _ZCA_KEYS):
        zca = _pre.ZCAWhitening(mean=arrays["zca_mean"], matrix=arrays["zca_matrix"], inverse=arrays["zca_inverse"])
    synthetic = SyntheticSet(
        images=images, pixels=np.asarray(arrays["pixels"], np.float32) if "pixels" in arrays else None,
        labels=arrays["labels"], lr=_scalar_or_array(arrays["lr"]) if "lr" in arrays else None,
        mean=arrays.get("mean"), std=arrays.get("std"), zca=zca,
        class_names=tuple(str(c) for c in arrays["class_names"]) if "class_names" in arrays else None,
        image_shape=tuple(int(d) for d in images.shape[1:]),
        dataset=str(arrays["dataset"]) if "dataset" in arrays else None,
        config=json.loads(str(arrays["config"])) if "config" in arrays else None, format_version=version)
    if synthetic.pixels is None:  # older than `pixels`: compute them when the normalisation is known
        if synthetic.mean is None:
            raise ConfigError(f"{path} has neither pixels nor the normalisation to compute them; write it again "
                              "with this version of ddjax")
        synthetic = dataclasses.replace(synthetic, pixels=synthetic.to_pixels(images))
    return synthetic
