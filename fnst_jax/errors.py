"""The one base class for errors a user can fix (bad file, bad flag, bad config).

Entry points catch `UserError` only: they print its message on one line and exit with
status 2. Anything else is a bug in fnst_jax and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message names the file, flag or request and the fix."""


class UsageError(UserError, ValueError):
    """A command line that cannot be run as given (missing or conflicting flags)."""
