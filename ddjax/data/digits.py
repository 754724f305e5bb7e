"""The embedded default dataset: scikit-learn's 8x8 handwritten digits (UCI optdigits test set, 1,797 images).

The vendored ``digits.csv.gz`` is scikit-learn's ``sklearn/datasets/data/digits.csv.gz``: one row per image,
64 pixel counts in 0..16 (row-major 8x8) then the label 0..9. No download and no scikit-learn at runtime.

Fixed train/test split (``DIGITS_SPLIT_SEED = 0``), stratified per class:

* ``rs = numpy.random.RandomState(0)`` (the legacy generator, whose stream NumPy keeps stable across versions);
* for class ``c = 0, 1, ..., 9`` in that order: ``p = rs.permutation(indices of class c in file order)``;
  the first ``(n_c + 2) // 5`` entries of ``p`` (``round(n_c / 5)``, i.e. 20 %) go to test, the rest to train;
* both splits are then sorted by file row, so images keep the file order.

Class counts ``n_c`` = 178, 182, 177, 183, 181, 182, 181, 179, 174, 180. Result: **1,438 train** images
(142, 146, 142, 146, 145, 146, 145, 143, 139, 144 per class) and **359 test** images
(36, 36, 35, 37, 36, 36, 36, 36, 35, 36 per class).
"""
from __future__ import annotations

import functools
import gzip
import importlib.resources

import numpy as np

__all__ = ["DIGITS_SPLIT_SEED", "DIGITS_CLASS_NAMES", "digits_raw", "digits_split_indices", "load_digits_arrays"]

DIGITS_SPLIT_SEED = 0
DIGITS_CLASS_NAMES: tuple[str, ...] = tuple(str(i) for i in range(10))


@functools.lru_cache(maxsize=1)
def digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits in file order: pixel counts ``(1797, 8, 8)`` uint8 in 0..16 and labels ``(1797,)`` int32.

    Parsed once per process (cached); the returned arrays are read-only.
    """
    data = importlib.resources.files(__package__).joinpath("digits.csv.gz").read_bytes()
    table = np.loadtxt(gzip.decompress(data).decode("ascii").splitlines(), delimiter=",", dtype=np.int64)
    pixels = table[:, :64].reshape(-1, 8, 8).astype(np.uint8)
    labels = table[:, 64].astype(np.int32)
    pixels.flags.writeable = False
    labels.flags.writeable = False
    return pixels, labels


@functools.lru_cache(maxsize=1)
def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, test)`` of the fixed stratified ~80/20 split documented in this module."""
    _, labels = digits_raw()
    rs = np.random.RandomState(DIGITS_SPLIT_SEED)
    test = []
    for c in range(len(DIGITS_CLASS_NAMES)):
        idx = np.flatnonzero(labels == c)
        perm = rs.permutation(idx)
        test.append(perm[: (len(idx) + 2) // 5])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)  # sorted
    test_idx.flags.writeable = False
    train_idx.flags.writeable = False
    return train_idx, test_idx


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, train_labels, test_images, test_labels)``: images float32 ``(N, 8, 8, 1)`` = counts / 16."""
    pixels, labels = digits_raw()
    train_idx, test_idx = digits_split_indices()
    images = (pixels.astype(np.float32) / np.float32(16.0))[..., None]
    return images[train_idx], labels[train_idx].copy(), images[test_idx], labels[test_idx].copy()
