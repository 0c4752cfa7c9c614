"""The one command-line convention of every fnst_jax entry point.

Every tool (`train.py`, `stylize.py`, `python -m fnst_jax.evaluate`, `... .gatys`,
`... .bench`) parses its flags with absl on a fresh `FlagValues` inside `main(argv)`, so
tests can call `main` in-process with any argv. A flag may be written with hyphens or with
underscores (`--batch-size` and `--batch_size` are the same flag): both spellings were
documented in earlier versions and both keep working.

`run_command(define_flags, body, argv, usage)` is the whole opening of a `main(argv)`: argv
is sys.argv-style (program name first, as absl's `app.run` passes it).

Exit statuses: 0 done, 1 some inputs failed (the rest were processed), 2 the command could
not run (usage error or a `UserError` such as an unreadable model file), 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from absl import flags

from fnst_jax.errors import UsageError, UserError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

HELP_FLAGS = ("-h", "--help", "-help", "--helpfull", "--helpshort")


def _attribute_flags_to_caller() -> None:
    """Flags this module defines for a caller (aliases, layer lists) belong to that caller in
    --help: absl skips this module when it looks for the module defining a flag. Declared
    when flags are defined, so importing this module changes no absl state."""
    flags.disclaim_key_flags()


def accept_both_spellings(flag_values: flags.FlagValues) -> None:
    """Let every multi-word flag be written with hyphens as well as underscores."""
    _attribute_flags_to_caller()
    for name in list(flag_values):
        for other in (name.replace("_", "-"), name.replace("-", "_")):
            if other != name and other not in flag_values:
                flags.DEFINE_alias(other, name, flag_values=flag_values)


def parse(flag_values: flags.FlagValues, argv: Sequence[str], usage: str) -> list[str] | None:
    """Parse argv into `flag_values`; returns the positional arguments, or None when help
    was asked for (it is printed). Raises UsageError for flags absl refuses."""
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        help_text = flag_values.get_help(include_special_flags=False)
        print(usage.rstrip() + "\n\noptions:\n" + _without_aliases(help_text), file=sys.stdout)
        return None
    try:
        return flag_values(list(argv))[1:]
    except flags.Error as e:
        raise UsageError(f"{e}\n(see --help)") from None


def _without_aliases(help_text: str) -> str:
    """absl lists each alias as its own flag (under this module's name); the help reads
    better without them."""
    lines, skip = [], False
    for line in help_text.splitlines():
        if line.startswith("  --"):
            skip = "Alias for --" in line
        elif not line.startswith(" "):
            skip = False
        if not skip:
            lines.append(line)
    # Drop module headers left with no flag under them.
    kept = [
        line
        for i, line in enumerate(lines)
        if line.startswith(" ") or (i + 1 < len(lines) and lines[i + 1].startswith(" "))
    ]
    return "\n".join(kept)


def define_vgg_layers(
    name: str, default: Sequence[str] | None, help_text: str, flag_values: flags.FlagValues
) -> None:
    """A comma-separated list of VGG19 taps (`relu1_1,relu2_1`), checked by name."""
    from fnst_jax.vgg import RELU_LAYERS  # here: stylize.py with an .onnx model loads no JAX

    _attribute_flags_to_caller()
    flags.DEFINE_list(name, default, help_text, flag_values=flag_values)
    flags.register_validator(
        name,
        lambda layers: layers is None or (len(layers) > 0 and set(layers) <= set(RELU_LAYERS)),
        message=f"expected one or more VGG19 layers among {', '.join(RELU_LAYERS)}",
        flag_values=flag_values,
    )


def run_command(
    define_flags: Callable[[flags.FlagValues], None],
    body: Callable[[flags.FlagValues, list[str]], int],
    argv: Sequence[str],
    usage: str,
    stream: TextIO | None = None,
) -> int:
    """Define the flags on a fresh FlagValues, parse argv (program name first), and run
    `body(flag_values, positional_arguments)` under `run`; --help prints and exits 0."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    accept_both_spellings(flag_values)

    def parse_and_run() -> int:
        positional = parse(flag_values, argv, usage)
        return EXIT_OK if positional is None else body(flag_values, positional)

    return run(parse_and_run, stream)


def require(flag_values: flags.FlagValues, *names: str) -> None:
    """UsageError naming the first of `names` that was not given."""
    for name in names:
        if flag_values[name].value in (None, "", []):
            raise UsageError(f"--{name} is required (see --help)")


def run(body: Callable[[], int], stream: TextIO | None = None) -> int:
    """Run an entry point's body: a UserError becomes one `error:` line and exit 2,
    Ctrl-C exit 130; any other exception is a bug and propagates with its traceback."""
    stream = stream if stream is not None else sys.stderr
    try:
        return body()
    except UserError as e:
        print(f"error: {e}", file=stream)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=stream)
        return EXIT_INTERRUPTED
