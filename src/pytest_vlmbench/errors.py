"""The user's mistakes, as opposed to ours: shown as one line naming the culprit.

An exception of these classes reaching pytest is reported as its message alone (no
traceback, no dump of the plugin's source: plugin.py does that). `UsageMistake`s are the
ones that can be known before the first request (a task parameter, a dataset
argument): the test fails with its one line and the session ends with pytest's usage
exit status (4), as an option or catalog error does.
"""

from __future__ import annotations


class UserInputError(Exception):
    """Bad input from the user (a file, an entry, a field, an option, a task): one line."""


class UsageMistake(UserInputError):
    """Bad input known before any request: one line, and the session exits with 4."""
