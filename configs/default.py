"""The real run: the default recipe on COCO 2014 train, VGG19 from torchvision.

    python train.py --config configs/default.py --workdir runs/starry \
        --config.style_image=path/to/starry-night.jpg

256x256 crops, batch 4, Adam lr 2e-3, 40k steps (two epochs of the ~83k COCO train
images), style layers relu1_1..relu5_1, content layer relu2_2, the article's 40 px
reflection padding at 256 px. The paper's own settings: configs/johnson2016.py.

Sizes (measured in docs/experiments/recipe.md):
  train.pad   = image_size * 5 // 32  (40 px at 256, 20 at 128): follows `train.image_size`
                unless set. A fixed 40 px around a 128 px crop makes 62% of what the network
                sees reflection.
  style_size  = 256, the style image's shorter side: the size of the images the model will
                stylize, not the crop size. The network's strokes have a fixed size in pixels,
                so a style image at 512 px teaches strokes twice as large as a 256 px photo
                should get: a 256 px / 600-step run measured 2.18x style reduction at 256 px
                with a 512 px style, 3.67x with a 256 px one.
                Train for larger outputs: set it to their size (None, in a config file: the
                image as it is).
Budget: lr 2e-3 rather than the paper's 1e-3 and style weight 5 rather than 10. The untrained
network outputs near-black images and grows its output range slowly; at 1e-3 a 300-step run
ended at 58% of the photos' luminance (dark blotches), at 2e-3 it did not; style weight 10
then traded too much content (content change 1.9), 5 kept it at 1.1.

VGG19 weights are downloaded from torchvision on first use and cached (offline:
--config.vgg.weights=/path/to/vgg19-dcbb9e9d.pth). COCO is prepared once by tensorflow-datasets
(docs/data.md). On one modern GPU this takes well under an hour.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # train.image_size, referenced by train.pad's rule: --config.train.image_size=N moves it
    # too; setting train.pad explicitly breaks that link.
    image_size = config_dict.FieldReference(256)
    config.style_image = ""  # required: the style to learn
    # Several styles in one model (conditional instance norm, docs/multistyle.md): a tuple
    # of paths, used instead of style_image when set. Each step trains one style on the
    # whole batch, every style once per len(style_images) steps.
    config.style_images = ()
    # Start from a trained model (.npz or workdir) and add style_images to its styles
    # (fnst_jax/base_model.py); with train.only_norm_params its styles stay bit-identical.
    config.init_from = ""
    config.style_size = 256  # the style image's shorter side, px (why: docstring)
    config.dtype = "float32"  # or "bfloat16": compute in bf16, params/norms/Grams/losses in f32
    config.parallel = "jit"  # "jit" (mesh + sharded batch) or "pmap"

    # Content images: fnst_jax.data reads every field of this block (docs/data.md).
    config.data = ml_collections.ConfigDict()
    config.data.source = "tfds:fnst_coco_images/2014"  # or folder:PATH, synthetic:N (docs/data.md)
    config.data.sample = 1.0  # fraction of the training images to use (deterministic by seed)
    config.data.train_split = "train"  # TFDS split for training
    config.data.validation_split = "validation"  # TFDS split; "" = hold out a fraction instead
    config.data.validation_fraction = 0.05  # held out of folder/synthetic sources, >= 1 image
    config.data.crop = "center"  # or "random" (deterministic per seed, epoch and index)
    config.data.worker_count = 0  # grain worker processes; 0 decodes in the training process
    config.data.read_threads = 2  # decoding threads in each process that decodes
    config.data.min_size = 64  # images whose shorter side is smaller are skipped
    config.data.max_pixels = 100_000_000  # larger ones (by header) are skipped: decompression bombs
    config.data.tfds_data_dir = config_dict.placeholder(str)  # None: ~/tensorflow_datasets
    config.data.manual_dir = config_dict.placeholder(str)  # TFDS manual_dir, e.g. the COCO zips
    config.data.download = False  # allow TFDS to download and prepare the dataset

    config.vgg = ml_collections.ConfigDict()
    config.vgg.weights = "torchvision"  # a file path, "torchvision" (download+cache) or "random"
    config.vgg.preprocessing = config_dict.placeholder(str)  # None: what the weights need

    config.loss = ml_collections.ConfigDict()
    config.loss.style_layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    config.loss.style_layer_weights = config_dict.placeholder(tuple)
    config.loss.content_layer = "relu2_2"
    # With auto_balance the weights are multipliers of the content/style and content/TV
    # ratios measured on the first batch (the article's "human-sized" weights): style 1.0
    # means style and content losses start equal.
    config.loss.auto_balance = True
    config.loss.content_weight = 1.0
    config.loss.style_weight = 5.0
    config.loss.tv_weight = 0.1
    # Several styles: one multiplier of style_weight per style (each style is balanced on
    # its own first-batch loss); () = all 1.
    config.loss.style_multipliers = ()
    # Video work: penalise output changes under small input changes (noise, sub-pixel shifts
    # and zooms; fnst_jax/stability.py). 0 = off (the paper's objective exactly); 1.0 is the
    # documented strength for video (docs/video.md). Costs one more network pass.
    config.loss.stability_weight = 0.0

    config.train = ml_collections.ConfigDict()
    config.train.steps = 40_000
    config.train.batch_size = 4  # global, over all devices and hosts
    config.train.image_size = image_size
    config.train.lr = 2e-3
    config.train.optimizer = "adam"  # or "sgd"
    config.train.seed = 0
    # Reflection padding (px) around the input, cropped after the net (rule: docstring).
    config.train.pad = image_size * 5 // 32
    # The last convolution's initial bias, in pixel values; None: torch's default init (the
    # untrained network outputs near-black images).
    config.train.output_bias = config_dict.placeholder(float)
    config.train.max_nonfinite = 10  # this many non-finite steps in a row stop the run
    config.train.only_norm_params = False  # with init_from: train the new styles' norms only

    config.log_every = 50
    config.checkpoint_every = 1000
    config.keep_checkpoints = 3
    config.sample_every = 1000
    config.eval_every = 1000
    config.num_validation_images = 8
    # Validation also scores the held-out images where users look: cropped square at this
    # size (px), stylized as stylize.py would (stroke scale auto), logged as at512/...;
    # None or 0: off. Costs one more network pass at that size per validation.
    config.validation_size = 512
    return config
