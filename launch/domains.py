"""The domain collection a config describes, and a picture of its domains.

Command line: ``python -m launch.domains --config=configs/dm_tiny.py --config.domains.source=styled --out=FILE.png``
writes one row per class and, per domain (left to right, in stream order), ``--per_domain`` train images of that
class: a quick look at a stand-in or at a user's DomainBed folders before a run. A user error prints
``error: <one line>`` and exits with status 2.
"""
from __future__ import annotations

import os

import numpy as np

from ddjax import data
from ddjax.data.domains import collection_from_config  # re-exported: the launcher's name for it
from launch import outputs

__all__ = ["collection_from_config", "save_domain_samples"]


def save_domain_samples(path: str, collection: data.DomainCollection, per_domain: int = 2) -> None:
    """PNG grid: row = class, columns = ``per_domain`` first train images of the class in each domain in turn."""
    images, labels = [], []
    loaded = [collection.load(i) for i in range(collection.num_domains)]
    for c in range(collection.num_classes):
        for d in loaded:
            idx = np.flatnonzero(d.train_labels == c)[:per_domain]
            images.append(d.to_pixels(d.train_images[idx]))
            labels += [c] * len(idx)
    outputs.save_image_grid(path, np.concatenate(images), np.asarray(labels), collection.num_classes,
                            collection.class_names)


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    from launch import cli

    config_flags.DEFINE_config_file("config", None, "Path to a ddjax config file.", lock_config=True)
    flags.DEFINE_string("out", None, "PNG to write (default: <collection name>.png).")
    flags.DEFINE_integer("per_domain", 2, "Images per class and domain.")

    def _main(argv):
        cli.start(argv, "python -m launch.domains --config=configs/dm_tiny.py --config.domains.source=styled")

        def show():
            from ddjax.errors import ConfigError
            if not flags.FLAGS.config.domains.source:
                raise ConfigError("config.domains.source is empty; set --config.domains.source=rotated|styled|folder")
            collection = collection_from_config(flags.FLAGS.config)
            out = flags.FLAGS.out or f"{collection.name}.png"
            save_domain_samples(out, collection, flags.FLAGS.per_domain)
            print(f"{collection.name}: domains {', '.join(collection.domains)}; normalised with "
                  f"{collection.statistics}; picture in {os.path.abspath(out)}")

        cli.run_or_exit(show)

    app.run(_main)
