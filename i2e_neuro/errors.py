"""Errors that name the parameter they are about, and their command-line wording.

Library code raises :class:`ParameterError` (or a subclass) whose message names parameters by
their Python names (``lr``, ``qat_epochs``) and lists them in ``params``; the commands show the
same message with those names as flags (``--lr``, ``--qat-epochs``) via :func:`flag_wording`.
"""

from __future__ import annotations

import re


class ParameterError(Exception):
    """Bad input; ``params`` are the parameter names the message mentions."""

    def __init__(self, message: str, *params: str) -> None:
        super().__init__(message)
        self.params = tuple(params)


def flag_wording(error: BaseException) -> str:
    """The message of ``error`` with each of its ``params`` written as a ``--flag``."""
    message = str(error)
    for name in getattr(error, "params", ()):
        flag = "--" + name.replace("_", "-")
        message = re.sub(rf"(?<![\w\-']){re.escape(name)}(?![\w\-'])", flag, message)
    return message
