"""The shipped configs: they load, and default.py's scale-aware rules follow train.image_size."""

from __future__ import annotations

import importlib

import pytest

from configs import default


@pytest.mark.parametrize("name", ["default", "johnson2016", "photos_mosaic", "smoke"])
def test_every_config_loads_and_serialises(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    assert config.train.pad >= 0 and config.style_size > 0
    assert '"image_size"' in config.to_json()  # what train.py writes to WORKDIR/config.json


def test_pad_and_style_size_follow_the_image_size():
    config = default.get_config()
    assert (config.train.image_size, config.train.pad, config.style_size) == (256, 40, 512)
    config.train.image_size = 128  # what --config.train.image_size=128 does
    assert (config.train.pad, config.style_size) == (20, 256)


def test_setting_one_rule_leaves_the_others_linked():
    config = default.get_config()
    config.style_size = 300
    config.train.image_size = 128
    assert (config.style_size, config.train.pad, config.train.image_size) == (300, 20, 128)
