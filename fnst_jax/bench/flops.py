"""The analytic FLOP count of one train step or stylize call, from the layer shapes.

`flops` in every benchmark record is this count, used for every framework, so FLOP/s ratios
equal speed ratios: convolutions and Gram matmuls, 2 FLOPs per multiply-add, forward plus the
backward actually needed. Each record also holds the framework's own count (XLA's cost
analysis, torch.utils.flop_counter); `tests/test_bench_flops.py` checks that both agree.
"""

from __future__ import annotations

from collections.abc import Sequence

from fnst_jax.losses import LossSpec
from fnst_jax.vgg import CONV_CHANNELS, CONV_LAYERS, layer_depth

TRAIN_PAD = 40  # the training default (configs/default.py's train.pad)
DEFAULT_STYLE_LAYERS = LossSpec().style_layers
DEFAULT_CONTENT_LAYER = LossSpec().content_layer


def conv_flops(n: int, k: int, cin: int, cout: int, h: int, w: int) -> int:
    """2 * multiply-adds of a k x k conv giving (n, h, w, cout), padding taps included."""
    return 2 * n * k * k * cin * cout * h * w


def transformer_conv_flops(n: int, h: int, w: int) -> list[int]:
    """Forward FLOPs of each TransformerNet conv (in order) for an (n, h, w, 3) input."""
    h, w = h + (-h % 4), w + (-w % 4)  # the network's own pad to a multiple of 4
    layers = [
        (9, 3, 32, h, w),
        (3, 32, 64, h // 2, w // 2),
        (3, 64, 128, h // 4, w // 4),
        *[(3, 128, 128, h // 4, w // 4)] * 10,
        (3, 128, 64, h // 2, w // 2),
        (3, 64, 32, h, w),
        (9, 32, 3, h, w),
    ]
    return [conv_flops(n, *layer) for layer in layers]


def vgg_conv_shapes(h: int, w: int, depth: int) -> list[tuple[int, int, int, int]]:
    """(cin, cout, h, w) of the first `depth` VGG19 convs for an (h, w) input."""
    shapes = []
    for index, conv in enumerate(CONV_LAYERS[:depth]):
        if index and conv.endswith("_1"):
            h, w = h // 2, w // 2
        shapes.append((*CONV_CHANNELS[conv], h, w))
    return shapes


def analytic_flops(
    task: str,
    batch_size: int,
    image_size: int,
    *,
    pad: int = TRAIN_PAD,
    style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
    content_layer: str = DEFAULT_CONTENT_LAYER,
) -> int:
    """FLOPs of one step counted from the layer shapes: convolutions and Gram matmuls.

    Stylize: the TransformerNet forward at the images' size. Train step: TransformerNet
    forward on the padded batch, backward (weight gradients for every conv, input gradients
    for all but the first); VGG of the stylized images up to the deepest loss layer, forward +
    input gradients (its weights are constants); the content pass forward only; per style
    layer a Gram (2*N*H*W*C^2) and its backward (two matmuls). Elementwise work (norms,
    ReLUs, losses, Adam) is left out: < 1% at 256 px.
    """
    n, size = batch_size, image_size
    if task == "stylize":
        return sum(transformer_conv_flops(n, size, size))
    if task != "train-step":
        raise ValueError(f"unknown task {task!r}; expected train-step or stylize")
    p = min(pad, size - 1)
    transformer = transformer_conv_flops(n, size + 2 * p, size + 2 * p)
    total = 3 * sum(transformer) - transformer[0]
    deepest = max(layer_depth(layer) for layer in (*style_layers, content_layer)) + 1
    stylized = vgg_conv_shapes(size, size, deepest)
    total += 2 * sum(conv_flops(n, 3, *shape) for shape in stylized)
    content = vgg_conv_shapes(size, size, layer_depth(content_layer) + 1)
    total += sum(conv_flops(n, 3, *shape) for shape in content)
    for layer in style_layers:
        _, c, h, w = stylized[layer_depth(layer)]
        total += 3 * 2 * n * h * w * c * c
    return total
