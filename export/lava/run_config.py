"""The one builder of Lava run configurations: CPU simulation of Loihi 2's fixed-point
arithmetic (with or without the fast process models) or Loihi 2 hardware."""

from __future__ import annotations

import typing as ty

from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg
from lava.proc.conv.process import Conv
from lava.proc.dense.process import Dense
from lava.proc.lif.process import LIF, LIFReset
from lava.utils import loihi

from export.lava.conv import FastConvModelFixed, LoihiConvModelReference
from export.lava.dense import FastDenseModelBitAcc
from export.lava.lif import FastLifModelBitAcc, FastLifResetModelBitAcc
from export.lava.processes import (
    InputAdapter,
    OutputAdapter,
    PyInputAdapterModel,
    PyOutputAdapterModel,
    loihi_adapter_models,
)

#: Where a Lava graph runs: Lava's CPU simulator or Loihi 2 hardware (``--backend``).
RUN_BACKENDS = ("cpu", "loihi2")


class BackendUnavailable(RuntimeError):
    """The requested back end cannot run here (e.g. Loihi 2 without the Loihi extension)."""


def loihi_extension_missing() -> str | None:
    """Why Loihi 2 hardware cannot be used here (None when lava-loihi is installed)."""
    if loihi.is_installed():
        return None
    return (
        "--backend loihi2 needs Intel's Loihi extension for Lava (lava-loihi), which is not installed. "
        "It is distributed to members of the Intel Neuromorphic Research Community (INRC): join at "
        "https://intel-ncl.atlassian.net/wiki/spaces/INRC, install lava-loihi in this environment and "
        "run on an INRC Loihi 2 system (loihi.use_slurm_host()). Use --backend cpu to simulate here."
    )


def fast_exception_map() -> dict:
    """``{Process class: fast ProcessModel class}`` for ``exception_proc_model_map``."""
    return {
        Conv: FastConvModelFixed,
        Dense: FastDenseModelBitAcc,
        LIF: FastLifModelBitAcc,
        LIFReset: FastLifResetModelBitAcc,
    }


def run_config(
    backend: str = "cpu",
    fast: bool = True,
    select_tag: str = "fixed_pt",
    exception_proc_model_map: dict | None = None,
    **kwargs,
):
    """A Lava run configuration for ``backend``.

    ``"cpu"``: ``Loihi2SimCfg(select_tag)``; with ``fast`` the stock ``Conv``, ``Dense``, ``LIF``
    and ``LIFReset`` processes run with the bit-exact models of :mod:`export.lava.conv`,
    :mod:`export.lava.dense` and :mod:`export.lava.lif`. ``exception_proc_model_map`` entries are added on top of (and win
    over) those; other keyword arguments go to ``Loihi2SimCfg``. ``"loihi2"``: ``Loihi2HwCfg``
    on an INRC system; raises :class:`BackendUnavailable` (saying what is missing) without
    lava-loihi.
    """
    if backend == "cpu":
        # The host <-> chip adapters pass spikes on in the same step on the CPU.
        mapping = {InputAdapter: PyInputAdapterModel, OutputAdapter: PyOutputAdapterModel}
        if fast:
            mapping.update(fast_exception_map())
        else:  # Lava's stock models, the stock Conv completed with Loihi's weight arithmetic
            mapping[Conv] = LoihiConvModelReference
        mapping.update(exception_proc_model_map or {})
        return Loihi2SimCfg(select_tag=select_tag, exception_proc_model_map=mapping, **kwargs)
    if backend == "loihi2":
        missing = loihi_extension_missing()
        if missing:
            raise BackendUnavailable(missing)
        # The adapters become lava-loihi's PyToNxAdapter / NxToPyAdapter (sub-process models,
        # as in lava-dl's netx tutorials: select_sub_proc_model=True).
        mapping = loihi_adapter_models()
        mapping.update(exception_proc_model_map or {})
        loihi.use_slurm_host()
        return Loihi2HwCfg(select_sub_proc_model=True, exception_proc_model_map=mapping, **kwargs)
    raise ValueError(f"backend={backend!r}: must be one of {RUN_BACKENDS}")


def fast_run_config(
    select_tag: str = "fixed_pt", exception_proc_model_map: ty.Optional[dict] = None, **kwargs
) -> Loihi2SimCfg:
    """``Loihi2SimCfg`` that runs stock ``Conv``, ``Dense``, ``LIF`` and ``LIFReset`` processes
    with the fast models (``fast_exception_map``), everything else as usual: the CPU case of
    :func:`run_config`. The fast models are fixed-point models, so ``select_tag`` should stay
    ``"fixed_pt"`` (or another tag that picks the fixed-point models of the other processes).
    """
    return run_config(
        "cpu", True, select_tag, exception_proc_model_map=exception_proc_model_map, **kwargs
    )
