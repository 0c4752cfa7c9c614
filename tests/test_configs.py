"""The shipped configs: they load, and default.py's pad follows train.image_size."""

from __future__ import annotations

import importlib

import pytest

from configs import default


@pytest.mark.parametrize("name", ["default", "johnson2016", "photos_mosaic", "smoke"])
def test_every_config_loads_and_serialises(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    assert config.train.pad >= 0 and config.style_size > 0
    assert '"image_size"' in config.to_json()  # what train.py writes to WORKDIR/config.json


def test_pad_follows_the_image_size_and_style_size_does_not():
    config = default.get_config()
    assert (config.train.image_size, config.train.pad, config.style_size) == (256, 40, 256)
    config.train.image_size = 128  # what --config.train.image_size=128 does
    assert (config.train.pad, config.style_size) == (20, 256)


def test_setting_the_pad_breaks_only_its_link():
    config = default.get_config()
    config.train.pad = 8
    config.train.image_size = 128
    assert (config.train.pad, config.train.image_size, config.style_size) == (8, 128, 256)
