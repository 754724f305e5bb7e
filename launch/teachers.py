"""Command line: ``python -m launch.teachers --config=configs/iid_tiny.py [--config.iid.teacher.num_teachers=...]``.

Trains the teacher pool an IID config needs (``config.iid.teacher``: K networks on the real training data in one
jitted program) and stores it in the pretrained store (``config.pretrained_dir``; see :mod:`ddjax.pretrained`),
keyed by everything that determines it, so ``launch.main`` finds it. An existing pool is reported, not retrained.
Prints each teacher's test accuracy. A user error prints ``error: <one line>`` and exits with status 2.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

from launch import cli

FLAGS = flags.FLAGS

TEACHER_ALGORITHMS = ("iid",)


def make_teachers(config, stream=None, config_hint: str = "<config file>") -> dict:
    """Load or train the teacher pool of ``config``; returns ``{"path", "num_teachers", "test_accuracy"}``.

    Raises a DDJaxError (one line) on bad input.
    """
    import numpy as np

    from ddjax import data, evaluate, teachers
    from ddjax.errors import check_choice
    from ddjax.sharding import make_mesh
    from launch.config import validate_config

    validate_config(config)
    check_choice("algorithm (for a teacher pool)", config.algorithm, TEACHER_ALGORITHMS)
    tc = config[config.algorithm].teacher
    dataset = data.load_dataset(config.data.name, data_dir=config.data.data_dir, source_dir=config.data.source_dir,
                                zca=config.data.zca, zca_regularization=config.data.zca_regularization)
    stream = sys.stdout if stream is None else stream
    pool, path, model = teachers.load_or_make_teachers(config, tc, dataset, allow_make=True, stream=stream,
                                                       config_hint=config_hint, mesh=make_mesh())
    acc = evaluate.accuracy(model, pool, dataset.test_images, dataset.test_labels)
    print(f"teachers: {teachers.pool_size(pool)} x {tc.model} (width {tc.width}, norm {tc.norm}, {tc.epochs} epochs) "
          f"in {path}; test accuracy {np.mean(acc):.4f} ± {np.std(acc):.4f} "
          f"(per teacher: {', '.join(f'{a:.3f}' for a in acc)})", file=stream)
    return {"path": path, "num_teachers": teachers.pool_size(pool), "test_accuracy": [float(a) for a in acc]}


def main(argv):
    cli.start(argv, "python -m launch.teachers --config=configs/iid_tiny.py")
    cli.run_or_exit(make_teachers, FLAGS.config, config_hint=FLAGS["config"].config_filename)

if __name__ == "__main__":
    # Defined here, not at import: tests and users import make_* from several launch modules at once, and absl
    # refuses a flag defined twice.
    config_flags.DEFINE_config_file("config", None, "Path to a ddjax config file with a teacher pool (iid).", lock_config=True)
    app.run(main)
