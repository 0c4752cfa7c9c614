"""Which style(s) of a model `stylize.py` uses: `--style NAME|INDEX|all` and `--style-mix`.

A multi-style model (conditional instance norm, `transformer_net`) stylizes in one style or
one mix of its styles at a time. `choose_styles(names, style, mix)` turns the two flags into
the list of `StyleChoice`s to run (one, or every style for `--style all`); each choice's
`label` goes into the output names so that outputs of different styles do not collide; the
engines turn a choice's weights into the model's style input (`model_file.style_weights`).
No JAX.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from fnst_jax.errors import UsageError

ALL = "all"


@dataclasses.dataclass(frozen=True)
class StyleChoice:
    """One style or mix: its weight per style (summing to 1) and the label its outputs carry
    ("" for the only style of a one-style model: outputs are named as before)."""

    label: str
    weights: tuple[float, ...]


def _one_hot(count: int, index: int) -> tuple[float, ...]:
    return tuple(1.0 if i == index else 0.0 for i in range(count))


def _describe(names: Sequence[str], with_all: bool = True) -> str:
    alternatives = f"an index 0-{len(names) - 1}" + (f", or {ALL}" if with_all else "")
    return f"{', '.join(names)} (or {alternatives})"


def _index(names: Sequence[str], given: str, flag: str, with_all: bool = True) -> int:
    """A style by name (exact, then case-insensitive) or by index."""
    if given in names:
        return list(names).index(given)
    folded = [name.lower() for name in names]
    if given.lower() in folded:
        return folded.index(given.lower())
    if given.isdigit() and int(given) < len(names):
        return int(given)
    raise UsageError(f"{flag} {given}: the model's styles are {_describe(names, with_all)}")


def parse_mix(names: Sequence[str], text: str, flag: str = "--style-mix") -> StyleChoice:
    """`NAME:W,NAME:W,...` (names or indices, non-negative weights, normalised to sum to 1;
    a style named twice adds up) -> a StyleChoice labelled like `candy25-mosaic75`. `flag`:
    what the messages call the text (the option or query parameter it came from)."""
    weights = [0.0] * len(names)
    for part in text.split(","):
        name, sep, weight = part.strip().rpartition(":")
        if not sep or not name:
            raise UsageError(
                f"{flag} {text}: expected NAME:WEIGHT pairs separated by commas, "
                f"e.g. {names[0]}:0.5,{names[-1]}:0.5"
            )
        try:
            value = float(weight)
        except ValueError:
            raise UsageError(f"{flag} {text}: {weight!r} is not a number") from None
        if not (value >= 0 and math.isfinite(value)):
            raise UsageError(f"{flag} {text}: weights must be >= 0, got {weight}")
        weights[_index(names, name.strip(), flag, with_all=False)] += value
    total = sum(weights)
    if total <= 0:
        raise UsageError(f"{flag} {text}: the weights sum to 0")
    normalised = tuple(w / total for w in weights)
    label = "-".join(
        f"{name}{round(100 * w)}" for name, w in zip(names, normalised, strict=True) if w > 0
    )
    return StyleChoice(label, normalised)


def choose_one(names: Sequence[str], given: str | None, flag: str, with_all: bool = False) -> int:
    """The index of one style of a multi-style model, by name or index, for commands that
    take one at a time (`evaluate --model-style`); `with_all`: the command also takes `all`
    (and handles it before asking), so the messages offer it."""
    if given is None:
        every = f" (or every one with {flag} {ALL})" if with_all else ""
        raise UsageError(
            f"the model has {len(names)} styles: choose one with {flag} NAME{every}; its "
            f"styles are {_describe(names, with_all)}"
        )
    return _index(names, given, flag, with_all)


def choose_styles(names: Sequence[str], style: str | None, mix: str | None) -> list[StyleChoice]:
    """The styles to run for `--style` and `--style-mix` (at most one of them) on a model
    whose styles are `names`, in the model's order. A one-style model needs neither; a
    multi-style model needs one (the error lists its styles)."""
    count = len(names)
    if style is not None and mix is not None:
        raise UsageError("give --style or --style-mix, not both")
    if mix is not None:
        if count == 1:
            raise UsageError(f"--style-mix: the model has one style ({names[0]}): nothing to mix")
        return [parse_mix(names, mix)]
    if style is None:
        if count > 1:
            raise UsageError(
                f"the model has {count} styles: choose one with --style NAME, every one with "
                f"--style {ALL}, or a mix with --style-mix NAME:W,NAME:W; its styles are "
                f"{_describe(names)}"
            )
        return [StyleChoice("", (1.0,))]
    if count == 1:
        if style != ALL:
            _index(names, style, "--style")  # a wrong name is still an error
        return [StyleChoice("", (1.0,))]
    if style == ALL:
        return [StyleChoice(name, _one_hot(count, i)) for i, name in enumerate(names)]
    index = _index(names, style, "--style")
    return [StyleChoice(names[index], _one_hot(count, index))]
