"""Johnson, Alahi & Fei-Fei (2016) as published, for comparison with the paper:

    python train.py --config configs/johnson2016.py --workdir runs/johnson \
        --config.style_image=path/to/style.jpg

COCO 2014 train, 256x256, batch 4, Adam lr 1e-3, 40k steps; style at relu1_2, relu2_2,
relu3_3, relu4_3 and content at relu2_2 (the paper's VGG-16 layers; here in VGG19, whose
first layers are the same); style image with its longest side at 256 px (the authors' code
default), so its shorter side at 256 px for a square style; 40 px reflection padding; style
weight 5 (the authors' code: content 1, style 5).

How configs/default.py differs, and why (docs/experiments/recipe.md): it keeps the Gatys layers
relu1_1..relu5_1, trains at lr 2e-3 with style weight 5 of the auto-balanced terms, and ties
the padding to train.image_size. Loss weights do not carry over exactly
between VGG conventions (Caffe VGG-16 there, torchvision VGG19 here): both configs balance the
terms on the first batch, and style 5 means the style term starts at 5x the content term.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.style_size = 256
    config.loss.style_layers = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    config.loss.content_layer = "relu2_2"
    config.loss.style_weight = 5.0
    config.train.lr = 1e-3
    config.train.pad = 40
    return config
