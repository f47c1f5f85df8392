"""The one builder of Lava run configurations: CPU simulation of Loihi 2's fixed-point
arithmetic (with or without the fast process models) or Loihi 2 hardware.

Lava is imported when a configuration is built, not when this module is imported.
"""

from __future__ import annotations

BACKENDS = ("cpu", "loihi2")


class BackendUnavailable(RuntimeError):
    """The requested back end cannot run here (e.g. Loihi 2 without the Loihi extension)."""


def loihi_extension_missing() -> str | None:
    """Why Loihi 2 hardware cannot be used here (None when lava-loihi is installed)."""
    from lava.utils import loihi

    if loihi.is_installed():
        return None
    return (
        "--backend loihi2 needs Intel's Loihi extension for Lava (lava-loihi), which is not installed. "
        "It is distributed to members of the Intel Neuromorphic Research Community (INRC): join at "
        "https://intel-ncl.atlassian.net/wiki/spaces/INRC, install lava-loihi in this environment and "
        "run on an INRC Loihi 2 system (loihi.use_slurm_host()). Use --backend cpu to simulate here."
    )


def run_config(
    backend: str = "cpu",
    fast: bool = True,
    select_tag: str = "fixed_pt",
    exception_proc_model_map: dict | None = None,
    **kwargs,
):
    """A Lava run configuration for ``backend``.

    ``"cpu"``: ``Loihi2SimCfg(select_tag)``; with ``fast`` the stock ``Conv``, ``LIF`` and
    ``LIFReset`` processes run with the bit-exact models of :mod:`export.fast_models`.
    ``exception_proc_model_map`` entries are added on top of (and win over) those; other
    keyword arguments go to ``Loihi2SimCfg``. ``"loihi2"``: ``Loihi2HwCfg`` on an INRC
    system; raises :class:`BackendUnavailable` (saying what is missing) without lava-loihi.
    """
    if backend == "cpu":
        from lava.magma.core.run_configs import Loihi2SimCfg

        from export.processes import (
            InputAdapter,
            OutputAdapter,
            PyInputAdapterModel,
            PyOutputAdapterModel,
        )

        # The host <-> chip adapters pass spikes on in the same step on the CPU.
        mapping = {InputAdapter: PyInputAdapterModel, OutputAdapter: PyOutputAdapterModel}
        if fast:
            from export.fast_models import fast_exception_map

            mapping.update(fast_exception_map())
        else:  # Lava's stock models, the stock Conv completed with Loihi's weight arithmetic
            from lava.proc.conv.process import Conv

            from export.fast_models import LoihiConvModelReference

            mapping[Conv] = LoihiConvModelReference
        mapping.update(exception_proc_model_map or {})
        if mapping:
            kwargs["exception_proc_model_map"] = mapping
        return Loihi2SimCfg(select_tag=select_tag, **kwargs)
    if backend == "loihi2":
        from lava.utils import loihi

        missing = loihi_extension_missing()
        if missing:
            raise BackendUnavailable(missing)
        from lava.magma.core.run_configs import Loihi2HwCfg

        from export.processes import loihi_adapter_models

        # The adapters become lava-loihi's PyToNxAdapter / NxToPyAdapter (sub-process models,
        # as in lava-dl's netx tutorials: select_sub_proc_model=True).
        mapping = loihi_adapter_models()
        mapping.update(exception_proc_model_map or {})
        loihi.use_slurm_host()
        return Loihi2HwCfg(select_sub_proc_model=True, exception_proc_model_map=mapping, **kwargs)
    raise ValueError(f"backend={backend!r}: must be one of {BACKENDS}")
