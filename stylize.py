"""Stylize images, folders and videos with a trained model.

    python stylize.py --model MODEL --output OUT INPUT [INPUT ...]

See `python stylize.py --help`; the logic lives in the package fnst_jax/stylize/
(flags in fnst_jax/stylize/cli.py, the network call in fnst_jax/stylize/engine.py, or for an
.onnx model fnst_jax/stylize/onnx_engine.py, which runs without JAX: nothing here imports it).
"""

import sys

from fnst_jax.stylize import cli, loading

if __name__ == "__main__":
    # XLA programs persist across runs ($FNST_JAX_CACHE/jax_cache or
    # ~/.cache/fnst_jax/jax_cache): a second run over the same sizes does not recompile.
    # Turned on when the JAX engine is loaded (not for an .onnx model).
    loading.use_compilation_cache()
    # The flags are parsed by cli.main on a fresh absl FlagValues, so tests can call it
    # in-process with any argv.
    sys.exit(cli.main(sys.argv))
