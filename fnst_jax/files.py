"""Writing files safely: every file fnst_jax writes goes through `write_atomic`.

The content is written to a temporary file in the destination folder (same file system, so
the rename is atomic) and renamed onto the final name only when writing succeeded. A crash or
Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run `write(temporary_path)` and rename the result onto `path` only if it succeeded.

    The temporary file keeps the final extension (tools like ffmpeg pick the container from
    it). On any exception, Ctrl-C included, it is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace `path` with `data` (flushed to disk before the rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return write_atomic(path, write)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Atomically replace `path` with UTF-8 `text`."""
    return write_bytes_atomic(path, text.encode("utf-8"))
