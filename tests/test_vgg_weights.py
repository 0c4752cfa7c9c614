"""VGG19 weight loading: every format, strict checks, download + cache, random, real weights."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import h5py
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PHOTOS_DIR, REAL_VGG_NPZ
from safetensors.numpy import save_file

from fnst_jax import vgg_weights
from fnst_jax.errors import UserError
from fnst_jax.vgg import CONV_LAYERS, RELU_LAYERS, VGG19
from fnst_jax.vgg_weights import (
    TORCHVISION_FEATURE_INDEX,
    VGGWeightsError,
    cache_dir,
    load_vgg,
    save_npz,
)


def _state_dict(vgg: VGG19) -> dict[str, np.ndarray]:
    """torchvision layout (OIHW, features.N.*) as numpy, without torch."""
    state = {}
    for conv, layer in vgg.params.items():
        index = TORCHVISION_FEATURE_INDEX[conv]
        state[f"features.{index}.weight"] = np.ascontiguousarray(
            np.asarray(layer["kernel"]).transpose(3, 2, 0, 1)
        )
        state[f"features.{index}.bias"] = np.asarray(layer["bias"])
    return state


def _assert_same_params(a: VGG19, b: VGG19):
    assert list(a.params) == list(b.params)
    for conv in a.params:
        for kind in ("kernel", "bias"):
            np.testing.assert_array_equal(
                np.asarray(a.params[conv][kind]), np.asarray(b.params[conv][kind])
            )


def _hwio_arrays(vgg: VGG19) -> dict[str, np.ndarray]:
    """The ../shared/data .npz layout: conv{b}_{n}/kernel (HWIO) and conv{b}_{n}/bias."""
    return {
        f"{conv}/{kind}": np.asarray(value)
        for conv, layer in vgg.params.items()
        for kind, value in layer.items()
    }


def _prefix(vgg: VGG19, k: int) -> VGG19:
    return VGG19({c: vgg.params[c] for c in CONV_LAYERS[:k]}, vgg.preprocessing, vgg.source)


# ---------------------------------------------------------------------------- random


def test_random_weights_warn_and_are_deterministic():
    with pytest.warns(UserWarning, match="RANDOM VGG19"):
        a = load_vgg("random")
    with pytest.warns(UserWarning):
        b = load_vgg("random")
    assert a.num_layers == 16 and a.preprocessing == "torch" and a.source == "random"
    _assert_same_params(a, b)


def test_random_weights_keep_activation_scale(random_vgg):
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)), jnp.float32)
    features = random_vgg(x, RELU_LAYERS)
    rms = {layer: float(jnp.sqrt(jnp.mean(features[layer] ** 2))) for layer in RELU_LAYERS}
    # He init: measured RMS relative to relu1_1 between 0.4 (relu5_4, where zero padding at
    # 2x2 shrinks it) and 2.3 over the 16 taps at 32x32. A factor 10 either way still catches a
    # wrong fan-in (which compounds over 16 layers).
    assert 0.1 < rms["relu1_1"] < 10, rms  # measured 1.3 (torch preprocessing: unit-ish inputs)
    for layer, value in rms.items():
        assert 0.1 < value / rms["relu1_1"] < 10, (layer, rms)


def test_preprocessing_override_and_validation(random_vgg, tmp_path):
    path = save_npz(_prefix(random_vgg, 2), tmp_path / "w.npz")
    assert load_vgg(str(path)).preprocessing == "torch"  # recorded by save_npz
    assert load_vgg(str(path), preprocessing="caffe").preprocessing == "caffe"
    with pytest.raises(VGGWeightsError, match="unknown VGG preprocessing 'tf'"):
        load_vgg(str(path), preprocessing="tf")


# ---------------------------------------------------------------------------- .npz


def test_npz_round_trip_and_no_overwrite(random_vgg, tmp_path):
    vgg = _prefix(random_vgg, 3)
    path = save_npz(vgg, tmp_path / "sub" / "w.npz")
    loaded = load_vgg(path)
    _assert_same_params(vgg, loaded)
    assert loaded.num_layers == 3 and loaded.source == str(path)
    with pytest.raises(FileExistsError, match="already exists"):
        save_npz(vgg, path)
    save_npz(vgg, path, overwrite=True)


def test_plain_npz_defaults_to_caffe(random_vgg, tmp_path):
    path = tmp_path / "keras.npz"
    np.savez(path, **_hwio_arrays(_prefix(random_vgg, 2)))  # no recorded preprocessing
    vgg = load_vgg(path)
    assert vgg.preprocessing == "caffe" and vgg.num_layers == 2


def test_npz_errors(random_vgg, tmp_path):
    arrays = _hwio_arrays(_prefix(random_vgg, 3))

    bad_shape = dict(arrays, **{"conv1_2/kernel": np.zeros((3, 3, 64, 32), np.float32)})
    np.savez(tmp_path / "shape.npz", **bad_shape)
    with pytest.raises(
        VGGWeightsError,
        match=r"shape\.npz: conv1_2/kernel has shape \(3, 3, 64, 32\), expected \(3, 3, 64, 64\)",
    ):
        load_vgg(tmp_path / "shape.npz")

    missing = {k: v for k, v in arrays.items() if k != "conv1_2/bias"}
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(VGGWeightsError, match=r"missing\.npz: missing conv1_2/bias"):
        load_vgg(tmp_path / "missing.npz")

    gap = {k: v for k, v in arrays.items() if not k.startswith("conv1_2/")}
    np.savez(tmp_path / "gap.npz", **gap)
    with pytest.raises(VGGWeightsError, match="missing conv1_2/kernel.*without gaps"):
        load_vgg(tmp_path / "gap.npz")

    np.savez(tmp_path / "extra.npz", **arrays, **{"fc1/kernel": np.zeros(3, np.float32)})
    with pytest.raises(VGGWeightsError, match="unexpected key 'fc1/kernel'"):
        load_vgg(tmp_path / "extra.npz")

    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(VGGWeightsError, match=r"junk\.npz: not a readable \.npz"):
        load_vgg(tmp_path / "junk.npz")


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(VGGWeightsError, match="not found.*'torchvision'.*'random'"):
        load_vgg(tmp_path / "nope.pth")
    with pytest.raises(UserError):  # entry points print it on one line, no traceback
        load_vgg(tmp_path / "nope.pth")
    (tmp_path / "w.ckpt").write_bytes(b"x")
    with pytest.raises(VGGWeightsError, match=r"w\.ckpt: unknown VGG weights format '\.ckpt'"):
        load_vgg(tmp_path / "w.ckpt")


# ---------------------------------------------------------------------------- safetensors


def test_safetensors_state_dict(random_vgg, tmp_path):
    vgg = _prefix(random_vgg, 5)
    state = _state_dict(vgg)
    state["classifier.0.weight"] = np.zeros((4, 2), np.float32)  # ignored
    save_file(state, tmp_path / "vgg.safetensors")
    loaded = load_vgg(str(tmp_path / "vgg.safetensors"))
    assert loaded.preprocessing == "torch" and loaded.num_layers == 5
    _assert_same_params(vgg, loaded)  # OIHW -> HWIO exactly undone
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 3)), jnp.float32)
    np.testing.assert_array_equal(
        np.asarray(loaded(x, ("relu3_1",))["relu3_1"]), np.asarray(vgg(x, ("relu3_1",))["relu3_1"])
    )
    with pytest.raises(ValueError, match="relu3_2.*deeper than the weights provide"):
        loaded(x, ("relu3_2",))


def test_safetensors_errors(random_vgg, tmp_path):
    state = _state_dict(_prefix(random_vgg, 2))
    wrong = dict(state, **{"features.2.weight": np.zeros((64, 64, 5, 5), np.float32)})
    save_file(wrong, tmp_path / "wrong.safetensors")
    with pytest.raises(
        VGGWeightsError, match=r"wrong\.safetensors: features\.2\.weight has shape \(64, 64, 5, 5\)"
    ):
        load_vgg(tmp_path / "wrong.safetensors")

    save_file(
        {k: v for k, v in state.items() if k != "features.0.bias"}, tmp_path / "m.safetensors"
    )
    with pytest.raises(VGGWeightsError, match=r"m\.safetensors: missing features\.0\.bias"):
        load_vgg(tmp_path / "m.safetensors")

    # A VGG19-with-batch-norm (or any other) state dict has keys at other indices.
    save_file(
        dict(state, **{"features.1.weight": np.ones(64, np.float32)}), tmp_path / "bn.safetensors"
    )
    with pytest.raises(VGGWeightsError, match=r"unexpected key 'features\.1\.weight'"):
        load_vgg(tmp_path / "bn.safetensors")

    save_file({"classifier.0.weight": np.zeros((2, 2), np.float32)}, tmp_path / "none.safetensors")
    with pytest.raises(VGGWeightsError, match="holds no VGG19 conv weights"):
        load_vgg(tmp_path / "none.safetensors")

    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(VGGWeightsError, match=r"junk\.safetensors: not a readable"):
        load_vgg(tmp_path / "junk.safetensors")


# ---------------------------------------------------------------------------- Keras .h5


def _write_keras_h5(path: Path, vgg: VGG19, full_model: bool) -> None:
    """Keras 2 layout: <root>/block{b}_conv{n}/block{b}_conv{n}/{kernel,bias}:0 (HWIO)."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        root.create_group("input_1")
        root.create_group("block1_pool")
        for conv, layer in vgg.params.items():
            name = f"block{conv[4]}_conv{conv[6]}"
            inner = root.create_group(name).create_group(name)
            inner["kernel:0"] = np.asarray(layer["kernel"])
            inner["bias:0"] = np.asarray(layer["bias"])
        fc = root.create_group("fc1").create_group("fc1")
        fc["kernel:0"] = np.zeros((4, 2), np.float32)


