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
    """The message of ``error`` with each of its ``params`` written as a ``--flag``.

    Only whole words are rewritten: a name inside a path (``runs/resume``, ``out/targs``,
    ``resume.pt``) or right after another parameter's name (its value: ``out resume``) is
    left as it is, so the paths shown are the real ones.
    """
    message = str(error)
    names = sorted(set(getattr(error, "params", ())), key=len, reverse=True)
    if not names:
        return message
    alternatives = "|".join(re.escape(n) for n in names)
    pattern = re.compile(rf"(?<![\w\-'/.\\~])({alternatives})(?![\w\-'/\\]|\.\w)")
    value_of = re.compile(rf"(?:^|[\s(])({alternatives}) $")

    def flag(m: re.Match) -> str:
        if value_of.search(message[: m.start()]):
            return m.group(1)  # the value of the parameter just named
        return "--" + m.group(1).replace("_", "-")

    return pattern.sub(flag, message)
