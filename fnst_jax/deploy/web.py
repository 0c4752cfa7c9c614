"""The exported model in the visitor's browser: the static site (`--format web`) and what
the service needs for its page's "On this device".

    python -m fnst_jax.export --model runs/mosaic --format web --output site/

In the browser the model's ONNX file (`onnx_graph`, float16 unless asked otherwise) runs
in onnxruntime-web: WebGPU where the browser offers it, else WebAssembly. The page is the
service's (fnst_jax/serve/static/; device.js runs the model, tiling.js tiles large photos
with the file's tiling functions and exact statistics as `stylize.tiling` does). The
runtime comes from the `web/` npm package: `npm ci` in web/ installs it into
web/node_modules/onnxruntime-web/dist/, and the service (/ort/) and the site (ort/) serve
its `RUNTIME_FILES` from there; nothing is loaded from a CDN. Without them the service's
page still stylizes on the server and says why "On this device" is unavailable.

The site (`write_site`) is a folder any static file host serves as it is:
    index.html          the service's page, pointed at site.json (no server behind it)
    static/             the page's scripts and stylesheet
    ort/                the runtime files
    models/NAME.onnx    the model; a multi-style model's file takes every style (mixable)
    models/ENTRY.jpg    the style thumbnails
    site.json           the models the page lists (`GET /v1/models`'s fields, plus each
                        entry's file: `onnx` {url, dtype, bytes, sha256, style_index})
    _headers            COOP/COEP for hosts that read the file (Netlify, Cloudflare Pages):
                        a cross-origin isolated page may run WebAssembly on several threads
The ONNX file is checked against the JAX model (`verify`, tiled too when it can tile)
before anything is written; the folder is built beside the destination and renamed into
place, so a failed export leaves nothing behind and an existing folder is replaced only
with --overwrite.

For the service: `browser_info()` says whether the page can offer "On this device", and
`OnnxCache` keeps each model's file, made on the first request for it
(`model_file_onnx`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fnst_jax import export, model_file
from fnst_jax.deploy import DEFAULT_OPSET, STYLE_INPUT_NAME, verify
from fnst_jax.errors import UsageError, UserError
from fnst_jax.transformer_net import TransformerNet

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
RUNTIME_PACKAGE = "onnxruntime-web"
RUNTIME_DIR = WEB_DIR / "node_modules" / RUNTIME_PACKAGE / "dist"
# What the page loads: the WebAssembly build (ort.wasm.min.mjs and its .mjs/.wasm), and the
# WebGPU build (ort.webgpu.min.mjs, whose .mjs/.wasm also run WebAssembly).
RUNTIME_FILES = (
    "ort.wasm.min.mjs",
    "ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm",
    "ort.webgpu.min.mjs",
    "ort-wasm-simd-threaded.asyncify.mjs",
    "ort-wasm-simd-threaded.asyncify.wasm",
)
RUNTIME_CONTENT_TYPES = {".mjs": "text/javascript", ".wasm": "application/wasm"}
PAGE_DIR = Path(__file__).resolve().parents[1] / "serve" / "static"
PAGE_FILES = (
    "app.js",
    "camera.js",
    "device.js",
    "on_device.js",
    "onnx_file.js",
    "page.js",
    "pixels.js",
    "stroke.js",
    "tiling.js",
    "style.css",
)
# The page reads its models from the service unless this tag names a site's model list.
SITE_META = '<meta name="fnst-site" content="">'
SITE_FILE = "site.json"
SITE_FORMAT = "fnst_jax.site"
SITE_VERSION = 1
# float16 halves the download; verify bounds its error like float32's (1/255 after rounding).
DEFAULT_DTYPE = "float16"
# The service makes files on request, while it serves: one odd size (no multiple of 4) and
# the tiled check, seconds on a CPU.
SERVICE_VERIFY_SIZES = ((53, 37),)
# Cross-origin isolation (SharedArrayBuffer, so WebAssembly threads); the page loads nothing
# from other origins, so it loses nothing by it.
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


class WebRuntimeError(UserError, FileNotFoundError):
    """The browser runtime's files are not installed (web/node_modules)."""


