"""Export a run's distilled set for use outside ddjax: as a tfds dataset, or as NCHW arrays for PyTorch.

Command line::

    python -m launch.export --workdir=workdirs/dm_tiny --format=tfds  --out=exported/tfds
    python -m launch.export --workdir=workdirs/dm_tiny --format=torch --out=exported/torch

(``--synthetic=PATH`` reads a ``synthetic.npz`` elsewhere, e.g. ``W/phases/2/synthetic.npz``, instead of
``W/synthetic.npz``.) ``--out`` must be missing or an empty folder; it is filled under a temporary name and renamed
when complete, so an interrupted export leaves nothing behind.

* ``tfds``: ``DIR/ddjax_synthetic/1.0.0/``, one ``train`` split in array_record files, read WITHOUT TensorFlow by
  ``tfds.builder_from_directory("DIR/ddjax_synthetic/1.0.0").as_data_source()["train"]`` or
  ``tfds.data_source("ddjax_synthetic", data_dir="DIR")["train"]``. Features: ``image`` (uint8 PNG,
  ``round(255 x)``), ``pixels`` (float32 ``(H, W, C)`` in [0, 1], exact), ``model_image`` (float32, model space),
  ``label`` (``ClassLabel`` with the class names; the argmax of soft labels) and, for soft-labelled sets,
  ``soft_label`` (float32 ``(K,)``). ``info.metadata`` holds ``mean``, ``std``, ``class_names``, ``dataset``,
  ``config`` (JSON) and whether ZCA was used.
* ``torch``: ``DIR/synthetic_nchw.npz`` with ``images`` (float32 ``(N, C, H, W)``, model space: what the set was
  distilled for; normalise your test images with ``mean``/``std`` (and ZCA when ``zca_matrix`` is present) the same
  way), ``pixels`` (float32 NCHW in [0, 1]), ``labels`` (int64 ``(N,)``), ``soft_labels`` (float32 ``(N, K)``, soft
  sets only), ``mean``, ``std``, ``class_names``, ``config``, the ZCA arrays when used. A PyTorch user needs only
  numpy::

      z = np.load("DIR/synthetic_nchw.npz")
      train = torch.utils.data.TensorDataset(torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]))

A bad input (missing workdir or synthetic.npz, unknown format, a non-empty ``--out``) prints one ``error:`` line and
exits with status 2; nothing is written.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from typing import TYPE_CHECKING, Any

import numpy as np

from ddjax.atomic import atomic_directory
from ddjax.errors import ConfigError, DataNotFoundError

if TYPE_CHECKING:   # ddjax.data imports jax: only after the checks, so a bad command line fails at once
    from ddjax.data.synthetic import SyntheticSet

__all__ = ["FORMATS", "TFDS_NAME", "TFDS_VERSION", "TORCH_FILE", "export", "find_synthetic", "write_tfds",
           "write_torch"]

FORMATS = ("tfds", "torch")
TFDS_NAME = "ddjax_synthetic"
TFDS_VERSION = "1.0.0"
TORCH_FILE = "synthetic_nchw.npz"


def find_synthetic(workdir: str | None, synthetic: str | None = None) -> str:
    """The ``synthetic.npz`` to export: ``synthetic`` if given, else ``workdir/synthetic.npz``; one-line errors."""
    if synthetic:
        if not os.path.isfile(synthetic):
            raise DataNotFoundError(f"--synthetic={synthetic} is not a file; pass a run's synthetic.npz")
        return synthetic
    if not workdir:
        raise ConfigError("no set given; pass --workdir=W (a finished run's workdir) or --synthetic=PATH")
    if not os.path.isdir(workdir):
        raise DataNotFoundError(f"workdir {workdir} does not exist; pass the --workdir of a finished run")
    path = os.path.join(workdir, "synthetic.npz")
    if not os.path.isfile(path):
        raise DataNotFoundError(f"{workdir} has no synthetic.npz (the run has not finished); rerun its command to "
                                "finish it, or pass --synthetic=PATH (e.g. W/phases/0/synthetic.npz)")
    return path


def _check_out(out: str | None) -> str:
    if not out:
        raise ConfigError("no --out given; pass --out=DIR (a new or empty folder)")
    if os.path.lexists(out) and not (os.path.isdir(out) and not os.listdir(out)):
        raise ConfigError(f"--out={out} exists and is not an empty folder; nothing was written; pass a new folder "
                          "or remove it first")
    return out


def export(workdir: str | None, fmt: str, out: str, *, synthetic: str | None = None, quiet: bool = False) -> str:
    """Export the set of ``workdir`` (or the ``synthetic`` npz) to ``out`` as ``fmt`` (``tfds`` or ``torch``).

    Returns the path a user reads: the tfds version folder or the ``.npz`` file. Every check runs before anything
    is written; the folder appears complete or not at all. ``quiet``: no tfds progress bars.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format={fmt!r}; valid choices: {', '.join(FORMATS)}")
    path = find_synthetic(workdir, synthetic)
    out = _check_out(out)
    from ddjax.data.synthetic import load_synthetic

    syn = load_synthetic(path)
    with atomic_directory(out, replace=False) as tmp:
        if fmt == "tfds":
            write_tfds(syn, tmp, quiet=quiet)
        else:
            write_torch(syn, tmp)
    if fmt == "tfds":
        return os.path.join(out, TFDS_NAME, TFDS_VERSION)
    return os.path.join(out, TORCH_FILE)


