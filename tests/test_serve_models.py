"""Which models the service finds (`fnst_jax.serve.models`): folders, names, clashes, and
the style thumbnails it shows."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from stylize_helpers import make_test_model, style_thumbnail_jpeg

from fnst_jax import export, model_file
from fnst_jax.serve.models import ModelSetError, find_models, thumbnail


def test_find_models_in_folders(tmp_path):
    runs = tmp_path / "runs"
    for path in [
        runs / "mosaic" / "model.npz",
        runs / "mosaic" / "best.npz",
        runs / "loose" / "candy.npz",
    ]:
        path.parent.mkdir(parents=True, exist_ok=True)
        export.save_model(path, make_test_model(), {"pad": 0})
    np.savez(runs / "loose" / "vgg.npz", weights=np.zeros(3))  # not a model: skipped
    (runs / "mosaic" / "checkpoints" / "1").mkdir(parents=True)
    export.save_model(runs / ".hidden" / "x.npz", make_test_model(), {})
    found = dict(find_models([runs]))
    assert found == {
        "mosaic": runs / "mosaic" / "model.npz",
        "mosaic-best": runs / "mosaic" / "best.npz",
        "candy": runs / "loose" / "candy.npz",
    }
    assert dict(find_models([runs / "mosaic"])).keys() == {"mosaic", "mosaic-best"}
    assert dict(find_models([runs / "loose" / "candy.npz"])) == {
        "candy": runs / "loose" / "candy.npz"
    }

    other = tmp_path / "other" / "mosaic"
    other.mkdir(parents=True)
    export.save_model(other / "model.npz", make_test_model(), {})
    with pytest.raises(ModelSetError, match="two models would be served as 'mosaic'"):
        find_models([runs, other])
    with pytest.raises(model_file.ModelFileError, match="no such model"):
        find_models([tmp_path / "missing.npz"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSetError, match="no fnst_jax model"):
        find_models([tmp_path / "empty"])


def test_thumbnail_is_a_base64_jpeg_or_nothing():
    jpeg = style_thumbnail_jpeg()
    assert thumbnail({"style_thumbnail": base64.b64encode(jpeg).decode()}, "m") == jpeg
    assert thumbnail({}, "m") is None
    assert thumbnail({"style_thumbnail": "not base64!"}, "m") is None
    assert thumbnail({"style_thumbnail": base64.b64encode(b"GIF89a").decode()}, "m") is None
