"""Shared test fixtures: the ../shared/data location and small VGG19 weights.

Fixtures stay cheap: the random VGG19 is generated once per session (deterministic seed).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fnst_jax.vgg import VGG19

# Real data beside the repository (absent in a fresh clone: tests using it skip).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_VGG_NPZ = SHARED_DATA / "vgg19_conv1_1-conv3_4_keras.npz"
PHOTOS_DIR = SHARED_DATA / "photos"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def random_vgg() -> VGG19:
    """Full 16-layer deterministic random VGG19 ("torch" preprocessing)."""
    from fnst_jax.vgg_weights import load_vgg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_vgg("random")


@pytest.fixture(scope="session")
def vgg4(random_vgg) -> VGG19:
    """The first 4 conv layers of `random_vgg` (up to relu2_2): cheap, and deep enough for
    a style (relu1_1, relu2_1) and content (relu2_2) loss."""
    from fnst_jax.vgg import CONV_LAYERS

    params = {conv: random_vgg.params[conv] for conv in CONV_LAYERS[:4]}
    return VGG19(params, "torch", "random[:4]")


@pytest.fixture(scope="session")
def small_vgg(random_vgg) -> VGG19:
    """The first 8 conv layers of `random_vgg` (up to relu3_4): enough for most loss tests."""
    from fnst_jax.vgg import CONV_LAYERS

    params = {conv: random_vgg.params[conv] for conv in CONV_LAYERS[:8]}
    return VGG19(params, "torch", "random[:8]")


@pytest.fixture
def fast_compile():
    """`jax_disable_most_optimizations` for one test (compile time dominates on tiny shapes);
    restored afterwards, so test order cannot change results."""
    import jax

    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture
def highest_precision(fast_compile):
    """float32 matmuls/convolutions at full precision for one test (parity against torch)."""
    import jax

    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="session")
def style_image(tmp_path_factory) -> Path:
    """A 48 px striped style image for the smoke training runs."""
    path = tmp_path_factory.mktemp("style") / "style.png"
    y, x = np.mgrid[0:48, 0:48]
    stripes = ((np.sin(x / 3.0) + np.cos(y / 5.0)) * 60 + 128).astype(np.uint8)
    Image.fromarray(np.stack([stripes, 255 - stripes, np.roll(stripes, 7, 0)], -1)).save(path)
    return path


@pytest.fixture
def compiled_programs():
    """A function: the names of the XLA programs `build()` compiles (or loads from a
    compilation cache), in order. `clear` (default) empties JAX's in-memory caches first, so
    a program compiled earlier in this process counts again."""
    import jax

    def programs(build, clear: bool = True) -> list[str]:
        names = []

        def listener(event: str, duration: float, **kwargs) -> None:
            if event == "/jax/core/compile/backend_compile_duration":
                names.append(str(kwargs.get("fun_name")))

        if clear:
            jax.clear_caches()
        jax.monitoring.register_event_duration_secs_listener(listener)
        try:
            build()
        finally:
            jax.monitoring.unregister_event_duration_listener(listener)
        return names

    return programs