# ----------------------------------------------------------------------------------------------------------- torch
def torch_arrays(syn: SyntheticSet) -> dict[str, np.ndarray]:
    """The arrays of ``synthetic_nchw.npz``: NHWC → NCHW (``x.transpose(0, 3, 1, 2)``), labels int64."""
    out = {"images": np.ascontiguousarray(syn.images.transpose(0, 3, 1, 2), np.float32),
           "pixels": np.ascontiguousarray(syn.pixels.transpose(0, 3, 1, 2), np.float32),
           "labels": syn.hard_labels.astype(np.int64)}
    if syn.labels.ndim == 2:
        out["soft_labels"] = np.asarray(syn.labels, np.float32)
    if syn.mean is not None:
        out.update(mean=np.asarray(syn.mean, np.float32), std=np.asarray(syn.std, np.float32))
    if syn.class_names is not None:
        out["class_names"] = np.asarray(syn.class_names, dtype=str)
    if syn.config is not None:
        out["config"] = np.asarray(json.dumps(syn.config, sort_keys=True))
    if syn.zca is not None:
        out.update(zca_mean=syn.zca.mean, zca_matrix=syn.zca.matrix, zca_inverse=syn.zca.inverse)
    if syn.lr is not None:
        out["lr"] = np.asarray(syn.lr)
    return out


def write_torch(syn: SyntheticSet, folder: str) -> str:
    """Write ``folder/synthetic_nchw.npz`` (see the module docstring); returns its path."""
    path = os.path.join(folder, TORCH_FILE)
    with open(path, "wb") as f:
        np.savez(f, **torch_arrays(syn))
    return path


# ------------------------------------------------------------------------------------------------------------ tfds
def _png(pixels: np.ndarray) -> bytes:
    """Lossless PNG of ``round(255 x)`` for one ``(H, W, C)`` image in [0, 1], C 1 or 3 (PIL; no TensorFlow)."""
    from PIL import Image

    u8 = np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8).save(buf, format="PNG")
    return buf.getvalue()


