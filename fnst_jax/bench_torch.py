"""PyTorch side of `fnst_jax.bench`: the same train step and stylize pass as the JAX side.

Imports torch at the top, like `fnst_jax.torch_reference` (whose model, VGG19 and loss
definitions it reuses): only the benchmark's torch worker processes import it.

What "the same computation" means here (see BENCHMARKS.md): TransformerNet forward on the
reflect-padded batch, VGG19 taps of the stylized images up to the deepest loss layer, a
content pass that stops at the content layer (no gradient), Gram / content / TV losses in
float32, backward, Adam update. bfloat16 is `torch.autocast` for the networks while the
losses stay in float32, as `fnst_jax.losses` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import numpy as np
import torch

from fnst_jax import torch_reference as ref
from fnst_jax.losses import LossSpec
from fnst_jax.vgg import VGG19

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def torch_device(device: str) -> torch.device:
    """The torch.device for "cpu" or "gpu"; a clear error when CUDA is asked for but absent."""
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but torch sees no CUDA device")
    return torch.device("cuda")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_transformer(flat_params: Mapping[str, np.ndarray]) -> ref.TorchTransformerNet:
    """A TorchTransformerNet holding the parameters of a JAX model (keys of `flat_params`)."""
    model = ref.TorchTransformerNet()
    torch_params = dict(model.named_parameters())
    if len(flat_params) != len(torch_params):
        raise ValueError(f"{len(flat_params)} JAX parameters vs {len(torch_params)} torch ones")
    with torch.no_grad():
        for name, value in flat_params.items():
            value = np.array(value, np.float32)  # a writable copy
            if value.ndim == 4:
                value = np.ascontiguousarray(value.transpose(3, 2, 0, 1))  # HWIO -> OIHW
            torch_params[ref._torch_name(name)].copy_(torch.from_numpy(value))
    return model


def autocast(device: torch.device, dtype: str):
    """bfloat16: autocast the networks; float32: nothing."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def perceptual_loss(
    vgg: ref.TorchVGG19,
    stylized: torch.Tensor,
    content_features: torch.Tensor,
    target_grams: Mapping[str, torch.Tensor],
    spec: LossSpec,
    device: torch.device,
    dtype: str,
) -> torch.Tensor:
    """`torch_reference.perceptual_loss` with the VGG pass in `dtype` and the losses in float32.

    In float32 this is exactly the reference's objective; in bfloat16 the Grams and MSEs are
    taken in float32 like `fnst_jax.losses` does (autocast would run the Gram bmm in bf16).
    """
    if dtype == "float32":
        return ref.perceptual_loss(vgg, stylized, content_features, target_grams, spec)[0]
    with autocast(device, dtype):
        features = vgg(stylized, spec.vgg_layers)
    with torch.autocast(device.type, enabled=False):
        features = {k: v.float() for k, v in features.items()}
        raw_content = ref.mse(features[spec.content_layer], content_features.float())
        weights = spec.layer_weights
        raw_style = 0.0
        for layer in spec.style_layers:
            gram = ref.gram_matrix(features[layer])
            raw_style = raw_style + weights[layer] * ref.mse(
                gram, target_grams[layer].expand_as(gram)
            )
        raw_tv = ref.tv_loss(stylized.float())
        return (
            spec.content_weight * raw_content
            + spec.style_weight * raw_style
            + spec.tv_weight * raw_tv
        )


def make_train_step(
    model: ref.TorchTransformerNet,
    vgg: ref.TorchVGG19,
    target_grams: Mapping[str, torch.Tensor],
    spec: LossSpec,
    *,
    pad: int,
    lr: float,
    device: torch.device,
    dtype: str,
    compile_mode: str | None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """One Adam step of the perceptual objective: step(batch NCHW [0, 255]) -> loss tensor.

    `compile_mode` None runs eagerly; otherwise the loss (forward, and through AOTAutograd
    the backward) is `torch.compile`d with that mode; the Adam update runs eagerly in both
    (foreach kernels over 1.7M parameters: a small share of the step).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(device, dtype):
            content = vgg(batch, (spec.content_layer,))[spec.content_layer]
        with autocast(device, dtype):
            stylized = ref.stylize_padded(model, batch, pad)
        return perceptual_loss(vgg, stylized, content, target_grams, spec, device, dtype)

    if compile_mode is not None:
        loss_fn = torch.compile(loss_fn, mode=compile_mode)

    def step(batch: torch.Tensor) -> torch.Tensor:
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def make_stylize(
    model: ref.TorchTransformerNet, *, device: torch.device, dtype: str, compile_mode: str | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Inference: TransformerNet forward at the images' size, float32 output."""
    model = model.eval()
    forward = model if compile_mode is None else torch.compile(model, mode=compile_mode)

    def stylize(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(device, dtype):
            return forward(images).float()

    return stylize


def torch_vgg(vgg: VGG19, device: torch.device) -> ref.TorchVGG19:
    return ref.torch_vgg_from(vgg).to(device)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs that torch.utils.flop_counter counts for one call (convs, matmuls; fwd + bwd)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())
