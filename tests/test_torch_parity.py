"""Parity with the independent PyTorch reference (fnst_jax.torch_reference), same weights.

TransformerNet forward (also through stylize_padded), VGG19 taps under both preprocessings,
each loss term, the gradient of the total loss w.r.t. the TransformerNet parameters, and the
conversion of torchvision-format state dicts (.pth and .safetensors) written by the reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

from fnst_jax import torch_reference as ref  # noqa: E402
from fnst_jax.export import flat_params  # noqa: E402
from fnst_jax.losses import LossSpec, content_targets, perceptual_loss, style_grams  # noqa: E402
from fnst_jax.transformer_net import TransformerNet, stylize_padded  # noqa: E402
from fnst_jax.vgg import RELU_LAYERS, VGG19  # noqa: E402
from fnst_jax.vgg_weights import VGGWeightsError, load_vgg  # noqa: E402

# Both sides in float32; XLA:CPU convs are full fp32, make dots full fp32 too (the fixture
# also turns most XLA optimizations off: compile time dominates at these sizes).
pytestmark = pytest.mark.usefixtures("highest_precision")
torch.manual_seed(0)


# Jitted (with most optimizations off) compiles faster than eager op-by-op dispatch.
_forward = nnx.jit(lambda model, x: model(x))
_stylize = nnx.jit(stylize_padded, static_argnames="pad")


def _images(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def _relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def models():
    """A JAX TransformerNet and its torch twin with identical weights.

    The output conv is rescaled so outputs span roughly the 0..255 range of a trained model,
    which makes the absolute tolerance below meaningful.
    """
    model = TransformerNet(rngs=nnx.Rngs(3))
    model.out.conv.kernel[...] = model.out.conv.kernel[...] * 60.0
    model.out.conv.bias[...] = model.out.conv.bias[...] + 127.0
    twin = ref.TorchTransformerNet()
    ref.transformer_params_to_torch(model, twin)
    return model, twin


def test_parameter_counts_match(models):
    model, twin = models
    assert sum(p.numel() for p in twin.parameters()) == 1_679_235
    flat = flat_params(model)
    assert sum(v.size for v in flat.values()) == 1_679_235


@pytest.mark.parametrize("shape", [(2, 37, 53, 3), (1, 64, 64, 3)])
def test_transformer_forward(models, shape):
    model, twin = models
    x = _images(shape)
    y = np.asarray(_forward(model, jnp.asarray(x)))
    with torch.no_grad():
        expected = ref.to_nhwc(twin(ref.to_nchw(x)))
    assert y.shape == expected.shape == shape
    assert np.std(expected) > 10  # on the 0..255 scale, not a near-constant output
    assert np.max(np.abs(y - expected)) < 1e-3


@pytest.mark.parametrize("pad", [8, 40])
def test_stylize_padded(models, pad):
    model, twin = models
    x = _images((1, 30, 35, 3), seed=1)  # pad 40 is clipped to 29 / 34 on both sides
    y = np.asarray(_stylize(model, jnp.asarray(x), pad=pad))
    with torch.no_grad():
        expected = ref.to_nhwc(ref.stylize_padded(twin, ref.to_nchw(x), pad))
    assert y.shape == expected.shape == x.shape
    assert np.max(np.abs(y - expected)) < 1e-3


@pytest.mark.slow
def test_weights_copy_back_from_torch():
    twin = ref.TorchTransformerNet()  # torch's own init
    model = TransformerNet(rngs=nnx.Rngs(0))
    ref.transformer_params_from_torch(twin, model)
    x = _images((1, 20, 24, 3), seed=2)
    with torch.no_grad():
        expected = ref.to_nhwc(twin(ref.to_nchw(x)))
    assert _relative(_forward(model, jnp.asarray(x)), expected) < 1e-5
    back = ref.TorchTransformerNet()
    ref.transformer_params_to_torch(model, back)
    for (name, a), (_, b) in zip(twin.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("preprocessing", ["torch", "caffe"])
def test_vgg_taps(random_vgg, preprocessing):
    vgg = VGG19(random_vgg.params, preprocessing, "random")
    twin = ref.torch_vgg_from(vgg)
    x = _images((2, 32, 32, 3), seed=3)
    features = vgg(jnp.asarray(x), RELU_LAYERS)
    with torch.no_grad():
        expected = twin(ref.to_nchw(x), RELU_LAYERS)
    assert set(features) == set(expected) == set(RELU_LAYERS)
    for layer in RELU_LAYERS:
        # Measured ~1e-6 (float32 summation order) at every tap.
        assert _relative(features[layer], ref.to_nhwc(expected[layer])) < 2e-5, layer


def test_torch_vgg_computes_only_requested_depth(random_vgg):
    twin = ref.torch_vgg_from(random_vgg)
    calls = []
    for module in twin.features:
        module.register_forward_hook(lambda m, i, o: calls.append(m))
    with torch.no_grad():
        out = twin(ref.to_nchw(_images((1, 16, 16, 3))), ("relu2_1",))
    assert set(out) == {"relu2_1"}
    assert len(calls) == 7  # conv, relu, conv, relu, pool, conv, relu


SPEC = LossSpec(
    style_layers=("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
    content_layer="relu2_2",
    style_weight=1e5,
    content_weight=1.0,
    tv_weight=1e-2,
    style_layer_weights=(1.0, 0.5, 2.0, 1.0),
)


def _loss_inputs(vgg):
    content_images = _images((2, 32, 32, 3), seed=4)
    style_image = _images((1, 40, 40, 3), seed=5)
    return content_images, style_image


def test_loss_terms(random_vgg):
    content_images, style_image = _loss_inputs(random_vgg)
    stylized = _images((2, 32, 32, 3), seed=6)
    grams = style_grams(random_vgg, jnp.asarray(style_image), SPEC.style_layers)
    content = content_targets(random_vgg, jnp.asarray(content_images), SPEC)
    _, terms = perceptual_loss(random_vgg, jnp.asarray(stylized), content, grams, SPEC)

    twin = ref.torch_vgg_from(random_vgg)
    with torch.no_grad():
        t_grams = ref.style_grams(twin, ref.to_nchw(style_image), SPEC.style_layers)
        t_content = twin(ref.to_nchw(content_images), (SPEC.content_layer,))[SPEC.content_layer]
        _, t_terms = ref.perceptual_loss(twin, ref.to_nchw(stylized), t_content, t_grams, SPEC)
    for layer in SPEC.style_layers:
        assert _relative(grams[layer], t_grams[layer].numpy()) < 2e-5, layer
    assert set(terms) == set(t_terms)
    for name, value in terms.items():
        assert float(value) > 0, name
        np.testing.assert_allclose(float(value), float(t_terms[name]), rtol=1e-4, err_msg=name)


def _flatten(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): np.asarray(v)
        for path, v in leaves
    }


def _torch_loss_gradient(model, vgg, spec, content_images, style_image, pad, dtype):
    """The reference's loss and gradient (flat, JAX names and layout, float64) in `dtype`."""
    twin = ref.TorchTransformerNet()
    ref.transformer_params_to_torch(model, twin)
    twin = twin.to(dtype)
    vgg_twin = ref.torch_vgg_from(vgg).to(dtype)
    batch = ref.to_nchw(content_images).to(dtype)
    with torch.no_grad():
        grams = ref.style_grams(vgg_twin, ref.to_nchw(style_image).to(dtype), spec.style_layers)
        content = vgg_twin(batch, (spec.content_layer,))[spec.content_layer]
    stylized = ref.stylize_padded(twin, batch, pad)
    loss, _ = ref.perceptual_loss(vgg_twin, stylized, content, grams, spec)
    loss.backward()
    grads = ref.torch_flat_params(twin, grads=True)
    return float(loss.detach()), {name: grad.astype(np.float64) for name, grad in grads.items()}


