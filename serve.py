"""Serve trained models over HTTP, with a web page.

    python serve.py --models runs/ [more model files or folders] [--host 127.0.0.1] [--port 8000]

See `python serve.py --help` and docs/serve.md; the logic lives in the package
fnst_jax/serve/ (flags in fnst_jax/serve/cli.py, routes in app.py, the queue in batcher.py).
Needs the `serve` extra: `pip install -e ".[serve]"`.
"""

import sys

from fnst_jax import runtime
from fnst_jax.serve import cli

if __name__ == "__main__":
    # XLA programs persist across runs ($FNST_JAX_CACHE/jax_cache or
    # ~/.cache/fnst_jax/jax_cache): a restart compiles its size buckets from the cache.
    runtime.enable_compilation_cache()
    sys.exit(cli.main(sys.argv))
