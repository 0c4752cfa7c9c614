"""Choosing the style(s) of a model for stylize.py and the exporter (`stylize.styles`)."""

from __future__ import annotations

import pytest

from fnst_jax.errors import UsageError
from fnst_jax.stylize.styles import StyleChoice, choose_one, choose_styles, parse_mix

NAMES = ["candy", "mosaic", "udnie"]


def test_one_style_model_needs_no_choice():
    assert choose_styles(["candy"], None, None) == [StyleChoice("", (1.0,))]
    assert choose_styles(["candy"], "all", None) == [StyleChoice("", (1.0,))]
    assert choose_styles(["candy"], "candy", None) == [StyleChoice("", (1.0,))]
    with pytest.raises(UsageError, match="--style udnie: the model's styles are candy"):
        choose_styles(["candy"], "udnie", None)
    with pytest.raises(UsageError, match="nothing to mix"):
        choose_styles(["candy"], None, "candy:1")


def test_multi_style_model_by_name_index_or_all():
    assert choose_styles(NAMES, "mosaic", None) == [StyleChoice("mosaic", (0.0, 1.0, 0.0))]
    assert choose_styles(NAMES, "Udnie", None) == [StyleChoice("udnie", (0.0, 0.0, 1.0))]
    assert choose_styles(NAMES, "0", None) == [StyleChoice("candy", (1.0, 0.0, 0.0))]
    assert [c.label for c in choose_styles(NAMES, "all", None)] == NAMES
    with pytest.raises(UsageError, match="has 3 styles.*candy, mosaic, udnie"):
        choose_styles(NAMES, None, None)
    with pytest.raises(UsageError, match="--style 3: .*index 0-2"):
        choose_styles(NAMES, "3", None)
    with pytest.raises(UsageError, match="not both"):
        choose_styles(NAMES, "candy", "candy:1")


def test_mix_is_normalised_and_labelled():
    assert parse_mix(NAMES, "candy:1,udnie:3") == StyleChoice("candy25-udnie75", (0.25, 0, 0.75))
    assert parse_mix(NAMES, "1:0.5, 1:0.5").weights == (0.0, 1.0, 0.0)  # repeats add up
    for text, message in [
        ("candy", "NAME:WEIGHT"),
        ("candy:x", "not a number"),
        ("candy:-1", ">= 0"),
        ("candy:0,mosaic:0", "sum to 0"),
        ("starry:1", "the model's styles are"),
    ]:
        with pytest.raises(UsageError, match=message):
            parse_mix(NAMES, text)


def test_choose_one_for_commands_that_take_one_style():
    assert choose_one(NAMES, "udnie", "--model-style") == 2
    assert choose_one(NAMES, "1", "--model-style") == 1
    with pytest.raises(UsageError, match="choose one with --model-style NAME.*index 0-2\\)"):
        choose_one(NAMES, None, "--model-style")
    with pytest.raises(UsageError, match="--model-style all: .*index 0-2\\)"):
        choose_one(NAMES, "all", "--model-style")