def _jax_loss_gradient(model, vgg, spec, content_images, style_image, pad):
    images = jnp.asarray(content_images)
    grams = style_grams(vgg, jnp.asarray(style_image), spec.style_layers)
    content = content_targets(vgg, images, spec)

    @nnx.jit
    def loss_and_grad(model, vgg, images, content, grams):
        def loss_fn(model):
            stylized = stylize_padded(model, images, pad)
            return perceptual_loss(vgg, stylized, content, grams, spec)[0]

        return nnx.value_and_grad(loss_fn)(model)

    loss, grads = loss_and_grad(model, vgg, images, content, grams)
    return float(loss), {
        k: v.astype(np.float64) for k, v in _flatten(nnx.to_pure_dict(grads)).items()
    }


def _gradient_errors(grads, expected):
    """(global relative error, {name: per-tensor relative error})."""
    names = sorted(expected)
    assert set(grads) == set(names)
    difference = np.sqrt(sum(np.sum((grads[n] - expected[n]) ** 2) for n in names))
    reference = np.sqrt(sum(np.sum(expected[n] ** 2) for n in names))
    assert reference > 0
    # Per tensor: relative to the tensor's own gradient, with a floor for the conv biases that
    # precede an instance norm (their true gradient is 0: only rounding remains).
    per_tensor = {
        n: np.linalg.norm(grads[n] - expected[n]) / (np.linalg.norm(expected[n]) + 1e-6 * reference)
        for n in names
    }
    return difference / reference, per_tensor


