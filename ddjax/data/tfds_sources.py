"""tensorflow-datasets sources read WITHOUT TensorFlow: array_record files through ``tfds.data_source``.

* ``fashion_mnist`` is prepared offline by :class:`FashionMNISTOffline` (built lazily by
  :func:`fashion_mnist_builder_cls`), a TF-free subclass of tfds's official ``FashionMNIST`` builder (same name,
  version and features, so the official on-disk layout ``<data_dir>/fashion_mnist/3.0.1/`` is produced) that reads
  the four IDX ``.gz`` files from the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``) or from a ``source_dir``, and stores images as PNG bytes (PIL) in
  ``array_record`` files. Nothing is downloaded (``DownloadConfig(try_download_gcs=False)``, ``download=False``).
* Any other dataset already prepared as array_record in ``data_dir`` (features ``'image'``: uint8 HWC, and
  ``'label'``: ``ClassLabel``) is read the same way.

Decoding PNGs is the slow part (~6 s for Fashion-MNIST's 70,000 images), so the decoded arrays are cached, once,
as ``<data_dir>/<name>/[<config>/]<version>/ddjax_arrays.npz`` (uint8 images, int32 labels) beside the prepared
files; later loads read only that file. ``tfds.load`` / ``tfds.as_numpy`` are never used (they need TensorFlow).

``tensorflow_datasets`` is imported inside the functions that need it, so ``import ddjax.data`` works without it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import gzip
import logging
import os
import zipfile

import numpy as np

from ddjax.atomic import atomic_open
from ddjax.errors import ConfigError, DataNotFoundError

__all__ = [
    "DATA_DIR_ENV", "DEFAULT_DATA_DIR", "DEBIAN_FASHION_MNIST_DIR", "FASHION_MNIST_FILES", "CACHE_FILENAME",
    "RawArrays", "default_data_dir", "read_idx", "fashion_mnist_builder_cls", "prepare_fashion_mnist",
    "load_fashion_mnist_arrays", "load_tfds_arrays", "prepared_datasets",
]

log = logging.getLogger(__name__)

DATA_DIR_ENV = "DDJAX_DATA_DIR"
DEFAULT_DATA_DIR = os.path.join("~", ".cache", "ddjax", "tfds")
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CACHE_FILENAME = "ddjax_arrays.npz"
_CACHE_FORMAT = 1
_CACHE_KEYS = {"format", "train_images", "train_labels", "test_images", "test_labels", "class_names"}
_DECODE_CHUNK = 2000
_SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class RawArrays:
    """Undecorated arrays of a dataset: images uint8 ``(N, H, W, C)`` in 0..255, labels int32 ``(N,)``."""
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]


def default_data_dir() -> str:
    """Where tfds data is prepared and read: ``$DDJAX_DATA_DIR`` if set, else ``~/.cache/ddjax/tfds``."""
    return os.path.abspath(os.path.expanduser(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR))


def _resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
    return default_data_dir() if data_dir is None else os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


# ----------------------------------------------------------------------------------------------------- IDX files
def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format; gzip-compressed when the name ends in ``.gz``) as uint8.

    Layout: 2 zero bytes, a type byte (0x08 = unsigned byte), the number of axes ``d``, ``d`` big-endian uint32
    sizes, then the data in row-major order.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            buf = f.read()
    except (OSError, EOFError) as e:  # includes gzip.BadGzipFile
        raise DataNotFoundError(f"cannot read IDX file {path} ({e}); replace it with an intact copy") from None
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] != 0x08:
        raise DataNotFoundError(f"{path} is not an unsigned-byte IDX file (bad magic number); replace it with an "
                                "intact copy (apt-get install --reinstall dataset-fashion-mnist)")
    ndim = buf[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(buf, ">u4", count=ndim, offset=4))
    if len(buf) - header != int(np.prod(shape)):
        raise DataNotFoundError(f"{path} holds {len(buf) - header} data bytes but its header says shape {shape}; "
                                "replace it with an intact copy (apt-get install --reinstall dataset-fashion-mnist)")
    return np.frombuffer(buf, np.uint8, offset=header).reshape(shape)


def _fashion_source_paths(source_dir: str | os.PathLike | None) -> dict[str, str]:
    """Paths of the four IDX files (``name.gz``, or ``name`` without ``.gz``); DataNotFoundError if any is missing."""
    folder = DEBIAN_FASHION_MNIST_DIR if source_dir is None else os.path.expanduser(os.fspath(source_dir))
    paths, missing = {}, []
    for key, fname in FASHION_MNIST_FILES.items():
        for candidate in (fname, fname[: -len(".gz")]):
            if os.path.isfile(os.path.join(folder, candidate)):
                paths[key] = os.path.join(folder, candidate)
                break
        else:
            missing.append(fname)
    if missing:
        raise DataNotFoundError(
            f"Fashion-MNIST source files missing in {folder}: {', '.join(missing)}; install them with "
            f"'sudo apt-get install dataset-fashion-mnist' (puts them in {DEBIAN_FASHION_MNIST_DIR}), or pass "
            f"--config.data.source_dir=DIR (load_dataset(..., source_dir=DIR)) for a folder holding "
            f"{', '.join(FASHION_MNIST_FILES.values())}")
    return paths


def _read_fashion_split(paths: dict[str, str], split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(paths[f"{split}_images"]), read_idx(paths[f"{split}_labels"])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
        raise DataNotFoundError(
            f"Fashion-MNIST {split} files have images {images.shape} and labels {labels.shape}, expected "
            "(N, 28, 28) and (N,); replace them with the original files (apt-get install dataset-fashion-mnist)")
    if labels.size and labels.max() > 9:
        raise DataNotFoundError(f"Fashion-MNIST {split} labels go up to {labels.max()}, expected 0..9; replace "
                                "the label file with the original (apt-get install dataset-fashion-mnist)")
    return images, labels


# ------------------------------------------------------------------------------------------------ tfds builders
def _png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG encoding of one uint8 ``(H, W)`` image with PIL (no ``tf.image.encode_png``)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


@functools.lru_cache(maxsize=1)
def fashion_mnist_builder_cls():
    """The TF-free Fashion-MNIST builder class (created on first use, because it subclasses a tfds class)."""
    import tensorflow_datasets as tfds

    class FashionMNISTOffline(tfds.image_classification.FashionMNIST, skip_registration=True):
        """Official ``fashion_mnist`` (name, version, features) prepared from local IDX files, TF-free."""
        name = "fashion_mnist"

        def __init__(self, *, source_arrays: dict[str, tuple[np.ndarray, np.ndarray]], **kwargs):
            self._source_arrays = dict(source_arrays)  # split -> (uint8 images (N, 28, 28), labels (N,))
            super().__init__(**kwargs)

        def _split_generators(self, dl_manager):
            del dl_manager  # nothing is downloaded
            return {split: self._generate_examples(split) for split in _SPLITS}

        def _generate_examples(self, split):  # pylint: disable=arguments-differ
            images, labels = self._source_arrays[split]
            for i in range(len(labels)):
                yield i, {"image": _png_bytes(images[i]), "label": int(labels[i])}

    return FashionMNISTOffline


def _is_prepared(builder) -> bool:
    return os.path.isfile(os.path.join(builder.data_dir, "dataset_info.json"))


@contextlib.contextmanager
def _preparation_lock(data_dir: str, name: str):
    """One process at a time prepares ``name`` in ``data_dir`` (an advisory ``fcntl.flock`` on
    ``<data_dir>/.<name>.lock``, released when the process dies). tfds renames its temporary folder into place at
    the end, so the second of two runs started together on a fresh machine failed with ``FileExistsError``."""
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, f".{name}.lock"), "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_fashion_mnist(data_dir: str | os.PathLike | None = None,
                          source_dir: str | os.PathLike | None = None) -> str:
    """Prepare ``fashion_mnist`` as array_record in ``data_dir`` from the IDX files; return the version folder.

    A no-op when it is already prepared there. ~10-15 s on 2 CPU cores (PNG encoding); 42 MB on disk. Processes
    preparing the same ``data_dir`` at once take turns (:func:`_preparation_lock`); the later ones find it prepared.
    """
    import tensorflow_datasets as tfds

    data_dir = _resolve_data_dir(data_dir)
    official = tfds.builder("fashion_mnist", data_dir=data_dir)
    if _is_prepared(official):
        return official.data_dir
    paths = _fashion_source_paths(source_dir)
    arrays = {split: _read_fashion_split(paths, split) for split in _SPLITS}  # validated before tfds starts
    with _preparation_lock(data_dir, "fashion_mnist"):
        if _is_prepared(official):   # another process prepared it while this one waited
            return official.data_dir
        builder = fashion_mnist_builder_cls()(source_arrays=arrays, data_dir=data_dir, file_format="array_record")
        log.info("preparing fashion_mnist from %s into %s", os.path.dirname(paths["train_images"]), data_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder.data_dir


# ------------------------------------------------------------------------------------------------ reading + cache
def prepared_datasets(data_dir: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Names (``name`` or ``name/config``) of the tfds datasets prepared in ``data_dir`` (a ``dataset_info.json``
    in ``<name>/<version>/`` or ``<name>/<config>/<version>/``), sorted."""
    root = _resolve_data_dir(data_dir)
    found = set()
    if not os.path.isdir(root):
        return ()
    for name in sorted(os.listdir(root)):
        top = os.path.join(root, name)
        if name == "downloads" or not os.path.isdir(top):
            continue
        for sub in os.listdir(top):
            if os.path.isfile(os.path.join(top, sub, "dataset_info.json")):
                found.add(name)
            elif os.path.isdir(os.path.join(top, sub)):
                for ver in os.listdir(os.path.join(top, sub)):
                    if os.path.isfile(os.path.join(top, sub, ver, "dataset_info.json")):
                        found.add(f"{name}/{sub}")
    return tuple(sorted(found))


