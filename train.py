"""Train a fast style transfer model: flags -> `fnst_jax.train_lib.train_and_evaluate`.

    python train.py --config configs/default.py --workdir runs/starry \
        --config.style_image=path/to/style.jpg [--config.KEY=VALUE ...]

Rerunning the same command resumes from the latest checkpoint in --workdir. SIGINT/SIGTERM save
a checkpoint and exit with status 128 + signal; in a multi-host run a signal to any process
stops them all after the same step.
Multi-host: start one process per host with --coordinator_address, --num_processes and
--process_id (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
A problem the user can fix (a missing style image, a workdir of another run, ...) ends with
one `error:` line and exit status 2 (`fnst_jax.cli.run`); anything else keeps its traceback.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from fnst_jax import cli, runtime

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs, samples and the model go.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def train() -> int:
    runtime.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    runtime.quiet_library_logs()
    runtime.enable_compilation_cache()
    from fnst_jax import train_lib  # after distributed init: importing is harmless, but be safe

    train_lib.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    return cli.EXIT_OK


def main(argv: list[str]) -> None:
    del argv
    sys.exit(cli.run(train))


if __name__ == "__main__":
    app.run(main)
