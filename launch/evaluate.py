"""Command line: ``python -m launch.evaluate --workdir=W --arch=NAME [--synthetic=PATH] [--num_seeds=K] [--epochs=E]``
or ``python -m launch.evaluate --synthetic=PATH --arch=NAME`` (a set whose npz carries its run's config).

Trains ``K`` fresh networks of architecture ``NAME`` (``ConvNet``, ``ConvNetW64``, ``ConvNetD4``, ``ConvNetBN``,
``AlexNet``, ``VGG11``, ``VGG11BN``, ``ResNet18``, ``ResNet18BN``, ``ResNet50``, ...: :func:`ddjax.models.
build_architecture`) on the set a finished run saved (``W/synthetic.npz``, or ``--synthetic``) with that run's data
and evaluation protocol (``W/config.json``), and writes ``W/eval_<NAME>.json``: ``{"mean", "std", "per_seed"}`` as
in ``results.json`` (beside the npz when only ``--synthetic`` is given). The key is the run's seed folded with the
name, so this equals the run's own ``config.eval.architectures`` evaluation of the same set. A user error prints ``error: <one line>`` and exits 2.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS


def evaluate_saved(workdir: str | None, arch: str, synthetic: str | None = None, num_seeds: int = 0,
                   epochs: int = 0) -> tuple[dict, str]:
    """Evaluate the set of the run in ``workdir`` (or the npz ``synthetic`` alone, which then must carry its run's
    config) on ``arch``; returns ``(result, path of eval_<arch>.json)``.

    ``num_seeds``/``epochs``: 0 keeps the run's ``config.eval`` values. Raises DDJaxError (one line) on bad input.
    """
    import ml_collections   # noqa: PLC0415
    from ddjax import data, models   # noqa: PLC0415  (after absl parsed the flags)
    from ddjax.errors import ConfigError   # noqa: PLC0415
    from launch import cross_architecture as xa   # noqa: PLC0415

    config = xa.load_run_config(workdir) if workdir else None
    models.build_architecture(arch, 2)   # an unknown name fails before any data is loaded
    path = synthetic or os.path.join(workdir, "synthetic.npz")
    images, labels, lr, saved_config = xa.load_set(path)
    if config is None:
        if saved_config is None:
            raise ConfigError(f"{path} does not carry its run's config (written before ddjax stored it); pass "
                              "--workdir of the run that made it")
        config = ml_collections.ConfigDict(saved_config)
    if config.get("domains", {}).get("source"):
        raise ConfigError(f"{workdir or path} is from a staged run over domains (one set per phase, evaluated per "
                          "domain); evaluate another architecture inside the run with --config.eval.model=NAME")
    for name, value in (("num_seeds", num_seeds), ("epochs", epochs)):
        if value < 0:
            raise ConfigError(f"--{name} must be >= 0 (0: the run's config.eval.{name}), got {value}")
        if value:
            config.eval[name] = value
    if not config.eval.num_seeds:
        raise ConfigError("the run distilled without evaluating (eval.num_seeds=0); pass --num_seeds=K networks to "
                          "train")
    dataset = data.load_dataset(config.data.name, data_dir=config.data.data_dir, source_dir=config.data.source_dir,
                                zca=config.data.zca, zca_regularization=config.data.zca_regularization)
    result = xa.evaluate_architecture(arch, config, dataset, images, labels, lr)
    return result, xa.write_evaluation(workdir or os.path.dirname(os.path.abspath(path)), arch, result, path)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not (FLAGS.workdir or FLAGS.synthetic) or not FLAGS.arch:
        print("error: give the run and the network, e.g. python -m launch.evaluate --workdir=workdirs/dm_tiny "
              "--arch=AlexNet", file=sys.stderr)
        sys.exit(2)
    from launch import cli   # noqa: PLC0415
    cli.quiet_logs()
    result, path = cli.run_or_exit(evaluate_saved, FLAGS.workdir, FLAGS.arch, FLAGS.synthetic, FLAGS.num_seeds,
                                   FLAGS.epochs)
    print(f"{FLAGS.arch}: {result['mean']:.4f} ± {result['std']:.4f} over {result['num_seeds']} seeds "
          f"({result['epochs']} epochs, protocol {result['protocol']}); written to {path}")


if __name__ == "__main__":
    # Defined here, not at import (absl refuses a flag defined twice when launch modules are imported together).
    flags.DEFINE_string("workdir", None, "The finished run whose set to evaluate (holds config.json).")
    flags.DEFINE_string("arch", None, "Architecture, e.g. ConvNet, ConvNetW64, AlexNet, VGG11, ResNet18BN.")
    flags.DEFINE_string("synthetic", None, "A synthetic.npz other than W/synthetic.npz (e.g. W/phases/3/...).")
    flags.DEFINE_integer("num_seeds", 0, "Networks to train (0: the run's config.eval.num_seeds).")
    flags.DEFINE_integer("epochs", 0, "Training epochs (0: the run's config.eval.epochs).")
    app.run(main)
