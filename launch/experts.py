"""Command line: ``python -m launch.experts --config=configs/satm_tiny.py [--config.satm.experts.num_experts=...]``.

Trains the expert trajectories a trajectory-matching config (``algorithm`` = ``mtt`` or ``satm``) needs, in one
jitted program, and stores them in the pretrained store (``config.pretrained_dir``; see :mod:`ddjax.pretrained`),
keyed by everything that determines them. ``launch.main`` then finds them. Existing experts are reported, not
retrained. A user error prints ``error: <one line>`` and exits with status 2.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

from launch import cli

FLAGS = flags.FLAGS

TRAJECTORY_ALGORITHMS = ("mtt", "satm")


def make_experts(config, stream=None) -> str:
    """Load or train the experts of ``config``; returns the store folder. Raises DDJaxError on bad input."""
    from ddjax import data
    from ddjax.algorithms import trajectory
    from ddjax.errors import check_choice
    from ddjax.sharding import make_mesh
    from launch.config import validate_config

    validate_config(config)
    check_choice("algorithm (for expert trajectories)", config.algorithm, TRAJECTORY_ALGORITHMS)
    hp = config[config.algorithm]
    dataset = data.load_dataset(config.data.name, data_dir=config.data.data_dir, source_dir=config.data.source_dir,
                                zca=config.data.zca, zca_regularization=config.data.zca_regularization)
    with config.unlocked():
        config.make_pretrained = True
    buffer, path = trajectory.load_or_make_experts(config, dataset, hp, stream, mesh=make_mesh())
    print(f"experts: {buffer.num_experts} trajectories x {buffer.num_snapshots} snapshots in {path}",
          file=stream or sys.stdout)
    return path


def main(argv):
    cli.start(argv, "python -m launch.experts --config=configs/satm_tiny.py")
    cli.run_or_exit(make_experts, FLAGS.config)

if __name__ == "__main__":
    # Defined here, not at import: tests and users import make_* from several launch modules at once, and absl
    # refuses a flag defined twice.
    config_flags.DEFINE_config_file("config", None, "Path to a ddjax config file for mtt or satm.", lock_config=True)
    app.run(main)
