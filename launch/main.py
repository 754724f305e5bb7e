"""Command line: ``python -m launch.main --config=configs/dm_tiny.py --workdir=DIR [--config.ipc=1 ...]``.

``--help`` lists the shipped configs and the algorithms; ``--print_config`` prints the resolved config and exits.

Kept short on purpose (as flax's examples do): the loop lives in :mod:`launch.run` so tests and notebooks can
import it. A user error prints ``error: <one line>`` and exits with status 2; nothing good is overwritten.
"""
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from launch import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a ddjax config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, pictures and results "
                    "(default: workdirs/<config file name>[_<config argument>]).")
flags.DEFINE_bool("print_config", False, "Print the resolved config (file + --config.* overrides) and exit.")
# jax.distributed.initialize's arguments (launch.distributed, docs/scaling.md): one process per host
flags.DEFINE_string("coordinator_address", None, "Multi-process run: HOST:PORT of process 0 (default "
                    "$JAX_COORDINATOR_ADDRESS; found automatically on Cloud TPU, SLURM, Open MPI).")
flags.DEFINE_integer("num_processes", None, "Multi-process run: number of processes (default $JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "Multi-process run: this process's id in [0, num_processes) "
                     "(default $JAX_PROCESS_ID).")
flags.DEFINE_integer("heartbeat_timeout_seconds", 100, "Multi-process run: a process silent this long is dead "
                     "and JAX stops the others.")


def main(argv):
    cli.start(argv, "python -m launch.main --config=configs/dm_tiny.py")
    if FLAGS.print_config:
        print(FLAGS.config)
        return
    import jax  # after absl parsed flags, so --xla/--jax env settings from the shell apply

    from launch import distributed
    # before any JAX computation (importing launch.run computes nothing)
    cli.run_or_exit(distributed.initialize, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                    FLAGS.heartbeat_timeout_seconds)
    from launch.run import run

    workdir = FLAGS.workdir or cli.default_workdir(FLAGS["config"].config_filename)
    print(f"workdir: {os.path.abspath(workdir)}  (JAX process {jax.process_index()}/{jax.process_count()}, "
          f"devices: {jax.devices()})", file=sys.stderr)
    results = cli.run_or_exit(run, FLAGS.config, workdir)
    line = f"{results['algorithm']} on {results['dataset']}, ipc {results['ipc']}: "
    if "synthetic" in results:
        line += f"synthetic {results['synthetic']['mean']:.4f} ± {results['synthetic']['std']:.4f}"
    elif "leave_one_out" in results:   # a staged run (launch.staged)
        line += "leave-one-domain-out " + ", ".join(f"{d} {r['mean']:.4f}" for d, r in results["leave_one_out"].items())
        line += f"; mean {results['leave_one_out_mean']:.4f}"
    elif "A_T" in results:   # a staged stream
        line += f"{results['plan']} over {len(results['domains'])} domains: A_T {results['A_T']:.4f} ± " \
                f"{results['A_T_std']:.4f}, F_T {results['F_T']:.4f} ± {results['F_T_std']:.4f}"
    else:   # eval.num_seeds = 0
        line += f"distilled {results['steps']} steps, not evaluated (python -m launch.evaluate --num_seeds=K)"
    if "random_real" in results:
        line += f" vs random real {results['random_real']['mean']:.4f} ± {results['random_real']['std']:.4f}"
    print(line + f"  ({results['seconds']:.0f} s; outputs in {workdir})")


if __name__ == "__main__":
    if any(arg.split("=")[0] in ("--help", "-h", "-?", "--helpshort", "--helpfull") for arg in sys.argv[1:]):
        __doc__ = cli.help_text("python -m launch.main")   # absl prints __main__'s docstring as the usage
    app.run(main)
