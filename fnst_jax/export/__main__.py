"""`python -m fnst_jax.export ...`: the deployment exports (`fnst_jax.deploy.cli`), the same
command as `python -m fnst_jax.deploy ...`."""

import sys

from fnst_jax import runtime
from fnst_jax.deploy import cli

if __name__ == "__main__":
    # The check compiles the JAX forward at each size: cache the programs across runs.
    runtime.enable_compilation_cache()
    sys.exit(cli.main(sys.argv))
