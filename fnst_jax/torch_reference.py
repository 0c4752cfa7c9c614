"""The PyTorch twin of fnst_jax's model, VGG19, losses and train step: tests and benchmark only.

This module imports torch at the top: import it only where torch is installed (the tests do
`pytest.importorskip("torch")` first; the benchmark requires the `torch` extra). The library
itself never imports it.

Written for this project from the paper's description and the layer conventions of
torchvision's VGG19, so that every number fnst_jax computes can be checked against an
independent implementation given identical weights:

- `TorchTransformerNet`: same architecture and parameter count (1,679,235); submodules are
  named like the JAX model's parameters so `load_flat_params` (a `flat_params` dict, as
  `export` writes it), `transformer_params_to_torch` / `_from_torch` copy weights by name
  (HWIO <-> OIHW).
- `TorchVGG19`: torchvision's layer indexing (`features.N.weight`), both preprocessings, a
  dict of ReLU taps computed only up to the deepest requested layer.
- `gram_matrix`, `mse`, `tv_loss`, `perceptual_loss` with the same definitions and term names.
- `make_torch_train_step`: one Adam step of that objective, eager or `torch.compile`d; the
  benchmark's torch worker (`fnst_jax.bench.torch_worker`) times exactly this step.

Compute dtypes go by the names of `fnst_jax.runtime.DTYPES` ("float32", "bfloat16"), which
torch spells the same. "float32" computes in the tensors' own dtype (the parity tests also
run it in float64); "bfloat16" runs the networks under `torch.autocast` and the Grams and
losses in float32, as `fnst_jax.losses` does.

Tensors are NCHW here; `to_nchw` / `to_nhwc` convert numpy/JAX NHWC arrays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fnst_jax.losses import LossSpec
from fnst_jax.vgg import (
    CAFFE_MEAN_BGR,
    CONV_CHANNELS,
    CONV_LAYERS,
    RELU_LAYERS,
    TORCH_MEAN,
    TORCH_STD,
    VGG19,
    layer_depth,
)
from fnst_jax.vgg_weights import TORCHVISION_FEATURE_INDEX

INSTANCE_NORM_EPSILON = 1e-5
SIZE_MULTIPLE = 4


def to_nchw(images: Any) -> torch.Tensor:
    """NHWC numpy/JAX array -> float32 NCHW torch tensor (a copy)."""
    return torch.from_numpy(np.array(images, np.float32)).permute(0, 3, 1, 2).contiguous()


def to_nhwc(tensor: torch.Tensor) -> np.ndarray:
    """NCHW torch tensor -> NHWC numpy float32 array."""
    return tensor.detach().permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)


# ---------------------------------------------------------------------------- TransformerNet


class ReflectConv(nn.Module):
    """ReflectionPad2d(k // 2) then an unpadded Conv2d (stride 1 or 2)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class ConvNormRelu(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, relu: bool = True):
        super().__init__()
        self.conv = ReflectConv(cin, cout, kernel_size, stride)
        self.norm = nn.InstanceNorm2d(cout, eps=INSTANCE_NORM_EPSILON, affine=True)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(x))
        return F.relu(y) if self.relu else y


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block1 = ConvNormRelu(channels, channels, 3)
        self.block2 = ConvNormRelu(channels, channels, 3, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block2(self.block1(x))


class UpsampleConvNormRelu(ConvNormRelu):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2, mode="nearest"))