# ----------------------------------------------------------------------------- the runtime


def runtime_problem() -> str | None:
    """Why the browser runtime cannot be served, in words; None when it can."""
    missing = [name for name in RUNTIME_FILES if not (RUNTIME_DIR / name).is_file()]
    if not missing:
        return None
    if not RUNTIME_DIR.is_dir():
        return (
            f"{RUNTIME_PACKAGE} is not installed ({RUNTIME_DIR} is missing): run "
            f"`npm ci` in {WEB_DIR}"
        )
    return (
        f"{RUNTIME_DIR} lacks {', '.join(missing)} (a different {RUNTIME_PACKAGE} version?): "
        f"run `npm ci` in {WEB_DIR}"
    )


def require_runtime() -> Path:
    """The runtime folder; WebRuntimeError saying to run `npm ci` when it is missing."""
    problem = runtime_problem()
    if problem:
        raise WebRuntimeError(f"--format web needs the browser runtime: {problem}")
    return RUNTIME_DIR


def runtime_version() -> str:
    """The installed onnxruntime-web version ("" when absent)."""
    try:
        return json.loads((RUNTIME_DIR.parent / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return ""


def browser_info() -> dict[str, Any]:
    """What the service's page needs to know (`GET /v1/info`'s `browser`)."""
    problem = runtime_problem()
    if problem is None and importlib.util.find_spec("onnx") is None:
        problem = "the service cannot export ONNX files: pip install -e '.[onnx]'"
    return {
        "available": problem is None,
        "reason": problem,
        "runtime_url": "/ort/",
        "runtime": f"{RUNTIME_PACKAGE} {runtime_version()}".strip(),
        "dtype": DEFAULT_DTYPE,
    }


# ----------------------------------------------------------------------------- the ONNX file


@dataclasses.dataclass(frozen=True)
class OnnxExport:
    """A verified ONNX file for the browser."""

    data: bytes
    dtype: str
    styles: list[str]  # the style input's columns (a multi-style model), else []
    checks: list[verify.Check]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def export_onnx(
    model: TransformerNet,
    pad: int,
    properties: Mapping[str, str],
    style_names: Sequence[str],
    *,
    dtype: str = DEFAULT_DTYPE,
    opset: int = DEFAULT_OPSET,
    verify_sizes: Sequence[tuple[int, int]] = verify.DEFAULT_SIZES,
) -> OnnxExport:
    """The ONNX file of `model` (`onnx_graph.serialize`; a multi-style model with its style
    input, `style_names` its columns), checked against the JAX model at `verify_sizes`
    (height, width) and, when it can tile, tiled (raises `verify.VerificationError`)."""
    try:
        from fnst_jax.deploy import onnx_graph
    except ImportError as e:
        raise UserError(
            f"the browser's model is an ONNX file: it needs the onnx and onnxruntime packages "
            f"({e}): pip install -e '.[onnx]'"
        ) from None
    properties = dict(properties)
    style_input = model.num_styles > 1
    if style_input:
        properties["styles"] = ",".join(style_names)
        properties["style_input"] = STYLE_INPUT_NAME
    data = onnx_graph.serialize(
        model, pad, properties, opset=opset, dtype=dtype, style_input=style_input
    )
    with tempfile.TemporaryDirectory(prefix="fnst-web-") as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(data)
        checks = verify.verify(verify.onnx_runner(path), model, pad, verify_sizes)
        if not style_input:  # a file with a style input has no tiling functions
            checks += verify.verify_tiling(path, model, pad)
    verify.require_agreement(checks, f"the {dtype} ONNX file for the browser")
    return OnnxExport(data, dtype, list(style_names) if style_input else [], checks)


def model_file_onnx(path: str | os.PathLike, properties: Mapping[str, str], dtype: str) -> bytes:
    """The browser's ONNX file of a model file, as the service offers it: every style of a
    multi-style model, verified at `SERVICE_VERIFY_SIZES`. A float16 file that fails its
    check is replaced by a float32 one (the page reads the dtype from the file)."""
    model, metadata = export.load_model(path)
    pad = int(properties.get("pad") or metadata.get("pad") or 0)
    names = model_file.style_names(metadata, model.num_styles)
    try:
        return export_onnx(
            model, pad, properties, names, dtype=dtype, verify_sizes=SERVICE_VERIFY_SIZES
        ).data
    except verify.VerificationError:
        if dtype == "float32":
            raise
    return export_onnx(
        model, pad, properties, names, dtype="float32", verify_sizes=SERVICE_VERIFY_SIZES
    ).data


class OnnxCache:
    """Files made once, on first request, and kept in memory (a few MB a model); requests
    that arrive while one is being made wait for it. A build that raises is not kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[Hashable, _Slot] = {}

    def get(self, key: Hashable, build: Callable[[], bytes]) -> bytes:
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
        with slot.lock:
            if slot.data is None:
                slot.data = build()
            return slot.data


@dataclasses.dataclass
class _Slot:
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    data: bytes | None = None


# ----------------------------------------------------------------------------- the site


@dataclasses.dataclass(frozen=True)
class Site:
    """What `write_site` wrote."""

    path: Path
    onnx: OnnxExport
    entries: list[dict[str, Any]]  # site.json's models
    total_bytes: int


def safe_name(name: str) -> str:
    """A name for URLs and file names (as the service names its models)."""
    return _UNSAFE_NAME_CHARACTERS.sub("-", name).strip("-.") or "model"


def check_site_output(output: Path, overwrite: bool) -> None:
    """UsageError for a destination that is a file, or a non-empty folder without
    `overwrite`."""
    if output.is_file():
        raise UsageError(f"--output {output} is a file; --format web writes a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UsageError(f"{output} is a folder that is not empty; pass --overwrite to replace it")


def _thumbnail(encoded: Any) -> bytes | None:
    """A base64 JPEG thumbnail from the metadata, or None."""
    data = model_file.style_thumbnail_jpeg({model_file.STYLE_THUMBNAIL_KEY: encoded})
    return data if data and data.startswith(b"\xff\xd8") else None


def site_entries(
    name: str, metadata: Mapping[str, Any], onnx: OnnxExport, style: str, pad: int
) -> list[tuple[dict[str, Any], bytes | None]]:
    """(site.json entry, thumbnail JPEG or None) per model the page lists: one for a file of
    one style (`style`: its name or mix label), one per style (NAME-STYLE, as the service
    names them) for a file with a style input."""
    onnx_fields = {
        "url": f"models/{name}.onnx",
        "dtype": onnx.dtype,
        "bytes": len(onnx.data),
        "sha256": onnx.sha256,
    }
    common = {"step": metadata.get("step"), "pad": pad, "image_size": metadata.get("image_size")}
    styles_metadata = metadata.get("styles") or []
    if not onnx.styles:
        entry = {
            "name": name,
            "style": style or None,
            "styles": [],
            **common,
            "onnx": {**onnx_fields, "style_index": None},
        }
        thumbnail = metadata.get(model_file.STYLE_THUMBNAIL_KEY)
        if style and len(styles_metadata) > 1:  # one style of a multi-style model, or a mix
            names = model_file.style_names(dict(metadata), len(styles_metadata))
            chosen = styles_metadata[names.index(style)] if style in names else {}
            thumbnail = chosen.get("thumbnail")
        return [(entry, _thumbnail(thumbnail))]
    styles_metadata = styles_metadata or [{} for _ in onnx.styles]
    entries = []
    for index, (style_name, style_entry) in enumerate(
        zip(onnx.styles, styles_metadata, strict=True)
    ):
        entry = {
            "name": safe_name(f"{name}-{style_name}"),
            "style": style_name,
            "styles": onnx.styles,
            **common,
            "onnx": {**onnx_fields, "style_index": index},
        }
        entries.append((entry, _thumbnail(style_entry.get("thumbnail"))))
    return entries


def write_site(
    output: str | os.PathLike,
    *,
    name: str,
    model: TransformerNet,
    pad: int,
    properties: Mapping[str, str],
    metadata: Mapping[str, Any],
    style: str = "",
    dtype: str = DEFAULT_DTYPE,
    opset: int = DEFAULT_OPSET,
    verify_sizes: Sequence[tuple[int, int]] = verify.DEFAULT_SIZES,
    overwrite: bool = False,
) -> Site:
    """The static site of `model` at `output` (see the module docstring). name: the model's
    name on the page; style: the label of the one style or mix `model` computes ("" for
    its own, or for every style of a multi-style model)."""
    output = Path(output)
    check_site_output(output, overwrite)
    runtime = require_runtime()
    name = safe_name(name)
    names = model_file.style_names(dict(metadata), model.num_styles)
    onnx = export_onnx(
        model, pad, properties, names, dtype=dtype, opset=opset, verify_sizes=verify_sizes
    )
    entries = site_entries(name, metadata, onnx, style, pad)
    output.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        _write_site_files(building, runtime, name, onnx, entries, properties)
        total = sum(f.stat().st_size for f in building.rglob("*") if f.is_file())
        _replace_folder(building, output)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return Site(output, onnx, [entry for entry, _ in entries], total)


def _write_site_files(
    folder: Path,
    runtime: Path,
    name: str,
    onnx: OnnxExport,
    entries: list[tuple[dict[str, Any], bytes | None]],
    properties: Mapping[str, str],
) -> None:
    page = (PAGE_DIR / "index.html").read_text()
    if page.count(SITE_META) != 1:
        raise RuntimeError(f"{PAGE_DIR / 'index.html'} lacks {SITE_META!r}")
    (folder / "index.html").write_text(page.replace(SITE_META, SITE_META[:-2] + 'site.json">'))
    (folder / "static").mkdir()
    for file_name in PAGE_FILES:
        shutil.copyfile(PAGE_DIR / file_name, folder / "static" / file_name)
    (folder / "ort").mkdir()
    for file_name in RUNTIME_FILES:
        shutil.copyfile(runtime / file_name, folder / "ort" / file_name)
    models = folder / "models"
    models.mkdir()
    (models / f"{name}.onnx").write_bytes(onnx.data)
    for entry, thumbnail in entries:
        entry["thumbnail_url"] = None
        if thumbnail is not None:
            entry["thumbnail_url"] = f"models/{entry['name']}.jpg"
            (models / f"{entry['name']}.jpg").write_bytes(thumbnail)
    site = {
        "format": SITE_FORMAT,
        "version": SITE_VERSION,
        "generated_by": f"fnst_jax {properties.get('fnst_jax_version', '')}".strip(),
        "runtime": f"{RUNTIME_PACKAGE} {runtime_version()}".strip(),
        "models": [entry for entry, _ in entries],
    }
    (folder / SITE_FILE).write_text(json.dumps(site, indent=2) + "\n")
    headers = "".join(f"  {key}: {value}\n" for key, value in ISOLATION_HEADERS.items())
    (folder / "_headers").write_text(f"/*\n{headers}")
    os.chmod(folder, 0o755)  # mkdtemp makes 0700; a web server's user must read it


def _replace_folder(built: Path, output: Path) -> None:
    """Rename `built` onto `output` (an absent or empty folder, or one to replace)."""
    if not output.exists():
        os.replace(built, output)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
    os.replace(output, old / output.name)
    try:
        os.replace(built, output)
    except BaseException:
        os.replace(old / output.name, output)
        raise
    shutil.rmtree(old, ignore_errors=True)
