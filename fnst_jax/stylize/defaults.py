"""The settings both stylize engines take, their defaults and allowed values. Imports nothing.

The JAX engine (`engine.Stylizer`), the ONNX engine (`onnx_engine.OnnxStylizer`),
`loading.load_stylizer`, the `stylize.py` flags and the service all read them here, so a
default is written once.
"""

DEFAULT_MAX_PIXELS = 2048 * 2048  # ~3 GB of activations on CPU in float32
DEFAULT_TILE = 1024
DEFAULT_BUCKET = 64
DEFAULT_BATCH_SIZE = 4
TILE_STATISTICS = ("exact", "approximate")
# The JAX engine's compute dtypes: `runtime.DTYPES`' names (tests keep them equal).
DTYPE_NAMES = ("float32", "bfloat16")