# The loss is only piecewise smooth: a ReLU pre-activation (in the TransformerNet or VGG) or a
# max-pool near-tie within float32 rounding of its kink flips and moves the gradient by
# ~1e-4..2e-3 (measured: torch float32 vs torch float64 shows the same jumps, at some input
# sizes and not others). So the strict 1e-4 check runs where no kink is near by construction:
# every ReLU is kept well inside its active side (instance-norm shifts of +8 sigma, VGG biases
# +20 on block 1, which has no max-pool). The realistic check below uses the real kinks.
SMOOTH_SPEC = LossSpec(
    style_layers=("relu1_1", "relu1_2"),
    content_layer="relu1_2",
    style_weight=1.0,
    content_weight=1.0,
    tv_weight=1e-2,
    style_layer_weights=(1.0, 2.0),
)


@pytest.mark.slow
def test_loss_gradient_wrt_transformer_params_strict(random_vgg):
    vgg = VGG19(
        {
            c: {
                "kernel": random_vgg.params[c]["kernel"],
                "bias": random_vgg.params[c]["bias"] + 20.0,
            }
            for c in ("conv1_1", "conv1_2")
        },
        "torch",
        "smooth",
    )
    model = TransformerNet(rngs=nnx.Rngs(7))
    for layer in (model.conv1, model.conv2, model.conv3, model.up1, model.up2):
        layer.norm.bias[...] = layer.norm.bias[...] + 8.0
    for block in model.res:
        block.block1.norm.bias[...] = block.block1.norm.bias[...] + 8.0
    content_images = _images((2, 26, 34, 3), seed=4)  # with pad 6: 38x46, not a multiple of 4
    style_image = _images((1, 40, 40, 3), seed=5)
    args = (model, vgg, SMOOTH_SPEC, content_images, style_image, 6)
    loss, grads = _jax_loss_gradient(*args)
    for dtype in (torch.float32, torch.float64):
        # Measured: 6e-7 global, < 3e-4 per tensor against both (6 input sizes tried).
        expected_loss, expected = _torch_loss_gradient(*args, dtype)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
        global_error, per_tensor = _gradient_errors(grads, expected)
        assert global_error < 1e-4, (dtype, global_error)
        worst = max(per_tensor, key=per_tensor.get)
        assert per_tensor[worst] < 3e-3, (dtype, worst, per_tensor[worst])


@pytest.mark.slow
def test_loss_gradient_wrt_transformer_params_realistic(random_vgg):
    # Default-like loss through four VGG blocks (max-pools, real ReLU kinks), odd sizes.
    model = TransformerNet(rngs=nnx.Rngs(7))
    content_images, style_image = _loss_inputs(random_vgg)
    args = (model, random_vgg, SPEC, content_images[:, :26, :34], style_image, 6)
    loss, grads = _jax_loss_gradient(*args)
    expected_loss, expected = _torch_loss_gradient(*args, torch.float64)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    global_error, _ = _gradient_errors(grads, expected)
    # Measured 7e-7 without a kink flip and up to 2e-3 with one (see above); a real
    # difference in the maths (padding, norm, upsampling, Gram scaling) shows as >1e-1.
    assert global_error < 1e-2, global_error


