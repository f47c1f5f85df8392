"""i2e_neuro.allocator: the malloc settings every command applies."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_keep_freed_memory_applies_on_glibc():
    """Both limits are accepted by glibc (``mallopt`` returns 1), in a fresh process so that
    this test process's allocator is left as it was."""
    code = "from i2e_neuro.allocator import keep_freed_memory as k; print(k())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_every_command_applies_it(monkeypatch):
    """``cli._run`` calls it before the command runs."""
    from i2e_neuro import cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("malloc"))

    class Command:
        @staticmethod
        def run(args):
            calls.append("run")
            return 0

    assert cli._run(Command, None) == 0
    assert calls == ["malloc", "run"]