class TorchTransformerNet(nn.Module):
    """Same network as `fnst_jax.transformer_net.TransformerNet`, NCHW in [0, 255]."""

    def __init__(self):
        super().__init__()
        self.conv1 = ConvNormRelu(3, 32, 9)
        self.conv2 = ConvNormRelu(32, 64, 3, 2)
        self.conv3 = ConvNormRelu(64, 128, 3, 2)
        self.res = nn.ModuleList([ResidualBlock(128) for _ in range(5)])
        self.up1 = UpsampleConvNormRelu(128, 64, 3)
        self.up2 = UpsampleConvNormRelu(64, 32, 3)
        self.out = ReflectConv(32, 3, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        ph, pw = -h % SIZE_MULTIPLE, -w % SIZE_MULTIPLE
        if ph or pw:  # bottom/right reflect pad to a multiple of 4, cropped off at the end
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        y = self.conv3(self.conv2(self.conv1(x)))
        for block in self.res:
            y = block(y)
        y = self.out(self.up2(self.up1(y)))
        return y[:, :, :h, :w]


def stylize_padded(model: nn.Module, images: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad `pad` px (clipped to what reflection allows), run, crop the pad off."""
    h, w = images.shape[2], images.shape[3]
    pad_h, pad_w = min(pad, h - 1), min(pad, w - 1)
    x = F.pad(images, (pad_w, pad_w, pad_h, pad_h), mode="reflect") if pad_h or pad_w else images
    return model(x)[:, :, pad_h : pad_h + h, pad_w : pad_w + w]


def _torch_name(jax_name: str) -> str:
    """`res/0/block1/norm/scale` -> `res.0.block1.norm.weight` (kernel -> weight too)."""
    parts = jax_name.split("/")
    parts[-1] = {"kernel": "weight", "scale": "weight"}.get(parts[-1], parts[-1])
    return ".".join(parts)


def _jax_name(torch_model: nn.Module, torch_name: str) -> str:
    """`res.0.block1.norm.weight` -> `res/0/block1/norm/scale` (a conv's weight: kernel)."""
    module_name, _, leaf = torch_name.rpartition(".")
    if leaf == "weight":
        is_conv = isinstance(torch_model.get_submodule(module_name), nn.Conv2d)
        leaf = "kernel" if is_conv else "scale"
    return "/".join([*module_name.split("."), leaf])


def load_flat_params(torch_model: TorchTransformerNet, flat: Mapping[str, np.ndarray]) -> None:
    """Copy parameters keyed and laid out like `export.flat_params` (HWIO kernels) into
    `torch_model` in place; the names and shapes must match one to one."""
    torch_params = dict(torch_model.named_parameters())
    if len(flat) != len(torch_params):
        raise ValueError(f"{len(flat)} JAX parameters vs {len(torch_params)} torch parameters")
    with torch.no_grad():
        for name, value in flat.items():
            value = np.asarray(value)
            if value.ndim == 4:
                value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
            target = torch_params[_torch_name(name)]
            if tuple(target.shape) != value.shape:
                raise ValueError(f"{name}: shape {value.shape} vs torch {tuple(target.shape)}")
            target.copy_(torch.from_numpy(np.array(value, np.float32)))  # writable copy


def transformer_params_to_torch(jax_model: Any, torch_model: TorchTransformerNet) -> None:
    """Copy a JAX TransformerNet's parameters into `torch_model` in place."""
    from fnst_jax.export import flat_params

    load_flat_params(torch_model, flat_params(jax_model))


def torch_flat_params(
    torch_model: TorchTransformerNet, grads: bool = False
) -> dict[str, np.ndarray]:
    """Parameters (or their .grad) of `torch_model` keyed and laid out like `flat_params`:
    float32 arrays, float64 for a float64 model."""
    flat = {}
    for name, tensor in torch_model.named_parameters():
        value = (tensor.grad if grads else tensor).detach().cpu()
        value = (value if value.dtype == torch.float64 else value.float()).numpy()
        value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value  # OIHW -> HWIO
        flat[_jax_name(torch_model, name)] = value
    return flat


def transformer_params_from_torch(torch_model: TorchTransformerNet, jax_model: Any) -> None:
    """Copy `torch_model`'s parameters into a JAX TransformerNet in place."""
    from fnst_jax.export import set_flat_params

    set_flat_params(jax_model, torch_flat_params(torch_model))


# ---------------------------------------------------------------------------- VGG19


class TorchVGG19(nn.Module):
    """VGG19 `features` with torchvision's indexing, as deep as `num_layers` convs.

    forward(images NCHW RGB [0, 255], layers) -> {relu name: NCHW features}, computing only
    up to the deepest requested layer. Parameters are frozen (requires_grad=False).
    """

    def __init__(self, preprocessing: str = "torch", num_layers: int = len(CONV_LAYERS)):
        super().__init__()
        if preprocessing not in ("torch", "caffe"):
            raise ValueError(f"unknown preprocessing {preprocessing!r}")
        self.preprocessing = preprocessing
        self.num_layers = num_layers
        modules: list[nn.Module] = []
        for conv in CONV_LAYERS[:num_layers]:
            if conv != "conv1_1" and conv.endswith("_1"):
                modules.append(nn.MaxPool2d(2, 2))
            assert len(modules) == TORCHVISION_FEATURE_INDEX[conv]
            cin, cout = CONV_CHANNELS[conv]
            modules += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*modules)
        self.requires_grad_(False)
        self.register_buffer(
            "torch_mean", torch.tensor(TORCH_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "torch_std", torch.tensor(TORCH_STD).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "caffe_mean_bgr", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1), persistent=False
        )

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if self.preprocessing == "torch":
            return (images / 255.0 - self.torch_mean) / self.torch_std
        return images.flip(1) - self.caffe_mean_bgr  # RGB -> BGR, minus the BGR mean

    def forward(self, images: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        layers = tuple(layers)
        deepest = max(layer_depth(layer) for layer in layers)
        if deepest >= self.num_layers:
            raise ValueError(f"layer {RELU_LAYERS[deepest]} is deeper than {self.num_layers} convs")
        # The ReLU after conv k sits right after it in `features`.
        relu_index = {
            TORCHVISION_FEATURE_INDEX[conv] + 1: relu
            for conv, relu in zip(CONV_LAYERS, RELU_LAYERS, strict=True)
        }
        last = TORCHVISION_FEATURE_INDEX[CONV_LAYERS[deepest]] + 1
        x = self.preprocess(images)
        features = {}
        for index, module in enumerate(self.features[: last + 1]):
            x = module(x)
            if relu_index.get(index) in layers:
                features[relu_index[index]] = x
        return features


def vgg_to_torch_state_dict(vgg: VGG19) -> dict[str, torch.Tensor]:
    """A JAX VGG19's weights as a torchvision-style state dict (`features.N.weight`, OIHW)."""
    state = {}
    for conv, layer in vgg.params.items():
        index = TORCHVISION_FEATURE_INDEX[conv]
        kernel = np.asarray(layer["kernel"], np.float32).transpose(3, 2, 0, 1)
        state[f"features.{index}.weight"] = torch.from_numpy(np.array(kernel))  # own copy
        state[f"features.{index}.bias"] = torch.from_numpy(np.array(layer["bias"], np.float32))
    return state


def torch_vgg_from(vgg: VGG19) -> TorchVGG19:
    """A TorchVGG19 holding the same weights and preprocessing as `vgg`."""
    model = TorchVGG19(vgg.preprocessing, vgg.num_layers)
    model.load_state_dict(vgg_to_torch_state_dict(vgg))
    return model.eval()


# ---------------------------------------------------------------------------- losses


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C), normalised by C*H*W."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.mean((a - b) ** 2)


def tv_loss(images: torch.Tensor) -> torch.Tensor:
    """mean |vertical difference| + mean |horizontal difference| (NCHW)."""
    dy = images[:, :, 1:, :] - images[:, :, :-1, :]
    dx = images[:, :, :, 1:] - images[:, :, :, :-1]
    return dy.abs().mean() + dx.abs().mean()


def style_grams(
    vgg: TorchVGG19, style_images: torch.Tensor, layers: Iterable[str]
) -> dict[str, torch.Tensor]:
    layers = tuple(layers)
    with torch.no_grad():
        features = vgg(style_images, layers)
    return {layer: gram_matrix(features[layer]) for layer in layers}


def autocast(device_type: str, compute_dtype: str = "float32") -> contextlib.AbstractContextManager:
    """`torch.autocast` to `compute_dtype` for the networks; "float32": nothing (tensors keep
    their own dtype)."""
    if compute_dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=getattr(torch, compute_dtype))


def perceptual_loss(
    vgg: TorchVGG19,
    stylized: torch.Tensor,
    content_features: torch.Tensor,
    target_grams: Mapping[str, torch.Tensor],
    spec: LossSpec,
    compute_dtype: str = "float32",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Same objective and term names as `fnst_jax.losses.perceptual_loss` (NCHW).

    The VGG pass runs in `compute_dtype`; with "bfloat16" the Grams and MSEs are taken in
    float32 like `fnst_jax.losses` does (autocast alone would run the Gram bmm in bfloat16).
    """
    device_type = stylized.device.type
    with autocast(device_type, compute_dtype):
        features = vgg(stylized, spec.vgg_layers)
    if compute_dtype == "float32":
        return _loss_terms(features, stylized, content_features, target_grams, spec)
    with torch.autocast(device_type, enabled=False):
        return _loss_terms(
            {layer: value.float() for layer, value in features.items()},
            stylized.float(),
            content_features.float(),
            {layer: gram.float() for layer, gram in target_grams.items()},
            spec,
        )


def _loss_terms(
    features: Mapping[str, torch.Tensor],
    stylized: torch.Tensor,
    content_features: torch.Tensor,
    target_grams: Mapping[str, torch.Tensor],
    spec: LossSpec,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    raw_content = mse(features[spec.content_layer], content_features)
    per_layer = {}
    for layer, target in target_grams.items():
        gram = gram_matrix(features[layer])
        per_layer[layer] = mse(gram, target.expand_as(gram))
    weights = spec.layer_weights
    raw_style = sum(weights[layer] * per_layer[layer] for layer in spec.style_layers)
    raw_tv = tv_loss(stylized)
    terms = {
        "content": spec.content_weight * raw_content,
        "style": spec.style_weight * raw_style,
        "tv": spec.tv_weight * raw_tv,
        "raw_content": raw_content,
        "raw_style": raw_style,
        "raw_tv": raw_tv,
    }
    terms["total"] = terms["content"] + terms["style"] + terms["tv"]
    terms.update({f"style/{layer}": loss for layer, loss in per_layer.items()})
    return terms["total"], terms


def make_torch_train_step(
    model: TorchTransformerNet,
    vgg: TorchVGG19,
    target_grams: Mapping[str, torch.Tensor],
    spec: LossSpec,
    lr: float,
    pad: int = 0,
    *,
    compute_dtype: str = "float32",
    compile_mode: str | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """An Adam step on `model` with the perceptual loss: step(batch NCHW [0, 255]) -> the
    loss as a detached 0-d tensor (not synchronised: `float()` it to read it).

    `compute_dtype` as for `perceptual_loss` (the content pass and the TransformerNet too).
    `compile_mode` None runs eagerly; otherwise the loss (forward, and through AOTAutograd
    the backward) is `torch.compile`d with that mode; the Adam update runs eagerly in both
    (foreach kernels over 1.7M parameters: a small share of the step).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        device_type = batch.device.type
        with torch.no_grad(), autocast(device_type, compute_dtype):
            content = vgg(batch, (spec.content_layer,))[spec.content_layer]
        with autocast(device_type, compute_dtype):
            stylized = stylize_padded(model, batch, pad) if pad else model(batch)
        return perceptual_loss(vgg, stylized, content, target_grams, spec, compute_dtype)[0]

    if compile_mode is not None:
        loss_fn = torch.compile(loss_fn, mode=compile_mode)

    def step(batch: torch.Tensor) -> torch.Tensor:
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step