@pytest.fixture(scope="module")
def torch_vgg_model():
    """A TorchVGG19 with torch's own random init (independent of fnst_jax's random weights)."""
    torch.manual_seed(1)
    model = ref.TorchVGG19("torch")
    for module in model.features:  # He init keeps deep taps well scaled for relative checks
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.uniform_(module.bias, -0.1, 0.1)
    return model.eval()


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_state_dict_file_converts(torch_vgg_model, tmp_path, fmt):
    state = dict(torch_vgg_model.state_dict())
    state["classifier.0.weight"] = torch.zeros(4, 8)  # torchvision files carry the classifier
    path = tmp_path / f"vgg19.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, path)
    vgg = load_vgg(str(path))
    assert vgg.preprocessing == "torch" and vgg.num_layers == 16
    x = _images((1, 32, 32, 3), seed=8)
    features = vgg(jnp.asarray(x), RELU_LAYERS)
    with torch.no_grad():
        expected = torch_vgg_model(ref.to_nchw(x), RELU_LAYERS)
    for layer in RELU_LAYERS:
        assert _relative(features[layer], ref.to_nhwc(expected[layer])) < 2e-5, layer
    # And back: the reference's exporter writes the same state dict.
    back = ref.vgg_to_torch_state_dict(vgg)
    for key, value in back.items():
        assert torch.equal(value, state[key]), key


def test_truncated_state_dict(torch_vgg_model, tmp_path):
    state = {
        k: v for k, v in torch_vgg_model.state_dict().items() if int(k.split(".")[1]) <= 16
    }  # features.0 .. features.16: conv1_1 .. conv3_4
    torch.save(state, tmp_path / "first8.pth")
    vgg = load_vgg(tmp_path / "first8.pth")
    assert vgg.num_layers == 8
    x = _images((1, 24, 24, 3), seed=9)
    features = vgg(jnp.asarray(x), ("relu1_1", "relu3_4"))
    with torch.no_grad():
        expected = torch_vgg_model(ref.to_nchw(x), ("relu1_1", "relu3_4"))
    for layer in ("relu1_1", "relu3_4"):
        assert _relative(features[layer], ref.to_nhwc(expected[layer])) < 2e-5
    with pytest.raises(ValueError, match=r"relu4_1.*deeper than the weights provide.*first8\.pth"):
        vgg(jnp.asarray(x), ("relu4_1",))


def test_state_dict_errors(torch_vgg_model, tmp_path):
    state = dict(torch_vgg_model.state_dict())
    state["features.5.weight"] = torch.zeros(128, 64, 1, 1)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(VGGWeightsError, match=r"shape\.pth: features\.5\.weight has shape"):
        load_vgg(tmp_path / "shape.pth")
    state = {k: v for k, v in torch_vgg_model.state_dict().items() if k != "features.7.weight"}
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(VGGWeightsError, match=r"missing\.pth: missing features\.7\.weight"):
        load_vgg(tmp_path / "missing.pth")
    # A TransformerNet state dict is not a VGG19.
    torch.save(ref.TorchTransformerNet().state_dict(), tmp_path / "transformer.pth")
    with pytest.raises(VGGWeightsError, match=r"transformer\.pth: unexpected key"):
        load_vgg(tmp_path / "transformer.pth")


@pytest.mark.slow
def test_torch_train_step_reduces_loss(small_vgg):
    spec = LossSpec(style_layers=("relu1_2", "relu2_2"), content_layer="relu2_2", style_weight=1e3)
    vgg_twin = ref.torch_vgg_from(small_vgg)
    style = ref.to_nchw(_images((1, 24, 24, 3), seed=10))
    grams = ref.style_grams(vgg_twin, style, spec.style_layers)
    torch.manual_seed(0)
    model = ref.TorchTransformerNet()
    batch = ref.to_nchw(_images((1, 24, 24, 3), seed=11))
    step = ref.make_torch_train_step(model, vgg_twin, grams, spec, lr=1e-2, pad=4)
    losses = [float(step(batch)) for _ in range(6)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0], losses  # measured 0.79
