"""Stylize images, folders and videos with a trained model.

    python stylize.py --model MODEL --output OUT INPUT [INPUT ...]

See `python stylize.py --help`; the logic lives in fnst_jax/stylize_lib.py.
"""

import sys

from fnst_jax import runtime, stylize_lib

if __name__ == "__main__":
    # XLA programs persist across runs ($FNST_JAX_CACHE/jax_cache or
    # ~/.cache/fnst_jax/jax_cache): a second run over the same sizes does not recompile.
    runtime.enable_compilation_cache()
    # The flags are parsed by stylize_lib.main on a fresh absl FlagValues, so tests can
    # call it in-process with any argv.
    sys.exit(stylize_lib.main(sys.argv))
