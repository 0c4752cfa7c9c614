"""VGG19 weights: read torchvision / Keras / .npz files into a `VGG19`, download and cache.

`load_vgg(weights)` is the single entry point. `weights` is one of

- a path to a torchvision VGG19 state dict: `.pth`/`.pt` (read with
  `torch.load(weights_only=True)`, so nothing but tensors is ever unpickled; needs the optional
  `torch` extra) or `.safetensors` (no torch needed). Keys `features.N.weight` (OIHW) and
  `features.N.bias`; `classifier.*` is ignored. Preprocessing: "torch".
- a path to a Keras VGG19 `.h5`/`.hdf5` (full model or weights only; layers `block{b}_conv{n}`
  with HWIO kernels). Preprocessing: "caffe".
- a path to an `.npz` with `conv{b}_{n}/kernel` (HWIO) and `conv{b}_{n}/bias`, like
  ../shared/data/vgg19_conv1_1-conv3_4_keras.npz or a file written by `save_npz`.
  Preprocessing: "caffe", unless the file records its own (files from `save_npz` do).
- "torchvision": downloads torchvision's published VGG19 once, checks its SHA-256, converts it
  and caches it as .npz (in `runtime.cache_dir()`); later calls read the cache, no network.
- "random": deterministic He-initialised weights for tests and smoke runs only (warns).

Every name and shape is checked; a file may hold only the first k conv layers (a contiguous
prefix), in which case only the taps up to the k-th ReLU are usable (`VGG19.check_layers`).
Errors are `VGGWeightsError` (a `UserError`, and a ValueError) with one line naming the file
and the key. Files are written through `fnst_jax.files.write_atomic`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

import jax.numpy as jnp
import numpy as np

from fnst_jax.errors import UserError
from fnst_jax.files import write_atomic
from fnst_jax.runtime import cache_dir
from fnst_jax.vgg import CONV_CHANNELS, CONV_LAYERS, PREPROCESSING, VGG19

if TYPE_CHECKING:
    import h5py

# torchvision's published ImageNet VGG19; the hex string in the file name is the prefix of
# the file's SHA-256 (read at call time so tests can point them at a local file).
TORCHVISION_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
TORCHVISION_SHA256_PREFIX = "dcbb9e9d"
TORCHVISION_CACHE_NAME = "vgg19-dcbb9e9d.npz"
# Index in torchvision's `vgg19().features` Sequential of each conv layer (ReLUs and pools
# sit between them).
TORCHVISION_FEATURE_INDEX: dict[str, int] = dict(
    zip(CONV_LAYERS, (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34), strict=True)
)
RANDOM_SEED = 0
META_KEY = "__fnst_vgg_meta__"

_TORCH_SUFFIXES = (".pth", ".pt", ".bin")
_KERAS_SUFFIXES = (".h5", ".hdf5")
_SUPPLY_HINT = (
    "download it elsewhere and pass it by path, e.g. "
    "--config.vgg.weights=/path/to/vgg19-dcbb9e9d.pth"
)


class VGGWeightsError(UserError, ValueError):
    """A VGG weights file that is missing, unreadable, or not VGG19 conv weights."""


def load_vgg(weights: str | os.PathLike, preprocessing: str | None = None) -> VGG19:
    """Load VGG19 conv weights from a file, "torchvision" (download + cache) or "random".

    `preprocessing` overrides the convention recorded for the weights ("torch" for
    torchvision, "caffe" for Keras/.npz); only override it if you know the weights need it.
    """
    if preprocessing is not None and preprocessing not in PREPROCESSING:
        raise VGGWeightsError(
            f"unknown VGG preprocessing {preprocessing!r}; expected one of {PREPROCESSING}"
        )
    if weights == "random":
        vgg = random_vgg()
    elif weights == "torchvision":
        vgg = _load_npz(download_torchvision_vgg())
        vgg = VGG19(vgg.params, vgg.preprocessing, "torchvision")
    else:
        vgg = _load_file(Path(weights))
    if preprocessing is not None and preprocessing != vgg.preprocessing:
        vgg = VGG19(vgg.params, preprocessing, vgg.source)
    return vgg


def _load_file(path: Path) -> VGG19:
    if not path.is_file():
        raise VGGWeightsError(
            f"{path}: VGG weights file not found (pass a .pth/.safetensors/.h5/.npz file, "
            f"'torchvision' to download torchvision's VGG19, or 'random' for tests)"
        )
    suffix = path.suffix.lower()
    if suffix in _TORCH_SUFFIXES:
        return _from_state_dict(path, _read_torch_state_dict(path), "torch")
    if suffix == ".safetensors":
        return _from_state_dict(path, _read_safetensors(path), "torch")
    if suffix in _KERAS_SUFFIXES:
        return _from_hwio(path, _read_keras_h5(path), "caffe")
    if suffix == ".npz":
        return _load_npz(path)
    raise VGGWeightsError(
        f"{path}: unknown VGG weights format {suffix!r}; expected one of "
        f"{', '.join((*_TORCH_SUFFIXES, '.safetensors', *_KERAS_SUFFIXES, '.npz'))}"
    )


# ---------------------------------------------------------------------------- torchvision


def _read_torch_state_dict(path: Path) -> dict[str, np.ndarray]:
    """A .pth state dict as numpy arrays; only tensors are ever unpickled (weights_only)."""
    try:
        import torch
    except ImportError as e:
        raise VGGWeightsError(
            f"{path}: reading a PyTorch .pth file needs PyTorch (pip install 'fnst_jax[torch]'), "
            f"or convert it to .safetensors elsewhere"
        ) from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for foreign objects, RuntimeError for corrupt files
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VGGWeightsError(
            f"{path}: not a weights-only PyTorch state dict ({first_line})"
        ) from e
    if not isinstance(state, Mapping):
        raise VGGWeightsError(
            f"{path}: not a state dict (the file holds a {type(state).__name__}, "
            f"expected a dict of tensors)"
        )
    arrays = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise VGGWeightsError(
                f"{path}: not a state dict (entry {key!r} is a {type(value).__name__}, "
                f"expected a tensor)"
            )
        arrays[str(key)] = value.detach().cpu().float().numpy()
    return arrays


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise VGGWeightsError(f"{path}: not a readable .safetensors file ({e})") from e


def _from_state_dict(path: Path, state: Mapping[str, np.ndarray], preprocessing: str) -> VGG19:
    """torchvision `features.N.{weight,bias}` (OIHW) -> VGG19 (HWIO); classifier.* ignored."""
    by_key = {}
    for conv, index in TORCHVISION_FEATURE_INDEX.items():
        by_key[f"features.{index}.weight"] = (conv, "kernel")
        by_key[f"features.{index}.bias"] = (conv, "bias")
    indices = sorted(TORCHVISION_FEATURE_INDEX.values())
    hwio: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            continue
        if key not in by_key:
            raise VGGWeightsError(
                f"{path}: unexpected key {key!r} (not a torchvision VGG19 conv parameter; "
                f"expected features.N.weight/bias, N in {indices})"
            )
        conv, kind = by_key[key]
        value = np.asarray(value)
        if kind == "kernel":
            cin, cout = CONV_CHANNELS[conv]
            _check_shape(path, key, value, (cout, cin, 3, 3))
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        hwio.setdefault(conv, {})[kind] = value
    return _build(path, hwio, preprocessing, key_name=_torchvision_key)


def _torchvision_key(conv: str, kind: str) -> str:
    return f"features.{TORCHVISION_FEATURE_INDEX[conv]}.{'weight' if kind == 'kernel' else 'bias'}"


# ---------------------------------------------------------------------------- Keras .h5

_KERAS_LAYER = re.compile(r"^block(\d+)_conv(\d+)$")


def _read_keras_h5(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Keras VGG19 .h5 (full model: model_weights/...; or save_weights layout) -> HWIO dict.

    Each `block{b}_conv{n}` group holds (possibly nested) datasets named kernel[:0] and
    bias[:0]. Other layers (input, pools, fc1/fc2/predictions) are ignored.
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise VGGWeightsError(f"{path}: not a readable HDF5 file ({e})") from e
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        layers: dict[str, dict[str, np.ndarray]] = {}
        for name, group in root.items():
            match = _KERAS_LAYER.match(name)
            if not match or not isinstance(group, h5py.Group):
                continue
            conv = f"conv{match.group(1)}_{match.group(2)}"
            if conv not in CONV_CHANNELS:
                raise VGGWeightsError(f"{path}: unexpected layer {name!r} (not a VGG19 conv)")
            layers[conv] = _keras_layer_arrays(path, name, group)
    if not layers:
        raise VGGWeightsError(f"{path}: no Keras VGG19 conv layers (block1_conv1, ...) found")
    return layers


def _keras_layer_arrays(path: Path, name: str, group: h5py.Group) -> dict[str, np.ndarray]:
    """The kernel and bias found anywhere below one Keras layer group (at most one of each)."""
    import h5py

    found: dict[str, list[tuple[str, np.ndarray]]] = {"kernel": [], "bias": []}

    def visit(dataset_path: str, item: h5py.Dataset | h5py.Group) -> None:
        if isinstance(item, h5py.Dataset):
            kind = dataset_path.rsplit("/", 1)[-1].split(":")[0]
            if kind in found:
                found[kind].append((dataset_path, np.asarray(item, np.float32)))

    group.visititems(visit)
    arrays = {}
    for kind, items in found.items():
        if len(items) > 1:
            raise VGGWeightsError(
                f"{path}: layer {name!r} has {len(items)} {kind} datasets "
                f"({', '.join(p for p, _ in items)}); expected one"
            )
        if items:
            arrays[kind] = items[0][1]
    return arrays


# ---------------------------------------------------------------------------- .npz


def _load_npz(path: Path) -> VGG19:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise VGGWeightsError(f"{path}: not a readable .npz file ({e})") from e
    preprocessing = "caffe"  # the convention of Keras-derived files such as ../shared/data's
    if META_KEY in arrays:
        try:
            meta = json.loads(arrays.pop(META_KEY).tobytes().decode())
            preprocessing = meta["preprocessing"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise VGGWeightsError(f"{path}: corrupt {META_KEY} entry ({e})") from e
        if preprocessing not in PREPROCESSING:
            raise VGGWeightsError(f"{path}: unknown recorded preprocessing {preprocessing!r}")
    layers: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        conv, _, kind = key.partition("/")
        if conv not in CONV_CHANNELS or kind not in ("kernel", "bias"):
            raise VGGWeightsError(
                f"{path}: unexpected key {key!r} (expected conv{{b}}_{{n}}/kernel or /bias)"
            )
        layers.setdefault(conv, {})[kind] = value
    return _from_hwio(path, layers, preprocessing)


def save_npz(vgg: VGG19, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write `vgg` as .npz (HWIO, keys conv{b}_{n}/kernel|bias, plus its preprocessing).

    Written through `write_atomic`, so a reader never sees half a file.
    Refuses to replace an existing file unless `overwrite`.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
    return write_atomic(path, functools.partial(_write_npz, vgg))


def _write_npz(vgg: VGG19, path: Path) -> None:
    arrays = {
        f"{conv}/{kind}": np.asarray(value, np.float32)
        for conv, layer in vgg.params.items()
        for kind, value in layer.items()
    }
    meta = {"preprocessing": vgg.preprocessing, "source": vgg.source}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to other names
        np.savez(f, **arrays)


# ---------------------------------------------------------------------------- checks


def _check_shape(path: Path, key: str, value: np.ndarray, expected: tuple[int, ...]) -> None:
    if tuple(value.shape) != expected:
        raise VGGWeightsError(
            f"{path}: {key} has shape {tuple(value.shape)}, expected {expected} (VGG19)"
        )


def _hwio_key(conv: str, kind: str) -> str:
    return f"{conv}/{kind}"


def _from_hwio(
    path: Path, layers: Mapping[str, Mapping[str, np.ndarray]], preprocessing: str
) -> VGG19:
    for conv, layer in layers.items():
        cin, cout = CONV_CHANNELS[conv]
        if "kernel" in layer:
            _check_shape(path, _hwio_key(conv, "kernel"), layer["kernel"], (3, 3, cin, cout))
    return _build(path, layers, preprocessing, key_name=_hwio_key)


def _build(
    path: Path,
    layers: Mapping[str, Mapping[str, np.ndarray]],
    preprocessing: str,
    *,
    key_name: Callable[[str, str], str],
) -> VGG19:
    """Check biases and that the layers form a contiguous prefix of VGG19; make the VGG19."""
    if not layers:
        raise VGGWeightsError(f"{path}: holds no VGG19 conv weights")
    count = max(CONV_LAYERS.index(conv) for conv in layers) + 1
    params = {}
    for conv in CONV_LAYERS[:count]:
        layer = layers.get(conv, {})
        for kind in ("kernel", "bias"):
            if kind not in layer:
                raise VGGWeightsError(
                    f"{path}: missing {key_name(conv, kind)} (weights must cover the VGG19 conv "
                    f"layers from conv1_1 up to {CONV_LAYERS[count - 1]} without gaps)"
                )
        _check_shape(path, key_name(conv, "bias"), layer["bias"], (CONV_CHANNELS[conv][1],))
        for kind in ("kernel", "bias"):
            if not np.issubdtype(layer[kind].dtype, np.floating):
                raise VGGWeightsError(
                    f"{path}: {key_name(conv, kind)} has dtype {layer[kind].dtype}, expected floats"
                )
        params[conv] = {
            kind: jnp.asarray(np.asarray(layer[kind], np.float32)) for kind in ("kernel", "bias")
        }
    return VGG19(params, preprocessing, str(path))


# ---------------------------------------------------------------------------- download


def download_torchvision_vgg() -> Path:
    """The cached .npz of torchvision's VGG19: downloaded, verified and converted on first use.

    The cache is `runtime.cache_dir()` (also the JAX compilation cache's parent). The .npz is
    written through `write_atomic`; the .pth is downloaded beside it into a scratch file that
    is deleted after conversion (which needs PyTorch).
    """
    cached = cache_dir() / TORCHVISION_CACHE_NAME
    if cached.is_file():
        return cached
    url, prefix = TORCHVISION_URL, TORCHVISION_SHA256_PREFIX  # read now: tests patch them

    def download_and_convert(npz_path: Path) -> None:
        with tempfile.NamedTemporaryFile(
            prefix=".vgg19-download.", suffix=".pth", dir=npz_path.parent
        ) as pth:
            _download_verified(url, prefix, pth)
            pth_path = Path(pth.name)
            vgg = _from_state_dict(pth_path, _read_torch_state_dict(pth_path), "torch")
        _write_npz(VGG19(vgg.params, "torch", url), npz_path)

    write_atomic(cached, download_and_convert)
    return cached


def _download_verified(url: str, sha256_prefix: str, out: IO[bytes]) -> None:
    """Stream `url` into `out` with a progress bar; its SHA-256 must start with the prefix."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="VGG19 weights") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        out.flush()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise VGGWeightsError(f"{url}: download failed ({reason}); {_SUPPLY_HINT}") from e
    if not digest.hexdigest().startswith(sha256_prefix):
        raise VGGWeightsError(
            f"{url}: downloaded file has SHA-256 {digest.hexdigest()[:16]}..., expected a "
            f"hash starting with {sha256_prefix} (corrupt or tampered download); {_SUPPLY_HINT}"
        )


# ---------------------------------------------------------------------------- random


@functools.lru_cache(maxsize=1)
def _random_params() -> dict[str, dict[str, jnp.ndarray]]:
    rng = np.random.default_rng(RANDOM_SEED)
    params = {}
    for conv in CONV_LAYERS:
        cin, cout = CONV_CHANNELS[conv]
        # He (Kaiming) normal: std sqrt(2 / fan_in) keeps the mean square of ReLU activations
        # roughly constant from layer to layer, so 16 layers neither explode nor vanish.
        std = np.sqrt(2.0 / (9 * cin))
        kernel = rng.standard_normal((3, 3, cin, cout), np.float32) * np.float32(std)
        params[conv] = {"kernel": jnp.asarray(kernel), "bias": jnp.zeros((cout,), jnp.float32)}
    return params


def random_vgg() -> VGG19:
    """Deterministic random VGG19 (all 16 layers, "torch" preprocessing): tests/smoke only."""
    warnings.warn(
        "Using RANDOM VGG19 weights: the perceptual loss is meaningless for real style transfer "
        "(tests and smoke runs only). Pass a weights file or 'torchvision' for real training.",
        UserWarning,
        stacklevel=3,
    )
    return VGG19(_random_params(), "torch", "random")
