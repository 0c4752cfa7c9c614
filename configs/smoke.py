"""Seconds on CPU: random VGG, generated images, 32 px. Used by the tests.

    python train.py --config configs/smoke.py --workdir /tmp/smoke \
        --config.style_image=path/to/style.jpg
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.style_size = 32
    config.data.source = "synthetic:24"
    config.data.validation_fraction = 0.25
    config.vgg.weights = "random"
    config.loss.style_layers = ("relu1_1", "relu2_1")
    config.train.steps = 6
    config.train.batch_size = 2
    config.train.image_size = 32
    config.train.pad = 4
    config.log_every = 2
    config.checkpoint_every = 3
    config.keep_checkpoints = 2
    config.sample_every = 3
    config.eval_every = 3
    config.num_validation_images = 2
    config.validation_size = None  # tests that need it set it (test_train's two-step run)
    return config