@pytest.mark.parametrize("full_model", [True, False])
def test_keras_h5(random_vgg, tmp_path, full_model):
    vgg = _prefix(random_vgg, 4)
    _write_keras_h5(tmp_path / "vgg19.h5", vgg, full_model)
    loaded = load_vgg(str(tmp_path / "vgg19.h5"))
    assert loaded.preprocessing == "caffe" and loaded.num_layers == 4
    _assert_same_params(vgg, loaded)


def test_keras_h5_errors(random_vgg, tmp_path):
    vgg = _prefix(random_vgg, 2)
    _write_keras_h5(tmp_path / "bad.h5", vgg, False)
    with h5py.File(tmp_path / "bad.h5", "a") as f:
        del f["block1_conv2/block1_conv2/kernel:0"]
        f["block1_conv2/block1_conv2/kernel:0"] = np.zeros((3, 3, 64, 8), np.float32)
    with pytest.raises(VGGWeightsError, match=r"bad\.h5: conv1_2/kernel has shape \(3, 3, 64, 8\)"):
        load_vgg(tmp_path / "bad.h5")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_group("dense")
    with pytest.raises(VGGWeightsError, match=r"empty\.h5: no Keras VGG19 conv layers"):
        load_vgg(tmp_path / "empty.h5")
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(VGGWeightsError, match=r"junk\.h5: not a readable HDF5"):
        load_vgg(tmp_path / "junk.h5")


