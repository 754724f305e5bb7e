"""Datasets, per-channel normalisation and ZCA whitening.

* :func:`load_dataset` → :class:`Dataset` (float32 NHWC images in model space, int32 labels, the fitted transforms
  and ``to_pixels`` to get pictures back).
* ``digits`` (embedded, no download), ``fashion_mnist`` (prepared offline through tfds without TensorFlow), or any
  tfds dataset already prepared as array_record in ``data_dir`` (default ``$DDJAX_DATA_DIR`` or
  ``~/.cache/ddjax/tfds``).
* :func:`load_domains` → :class:`DomainCollection`: an ordered list of domains (rotated copies, styled renderings
  of a base dataset, or DomainBed-layout folders) sharing one label space and one normalisation, each domain
  built lazily as a :class:`Dataset` (:mod:`ddjax.data.domains`).
* :func:`load_synthetic` → :class:`SyntheticSet`: a run's self-describing ``synthetic.npz`` (images, pixels, labels,
  normalisation, ZCA, class names, config) read back, with ``to_pixels`` / ``to_model`` (:mod:`ddjax.data.synthetic`).
* Pure helpers: :func:`channel_stats`, :func:`normalize`, :func:`denormalize`, :func:`fit_zca`,
  :class:`ZCAWhitening` (``apply`` / ``invert``).

``tensorflow_datasets`` is imported only when a tfds dataset is asked for.
"""
from ddjax.data.dataset import DATASET_NAMES, Dataset, load_dataset
from ddjax.data.domains import DOMAIN_SOURCES, STYLE_NAMES, DomainCollection, collection_from_config, load_domains
from ddjax.data.digits import DIGITS_CLASS_NAMES, load_digits_arrays
from ddjax.data.synthetic import SyntheticSet, load_synthetic, synthetic_arrays
from ddjax.data.preprocess import ZCAWhitening, channel_stats, denormalize, fit_zca, normalize
from ddjax.data.tfds_sources import (
    default_data_dir,
    load_fashion_mnist_arrays,
    load_tfds_arrays,
    prepare_fashion_mnist,
    prepared_datasets,
    read_idx,
)

__all__ = [
    "DATASET_NAMES", "DIGITS_CLASS_NAMES", "DOMAIN_SOURCES", "Dataset", "DomainCollection", "STYLE_NAMES",
    "SyntheticSet", "ZCAWhitening", "channel_stats", "collection_from_config", "default_data_dir", "denormalize",
    "fit_zca", "load_dataset", "load_digits_arrays", "load_domains", "load_fashion_mnist_arrays", "load_synthetic",
    "load_tfds_arrays", "normalize", "prepare_fashion_mnist", "prepared_datasets", "read_idx", "synthetic_arrays",
]