def write_tfds(syn: SyntheticSet, data_dir: str, *, quiet: bool = False) -> str:
    """Prepare the set as the tfds dataset ``ddjax_synthetic`` (array_record, split ``train``) in ``data_dir``;
    returns the version folder. Built with a TF-free ``GeneratorBasedBuilder`` as in
    :mod:`ddjax.data.tfds_sources`."""
    import tensorflow_datasets as tfds

    h, w, c = syn.image_shape
    if c not in (1, 3):
        raise ConfigError(f"tfds export needs 1 or 3 channels, the set has {c}; use --format=torch")
    num_classes = syn.num_classes
    names = list(syn.class_names) if syn.class_names is not None else [str(i) for i in range(num_classes)]
    soft = syn.labels.ndim == 2
    features: dict[str, Any] = {
        "image": tfds.features.Image(shape=(h, w, c)),
        "pixels": tfds.features.Tensor(shape=(h, w, c), dtype=np.float32),
        "model_image": tfds.features.Tensor(shape=(h, w, c), dtype=np.float32),
        "label": tfds.features.ClassLabel(names=names),
    }
    if soft:
        features["soft_label"] = tfds.features.Tensor(shape=(num_classes,), dtype=np.float32)
    metadata = {"dataset": syn.dataset, "class_names": names, "zca": syn.zca is not None,
                "mean": None if syn.mean is None else [float(v) for v in syn.mean],
                "std": None if syn.std is None else [float(v) for v in syn.std],
                "config": json.dumps(syn.config, sort_keys=True) if syn.config is not None else None,
                "lr": None if syn.lr is None else np.asarray(syn.lr).tolist()}
    hard = syn.hard_labels

    class DdjaxSynthetic(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """A ddjax distilled set (see launch/export.py)."""
        name = TFDS_NAME
        VERSION = tfds.core.Version(TFDS_VERSION)

        def _info(self):
            return self.dataset_info_from_configs(
                description=f"ddjax distilled set of {syn.dataset or 'a dataset'}: {len(hard)} images",
                features=tfds.features.FeaturesDict(features), supervised_keys=("pixels", "label"),
                metadata=tfds.core.MetadataDict(metadata), disable_shuffling=True)   # keep the set's order

        def _split_generators(self, dl_manager):
            del dl_manager  # nothing is downloaded
            return {"train": self._generate_examples()}

        def _generate_examples(self):  # pylint: disable=arguments-differ
            for i in range(len(hard)):
                example = {"image": _png(syn.pixels[i]), "pixels": syn.pixels[i], "model_image": syn.images[i],
                           "label": int(hard[i])}
                if soft:
                    example["soft_label"] = np.asarray(syn.labels[i], np.float32)
                yield i, example

    if quiet:
        tfds.disable_progress_bar()
    builder = DdjaxSynthetic(data_dir=data_dir, file_format="array_record")
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():   # tfds's banner
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    downloads = os.path.join(data_dir, "downloads")
    if os.path.isdir(downloads) and not any(files for _, _, files in os.walk(downloads)):
        shutil.rmtree(downloads)   # tfds's empty download folders: nothing was downloaded
    return builder.data_dir


if __name__ == "__main__":
    import sys

    from absl import app, flags

    flags.DEFINE_string("workdir", None, "A finished run's workdir (its synthetic.npz is exported).")
    flags.DEFINE_string("synthetic", None, "Or: the synthetic.npz to export (e.g. W/phases/0/synthetic.npz).")
    flags.DEFINE_string("format", None, f"One of: {', '.join(FORMATS)}.")
    flags.DEFINE_string("out", None, "A new or empty folder to write.")

    def _main(argv):
        from launch import cli

        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        cli.quiet_logs()
        quiet = not flags.FLAGS["verbosity"].present   # also silences tfds's progress bars
        f = flags.FLAGS
        if f.format is None:
            print(f"error: no --format given; pass --format={'|'.join(FORMATS)}", file=sys.stderr)
            sys.exit(2)
        from launch.export import export as export_set   # tfds needs the builder class in a package, not __main__

        where = cli.run_or_exit(export_set, f.workdir, f.format, f.out, synthetic=f.synthetic, quiet=quiet)
        print(f"wrote {where}")

    app.run(_main)