# ---------------------------------------------------------------------------- .pth


class _NotATensor:
    pass


def test_pth_refuses_pickled_objects(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"features.0.weight": _NotATensor()}, tmp_path / "object.pth")
    with pytest.raises(
        VGGWeightsError, match=r"object\.pth: not a weights-only PyTorch state dict"
    ):
        load_vgg(tmp_path / "object.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(
        VGGWeightsError, match=r"list\.pth: not a state dict \(the file holds a list"
    ):
        load_vgg(tmp_path / "list.pth")
    torch.save(3, tmp_path / "int.pth")
    with pytest.raises(VGGWeightsError, match=r"int\.pth: not a state dict"):
        load_vgg(tmp_path / "int.pth")
    torch.save({"features.0.weight": 1}, tmp_path / "intvalue.pth")
    with pytest.raises(VGGWeightsError, match="entry 'features.0.weight' is a int"):
        load_vgg(tmp_path / "intvalue.pth")
    (tmp_path / "junk.pth").write_bytes(b"\x80\x02junk")
    with pytest.raises(VGGWeightsError, match=r"junk\.pth: not a weights-only PyTorch state dict"):
        load_vgg(tmp_path / "junk.pth")


# ---------------------------------------------------------------------------- download


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("FNST_JAX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "fnst_jax"
    monkeypatch.setenv("FNST_JAX_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("FNST_JAX_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "fnst_jax"


@pytest.fixture
def served_pth(random_vgg, tmp_path, monkeypatch):
    """A torchvision-format .pth written by the reference, 'served' from a file:// URL."""
    pytest.importorskip("torch")
    import torch

    from fnst_jax.torch_reference import vgg_to_torch_state_dict

    vgg = _prefix(random_vgg, 3)
    path = tmp_path / "served" / "vgg19.pth"
    path.parent.mkdir()
    torch.save(vgg_to_torch_state_dict(vgg), path)
    monkeypatch.setenv("FNST_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(vgg_weights, "TORCHVISION_URL", path.as_uri())
    return vgg, path


def test_download_verifies_converts_and_caches(served_pth, tmp_path, monkeypatch):
    vgg, path = served_pth
    monkeypatch.setattr(
        vgg_weights, "TORCHVISION_SHA256_PREFIX", hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    )
    loaded = load_vgg("torchvision")
    assert loaded.preprocessing == "torch" and loaded.source == "torchvision"
    _assert_same_params(vgg, loaded)
    cached = tmp_path / "cache" / vgg_weights.TORCHVISION_CACHE_NAME
    assert cached.is_file()
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name]  # no temp files left
    # Second call: the cache answers; the network (here: a dead URL) is not touched.
    monkeypatch.setattr(vgg_weights, "TORCHVISION_URL", (tmp_path / "gone.pth").as_uri())
    _assert_same_params(vgg, load_vgg("torchvision"))


def test_download_rejects_wrong_hash(served_pth, tmp_path):
    # The served file does not hash to torchvision's published prefix dcbb9e9d.
    with pytest.raises(VGGWeightsError, match="SHA-256.*expected a hash starting with dcbb9e9d"):
        load_vgg("torchvision")
    assert list((tmp_path / "cache").iterdir()) == []  # nothing cached, temp file removed


def test_download_failure_says_how_to_supply_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FNST_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(vgg_weights, "TORCHVISION_URL", (tmp_path / "offline.pth").as_uri())
    with pytest.raises(
        VGGWeightsError,
        match=r"download failed.*--config\.vgg\.weights=/path/to/vgg19-dcbb9e9d\.pth",
    ):
        load_vgg("torchvision")


# ---------------------------------------------------------------------------- real weights


def _photo(path: Path, reencode: bool = False) -> np.ndarray:
    from PIL import Image

    image = Image.open(path).convert("RGB")
    if reencode:  # a slight change: JPEG at quality 90
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        buffer.seek(0)
        image = Image.open(buffer).convert("RGB")
    image = image.resize((image.width // 2, image.height // 2), Image.BILINEAR)
    return np.asarray(image, np.float32)[:160, :160]


@pytest.mark.skipif(not REAL_VGG_NPZ.is_file(), reason=f"{REAL_VGG_NPZ} not present")
def test_real_keras_weights_on_photos():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real weights: no warning
        vgg = load_vgg(str(REAL_VGG_NPZ))
    assert vgg.preprocessing == "caffe" and vgg.num_layers == 8
    assert vgg.available_layers[-1] == "relu3_4"
    photos = sorted(PHOTOS_DIR.glob("*.jpg"))[:3]
    assert len(photos) == 3
    original = np.stack([_photo(p) for p in photos])
    reencoded = np.stack([_photo(p, reencode=True) for p in photos])
    features = vgg(jnp.asarray(np.concatenate([original, reencoded])), ("relu3_1",))["relu3_1"]
    features = np.asarray(features, np.float64)
    f, g = features[:3], features[3:]

    def distance(a, b):
        return np.linalg.norm(a - b) / np.sqrt(np.linalg.norm(a) * np.linalg.norm(b))

    same = max(distance(f[i], g[i]) for i in range(3))
    different = min(distance(f[i], f[j]) for i in range(3) for j in range(i + 1, 3))
    # Measured (first 6 photos, 240x160): re-encode 0.023-0.029, different photos 1.14-1.22.
    assert same < 0.1, same
    assert different > 0.6, different
    assert same < 0.3 * different, (same, different)
