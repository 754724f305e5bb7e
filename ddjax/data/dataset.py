"""The :class:`Dataset` container and :func:`load_dataset`, the one entry point to every dataset."""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ddjax.data import digits as _digits
from ddjax.data import preprocess as _pre
from ddjax.data import tfds_sources as _tfds
from ddjax.errors import ConfigError

__all__ = ["DATASET_NAMES", "Dataset", "load_dataset"]

DATASET_NAMES: tuple[str, ...] = ("digits", "fashion_mnist")  # plus any tfds dataset prepared as array_record


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test image-classification dataset, preprocessed with train statistics.

    Without ZCA: ``images = (x - mean) / std`` per channel, ``x`` in [0, 1] (``mean``/``std`` from the train split).
    With ZCA (MTT's order: ``ToTensor`` then ZCA, no mean/std normalisation): ``images = zca.apply(x)``, and
    ``mean = 0``, ``std = 1`` so that :meth:`to_pixels` is the same formula in both cases.
    ``eq=False``: compared and hashed by identity (fields are arrays).
    """
    name: str
    train_images: np.ndarray   # float32 (N, H, W, C), normalised (and ZCA-whitened when asked)
    train_labels: np.ndarray   # int32 (N,)
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    mean: np.ndarray           # (C,) per-channel train mean, pixel scale [0, 1] (zeros when zca)
    std: np.ndarray            # (C,) (ones when zca)
    zca: _pre.ZCAWhitening | None  # fitted transform when zca=True

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(int(d) for d in self.train_images.shape[1:])

    def to_pixels(self, images) -> np.ndarray:
        r"""Model-space images back to pictures: undo ZCA, then normalisation, then clip to [0, 1].

        .. math:: x = \mathrm{clip}\big(\mathrm{zca}^{-1}(z)\,\sigma_c + \mu_c,\ 0,\ 1\big)

        ``images``: ``(N, H, W, C)`` or one ``(H, W, C)`` image (NumPy or JAX); returns float32 NumPy, same shape.
        """
        x = np.asarray(images, dtype=np.float32)
        single = x.ndim == 3
        if single:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != self.train_images.shape[1:]:
            raise ConfigError(f"to_pixels: expected images of shape (N, {', '.join(map(str, self.image_shape))}) "
                              f"for dataset {self.name!r}, got {np.shape(images)}")
        if self.zca is not None:
            x = self.zca.invert(x)
        x = np.clip(_pre.denormalize(x, self.mean, self.std), 0.0, 1.0).astype(np.float32)
        return x[0] if single else x


def _finish(name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
            class_names: tuple[str, ...], zca: bool, zca_regularization: float) -> Dataset:
    """Images in [0, 1] → model space, fitted on train and applied to train and test."""
    num_classes = len(class_names)
    for split, y in (("train", train_y), ("test", test_y)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ConfigError(f"dataset {name!r}: {split} labels span {y.min()}..{y.max()} but there are "
                              f"{num_classes} class names; the prepared data is inconsistent, prepare it again")
    channels = train_x.shape[-1]
    if zca:
        transform = _pre.fit_zca(train_x, zca_regularization)
        mean, std = np.zeros(channels, np.float32), np.ones(channels, np.float32)
        train_x, test_x = transform.apply(train_x), transform.apply(test_x)
    else:
        transform = None
        mean, std = _pre.channel_stats(train_x)
        std = np.where(std > 0, std, np.float32(1.0)).astype(np.float32)  # a constant channel is left unscaled
        train_x, test_x = _pre.normalize(train_x, mean, std), _pre.normalize(test_x, mean, std)
    return Dataset(name=name, train_images=np.ascontiguousarray(train_x, np.float32),
                   train_labels=np.asarray(train_y, np.int32), test_images=np.ascontiguousarray(test_x, np.float32),
                   test_labels=np.asarray(test_y, np.int32), num_classes=num_classes,
                   class_names=tuple(class_names), mean=mean, std=std, zca=transform)


def _to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 0..255 → float32 [0, 1] (torchvision ``ToTensor``)."""
    return images.astype(np.float32) / np.float32(255.0)


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None,
                 source_dir: str | os.PathLike | None = None, zca: bool = False,
                 zca_regularization: float = 0.1) -> Dataset:
    """Load a dataset by name, normalised with train statistics (or ZCA-whitened), as a :class:`Dataset`.

    Args:
      name: ``"digits"`` (embedded, 8x8x1, 1,438 train / 359 test; see :mod:`ddjax.data.digits`),
        ``"fashion_mnist"`` (28x28x1, 60,000 / 10,000; prepared offline on first use, see
        :mod:`ddjax.data.tfds_sources`), or any tfds dataset prepared as array_record in ``data_dir``.
      data_dir: tfds data folder; default ``$DDJAX_DATA_DIR`` or ``~/.cache/ddjax/tfds``. Unused by ``digits``.
      source_dir: folder with the four Fashion-MNIST IDX ``.gz`` files; default
        ``/usr/share/datasets/fashion-mnist`` (Debian ``dataset-fashion-mnist``). Only read by ``fashion_mnist``
        when it is not prepared yet; ignored otherwise.
      zca: ZCA-whiten instead of mean/std normalisation (MTT), fitted on train, epsilon =
        ``zca_regularization``.

    Raises:
      ConfigError: unknown name (choices listed) or a bad argument.
      DataNotFoundError: the data is not available; the message says how to get it.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"dataset name must be a non-empty string, got {name!r}; valid choices: "
                          f"{', '.join(DATASET_NAMES)}, or a tfds dataset prepared in data_dir")
    if zca and not (isinstance(zca_regularization, (int, float)) and zca_regularization > 0):
        raise ConfigError(f"zca_regularization must be a number > 0, got {zca_regularization!r}; MTT uses 0.1")
    if name == "digits":
        train_x, train_y, test_x, test_y = _digits.load_digits_arrays()
        class_names = _digits.DIGITS_CLASS_NAMES
    else:
        if name == "fashion_mnist":
            raw = _tfds.load_fashion_mnist_arrays(data_dir, source_dir)
        else:
            raw = _tfds.load_tfds_arrays(name, data_dir)
        train_x, test_x = _to_unit(raw.train_images), _to_unit(raw.test_images)
        train_y, test_y, class_names = raw.train_labels, raw.test_labels, raw.class_names
    return _finish(name, train_x, train_y, test_x, test_y, class_names, zca, float(zca_regularization))
