"""Train a fast style transfer model.

    python train.py --config configs/default.py --workdir runs/starry \
        --config.style_image=path/to/style.jpg [--config.KEY=VALUE ...]

Rerunning the same command resumes from the latest checkpoint in --workdir.
Multi-host: start one process per host with --coordinator_address, --num_processes and
--process_id (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from fnst_jax import runtime

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs, samples and the model go.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    runtime.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    runtime.quiet_library_logs()
    runtime.enable_compilation_cache()
    from fnst_jax import train_lib  # after distributed init: importing is harmless, but be safe

    try:
        train_lib.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (train_lib.TrainingError, ValueError, FileNotFoundError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
