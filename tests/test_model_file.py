"""The model file format without JAX (`fnst_jax.model_file`): write and read back, names,
what is and is not a model file, and that using it loads no JAX.

The TransformerNet side (save, load, every name and shape checked) is test_export.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fnst_jax import model_file

REPO = Path(__file__).resolve().parents[1]


def test_write_and_read_back(tmp_path):
    arrays = {"conv1/conv/conv/kernel": np.arange(6.0).reshape(2, 3), "conv1/norm/scale": [1, 2]}
    path = model_file.write_model(tmp_path / "m.npz", arrays, {"pad": 8, "styles": []})
    params, meta = model_file.read_model(path)
    assert meta == {
        "format": model_file.FORMAT,
        "version": model_file.VERSION,
        "pad": 8,
        "styles": [],
    }
    assert params.keys() == arrays.keys()
    assert {value.dtype for value in params.values()} == {np.dtype(np.float32)}
    np.testing.assert_array_equal(
        params["conv1/conv/conv/kernel"], arrays["conv1/conv/conv/kernel"]
    )
    assert model_file.read_metadata(tmp_path / "m.npz") == meta
    assert model_file.is_model_file(path)
    np.savez(tmp_path / "plain.npz", x=np.zeros(2))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert not model_file.is_model_file(tmp_path / "plain.npz")
    assert not model_file.is_model_file(tmp_path / "junk.npz")
    with pytest.raises(model_file.ModelFileError, match="no __fnst_meta__ entry"):
        model_file.read_metadata(tmp_path / "plain.npz")


def test_model_names(tmp_path):
    run = tmp_path / "mosaic"
    run.mkdir()
    assert model_file.model_name(run) == "mosaic"
    assert model_file.model_name(run / model_file.MODEL_FILENAME) == "mosaic"
    assert model_file.model_name(run / model_file.BEST_FILENAME) == "mosaic-best"
    assert model_file.model_name(tmp_path / "candy.npz") == "candy"


def test_param_names_from_tree_paths():
    assert model_file.param_name(("conv1", "conv", "kernel")) == "conv1/conv/kernel"


def test_reading_a_model_loads_no_jax(tmp_path):
    """Metadata, style names and the thumbnail of a model file, in a fresh process: JAX,
    Flax and XLA stay unloaded (the ONNX engine and the stylize command line rely on it)."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from fnst_jax import model_file
        style = np.full((40, 60, 3), 200, np.uint8)
        meta = {"styles": [{"name": "candy", "image": "/x/candy.jpg",
                            "thumbnail": model_file.make_style_thumbnail(style)}]}
        meta["style_thumbnail"] = meta["styles"][0]["thumbnail"]
        path = model_file.write_model(sys.argv[1], {"w": np.zeros(3)}, meta)
        loaded = model_file.read_metadata(path)
        assert model_file.style_names(loaded) == ["candy"]
        assert model_file.style_thumbnail_jpeg(loaded).startswith(b"\\xff\\xd8")
        assert model_file.style_weights(2, [1, 3]).tolist() == [[0.25, 0.75]]
        loaded_jax = [name for name in ("jax", "flax", "jaxlib") if name in sys.modules]
        assert not loaded_jax, f"imported {loaded_jax}"
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "m.npz")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
