"""Command line: ``python -m launch.main --config=configs/dm_tiny.py --workdir=DIR [--config.ipc=1 ...]``.

Kept short on purpose (as flax's examples do): the loop lives in :mod:`launch.run` so tests and notebooks can
import it. A user error prints ``error: <one line>`` and exits with status 2; nothing good is overwritten.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a ddjax config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, pictures and results "
                    "(default: workdirs/<config file name>).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.config is None:
        print("error: no config given; run e.g. python -m launch.main --config=configs/dm_tiny.py", file=sys.stderr)
        sys.exit(2)
    if not FLAGS["verbosity"].present:  # orbax and jax log every action at INFO; --verbosity=0 shows them
        logging.set_verbosity(logging.WARNING)
    import jax  # after absl parsed flags, so --xla/--jax env settings from the shell apply

    from ddjax.errors import DDJaxError
    from launch.run import run

    workdir = FLAGS.workdir or os.path.join(
        "workdirs", os.path.splitext(os.path.basename(FLAGS["config"].config_filename))[0])
    print(f"workdir: {os.path.abspath(workdir)}  (JAX process {jax.process_index()}/{jax.process_count()}, "
          f"devices: {jax.devices()})", file=sys.stderr)
    try:
        results = run(FLAGS.config, workdir)
    except DDJaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    line = f"{results['algorithm']} on {results['dataset']}, ipc {results['ipc']}: synthetic " \
           f"{results['synthetic']['mean']:.4f} ± {results['synthetic']['std']:.4f}"
    if "random_real" in results:
        line += f" vs random real {results['random_real']['mean']:.4f} ± {results['random_real']['std']:.4f}"
    print(line + f"  ({results['seconds']:.0f} s; outputs in {workdir})")


if __name__ == "__main__":
    app.run(main)
