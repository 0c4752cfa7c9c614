"""The offline quick start: a real style model from ../shared/data, on CPU.

    python train.py --config configs/photos_mosaic.py --workdir runs/mosaic

68 natural photos (6 held out for validation: those whose name hashes below 8%), the real VGG19
conv1_1..conv3_4 weights (Keras release, caffe preprocessing), mosaic.jpg, 128 px crops,
batch 4, 400 steps. The deeper VGG layers are not in that file, so style layers stop at
relu3_1. Everything else is default.py's recipe at 128 px (lr 2e-3, style weight 5, the style
at 256 px, and by its rule a 20 px pad). Timings and figures: docs/experiments/quickstart.md.
"""

import ml_collections

from configs import default

SHARED = "../shared/data"


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.style_image = f"{SHARED}/styles/mosaic.jpg"
    config.data.source = f"folder:{SHARED}/photos"
    config.data.validation_fraction = 0.08
    config.data.crop = "random"
    config.vgg.weights = f"{SHARED}/vgg19_conv1_1-conv3_4_keras.npz"
    config.loss.style_layers = ("relu1_1", "relu2_1", "relu3_1")
    config.train.steps = 400
    config.train.image_size = 128
    config.log_every = 20
    config.checkpoint_every = 100
    config.sample_every = 100
    config.eval_every = 50
    config.num_validation_images = 4
    return config