def _read_cache(path: str, builder) -> RawArrays | None:
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        log.warning("ignoring unreadable cache %s (%s); decoding again", path, e)
        return None
    sizes = {s: builder.info.splits[s].num_examples for s in _SPLITS}
    if (not _CACHE_KEYS <= arrays.keys() or int(arrays["format"]) != _CACHE_FORMAT
            or any(len(arrays.get(f"{s}_labels", ())) != sizes[s] for s in _SPLITS)):
        log.warning("cache %s does not match the prepared data; decoding again", path)
        return None
    return RawArrays(arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"],
                     tuple(str(n) for n in arrays["class_names"]))


def _write_cache(path: str, raw: RawArrays) -> None:
    """Write atomically (temporary file then rename); a read-only data_dir only costs the speed-up."""
    try:
        with atomic_open(path, "wb") as f:
            np.savez(f, format=np.int64(_CACHE_FORMAT), train_images=raw.train_images,
                     train_labels=raw.train_labels, test_images=raw.test_images, test_labels=raw.test_labels,
                     class_names=np.asarray(raw.class_names, dtype=str))
    except OSError as e:
        log.warning("could not write the array cache %s (%s); the next load will decode again", path, e)


def _decode_split(source, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode a whole split in bulk (``__getitems__`` on chunks) into uint8 images and int32 labels."""
    n = len(source)
    if n == 0:
        raise DataNotFoundError(f"tfds dataset {name!r} has an empty {split!r} split; prepare it again")
    images = labels = None
    for start in range(0, n, _DECODE_CHUNK):
        examples = source.__getitems__(list(range(start, min(start + _DECODE_CHUNK, n))))
        if images is None:
            first = np.asarray(examples[0]["image"])
            if first.ndim == 2:
                first = first[..., None]
            if first.ndim != 3 or first.dtype != np.uint8:
                raise ConfigError(f"tfds dataset {name!r}: feature 'image' is {first.dtype} {first.shape}, ddjax "
                                  "needs uint8 (H, W, C) images; choose an image-classification dataset")
            images = np.empty((n, *first.shape), np.uint8)
            labels = np.empty((n,), np.int32)
        for j, ex in enumerate(examples):
            img = np.asarray(ex["image"])
            images[start + j] = img.reshape(images.shape[1:])
            labels[start + j] = int(ex["label"])
    return images, labels


def load_tfds_arrays(name: str, data_dir: str | os.PathLike | None = None) -> RawArrays:
    """Arrays of the tfds dataset ``name`` prepared as array_record in ``data_dir`` (default
    :func:`default_data_dir`), from the ``.npz`` cache when present, else decoded through ``tfds.data_source`` and
    cached. Needs features ``'image'`` (uint8 HWC) and ``'label'`` (``ClassLabel``) and splits train and test.

    Raises:
      ConfigError: ``name`` is neither a tfds dataset nor prepared in ``data_dir`` (choices listed), or the
        dataset has no ``image``/``label`` features or no train/test split.
      DataNotFoundError: a known tfds dataset that is not prepared (as array_record) in ``data_dir``.
    """
    import tensorflow_datasets as tfds

    root = _resolve_data_dir(data_dir)
    known = ("digits", "fashion_mnist", *(n for n in prepared_datasets(root) if n != "fashion_mnist"))
    try:
        builder = tfds.builder(name, data_dir=root)
    except ValueError:  # tfds's DatasetNotFoundError (unregistered and not on disk) is a ValueError, as are bad names
        raise ConfigError(f"unknown dataset {name!r}; valid choices: {', '.join(known)}, or any tfds dataset "
                          f"prepared as array_record in {root} (set data_dir or ${DATA_DIR_ENV})") from None
    if not _is_prepared(builder):
        raise DataNotFoundError(
            f"tfds dataset {name!r} is not prepared in {root}; prepare it there as array_record (e.g. "
            f"'tfds build {name} --data_dir={root} --file_format=array_record' where TensorFlow is installed), point "
            f"data_dir (or ${DATA_DIR_ENV}) at where it is, or use one of: {', '.join(known)}")
    info = builder.info
    file_format = getattr(info.file_format, "value", info.file_format)
    if str(file_format) != "array_record":
        raise DataNotFoundError(
            f"tfds dataset {name!r} in {builder.data_dir} is stored as {file_format}, which needs TensorFlow; "
            f"prepare it again with --file_format=array_record (ddjax reads array_record only)")
    features = info.features
    if "image" not in features or "label" not in features or not hasattr(features["label"], "names"):
        raise ConfigError(f"tfds dataset {name!r} has features {sorted(features.keys())}; ddjax needs 'image' "
                          "(uint8 HWC) and a ClassLabel 'label'; choose an image-classification dataset")
    missing = [s for s in _SPLITS if s not in info.splits]
    if missing:
        raise ConfigError(f"tfds dataset {name!r} has splits {sorted(info.splits.keys())}, ddjax needs "
                          f"'train' and 'test'; choose a dataset with both")

    cache = os.path.join(builder.data_dir, CACHE_FILENAME)
    raw = _read_cache(cache, builder)
    if raw is not None:
        return raw
    sources = tfds.data_source(name, data_dir=root, download=False)
    decoded = {s: _decode_split(sources[s], name, s) for s in _SPLITS}
    if decoded["train"][0].shape[1:] != decoded["test"][0].shape[1:]:
        raise ConfigError(f"tfds dataset {name!r}: train images {decoded['train'][0].shape[1:]} and test images "
                          f"{decoded['test'][0].shape[1:]} differ in shape; ddjax needs one image shape")
    raw = RawArrays(*decoded["train"], *decoded["test"], tuple(str(n) for n in features["label"].names))
    _write_cache(cache, raw)
    return raw


def load_fashion_mnist_arrays(data_dir: str | os.PathLike | None = None,
                              source_dir: str | os.PathLike | None = None) -> RawArrays:
    """Fashion-MNIST arrays (60,000 train / 10,000 test, uint8 ``(N, 28, 28, 1)``), preparing it first if needed.

    First call per ``data_dir``: prepare (~10-15 s) + decode (~6 s) + write the ``.npz`` cache; afterwards < 1 s.
    """
    prepare_fashion_mnist(data_dir, source_dir)
    return load_tfds_arrays("fashion_mnist", data_dir)
