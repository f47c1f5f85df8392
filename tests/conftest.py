"""Fixtures shared across the test packages.

``digits_run``: the tiny digits QAT model, trained once per test session (3 float epochs + 1 QAT
epoch on 384 digits, batch 16). The pipeline, learning, energy and sim-to-real tests all start
from this one checkpoint instead of training their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: The training settings of ``digits_run`` (``resolve_config`` keywords). Batch 16 gives 72
#: optimizer steps: enough for the run to clearly beat chance (tests/test_learning.py).
DIGITS_RUN = dict(epochs=3, qat_epochs=1, limit_train=384, limit_test=64, batch_size=16)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> tuple[Path, dict]:
    """``(run folder, train() result)`` of the session's tiny digits model (seed 0)."""
    from i2e_neuro.train import resolve_config, train

    out = tmp_path_factory.mktemp("digits-run")
    result = train(resolve_config(**DIGITS_RUN), out, progress=False)
    return out, result
