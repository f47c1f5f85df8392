"""Make lava-dl's CUDA neuron dynamics work on a machine with only the pip wheels.

lava-dl 0.6 JIT-compiles its CUDA kernels (``leaky_integrator.cu`` for the CUBA neurons, and
``shift.cu`` for axonal delays) with ``torch.utils.cpp_extension.load`` the first time a CUDA
tensor reaches them (``lava/lib/dl/slayer/neuron/dynamics/leaky_integrator.py``, class
``Accelerated``). That needs ``nvcc`` of torch's CUDA major version, a C++ compiler and
``ninja``. No pip wheel provides ``nvcc`` for CUDA 12: ``nvidia-cuda-nvcc-cu12`` (checked
12.1.105 to 12.9.86) ships ``ptxas``, ``nvvm`` and ``include/crt``, not the ``nvcc`` driver.

:func:`prepare_lava_dl_cuda` therefore decides once per process, before lava-dl's first CUDA
call:

- ``jit``: a CUDA toolkit is found (``CUDA_HOME``/``CUDA_PATH``, ``nvcc`` on ``PATH`` or
  ``/usr/local/cuda``, as torch looks for it) with ``nvcc`` of torch's CUDA major version, a C++
  compiler and ``ninja`` (the pip ``ninja`` that lava-dl depends on is put on ``PATH``); the
  kernels are built now, so that a build error shows here and not at the first batch.
- ``python``: otherwise, or when the build fails, lava-dl's own non-JIT implementation
  (``_LIDynamics``, ``_shift_group``/``_shift_individual``: the code its CPU path runs) is
  installed as the "accelerated" module, so CUDA tensors run through plain torch ops on the
  GPU. Same integer arithmetic as on the CPU; one warning says why.

``I2E_NEURO_LAVA_DL_CUDA=jit|python|auto`` (default ``auto``) forces a route.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

ENV = "I2E_NEURO_LAVA_DL_CUDA"
ROUTES = ("auto", "jit", "python")

_chosen: str | None = None


@dataclass
class Toolkit:
    """What lava-dl's JIT needs; ``problem`` is None when everything is there."""

    cuda_home: str | None
    nvcc: str | None
    nvcc_version: str | None
    ninja: str | None
    cxx: str | None
    problem: str | None


def nvcc_release(nvcc: str) -> str | None:
    """``"12.1"`` from ``nvcc --version`` (None when it cannot be run or parsed)."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out.stdout)
    return m.group(1) if m else None


def ensure_ninja_on_path() -> str | None:
    """Put the pip ``ninja`` package's binary on ``PATH`` (torch runs ``ninja`` from ``PATH``,
    which lacks the venv's ``bin`` when Python is started without activating the venv)."""
    found = shutil.which("ninja")
    if found:
        return found
    try:
        import ninja  # lava-dl depends on the pip package
    except ImportError:
        return None
    bin_dir = getattr(ninja, "BIN_DIR", None)
    if bin_dir and (Path(bin_dir) / "ninja").exists():
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
        return str(Path(bin_dir) / "ninja")
    return None


def find_toolkit(torch_cuda: str | None = "torch", cuda_home: str | None = "torch") -> Toolkit:
    """Look for the CUDA toolkit, compiler and ninja that ``cpp_extension.load`` needs.

    ``cuda_home``: by default what torch found at import (``cpp_extension.CUDA_HOME``);
    ``torch_cuda``: by default ``torch.version.cuda`` (None: torch without CUDA). torch refuses
    an ``nvcc`` of another major version than its own CUDA.
    """
    import torch
    from torch.utils import cpp_extension

    torch_cuda = torch.version.cuda if torch_cuda == "torch" else torch_cuda
    home = (cpp_extension.CUDA_HOME if cuda_home == "torch" else cuda_home) or None
    ninja = ensure_ninja_on_path()
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    nvcc = str(Path(home) / "bin" / "nvcc") if home else None
    if nvcc and not os.access(nvcc, os.X_OK):
        nvcc = None
    version = nvcc_release(nvcc) if nvcc else None
    problem = None
    if torch_cuda is None:
        problem = f"torch {torch.__version__} is built without CUDA"
    elif home is None:
        problem = (
            "no CUDA toolkit (CUDA_HOME, CUDA_PATH, nvcc on PATH, /usr/local/cuda); the pip "
            "wheels do not include nvcc"
        )
    elif nvcc is None:
        problem = f"CUDA_HOME={home} has no executable bin/nvcc"
    elif version is None:
        problem = f"{nvcc} --version did not report a release"
    elif version.split(".")[0] != torch_cuda.split(".")[0]:
        problem = f"nvcc {version} at {nvcc} does not match torch's CUDA {torch_cuda} (major)"
    elif ninja is None:
        problem = "ninja not found (pip install ninja)"
    elif cxx is None:
        problem = "no C++ compiler (c++ / $CXX) on PATH"
    return Toolkit(home, nvcc, version, ninja, cxx, problem)


def fix_arch_list() -> str | None:
    """Compile for this GPU: lava-dl's ``jitconfig`` pins ``TORCH_CUDA_ARCH_LIST='8.0'`` on every
    GPU of compute capability >= 8, and sm_80 code does not run on sm_90 (H100/H200) or newer."""
    import torch
    from lava.lib.dl.slayer import jitconfig

    major, minor = torch.cuda.get_device_capability()
    if major >= 9:
        jitconfig.TORCH_CUDA_ARCH_LIST = f"{major}.{minor}"
    return jitconfig.TORCH_CUDA_ARCH_LIST


class TorchLeakyIntegrator:
    """Stands in for lava-dl's JIT ``leaky_integrator`` module: its non-JIT autograd function."""

    @staticmethod
    def dynamics(input, decay, state, threshold, w_scale):
        from lava.lib.dl.slayer.neuron.dynamics.leaky_integrator import _LIDynamics

        return _LIDynamics.apply(input, decay, state, threshold, w_scale)


class TorchShift:
    """Stands in for lava-dl's JIT ``shift`` module: its non-JIT shift functions."""

    @staticmethod
    def shift(input, shift_val, sampling_time=1):
        mod = _shift_module()
        if hasattr(shift_val, "numel") and shift_val.numel() > 1:
            return mod._shift_individual(input, shift_val, sampling_time)
        return mod._shift_group(input, shift_val, sampling_time)


def _shift_module():
    """``lava.lib.dl.slayer.utils.time.shift`` the module (its package re-exports the function)."""
    import importlib

    return importlib.import_module("lava.lib.dl.slayer.utils.time.shift")


def install_python_dynamics() -> None:
    """Route lava-dl's CUDA calls through its non-JIT code (no compilation)."""
    from lava.lib.dl.slayer.neuron.dynamics import leaky_integrator

    leaky_integrator.Accelerated.module = TorchLeakyIntegrator()
    _shift_module().Accelerated.module = TorchShift()


def uninstall_python_dynamics() -> None:
    """Undo :func:`install_python_dynamics` (tests); the next CUDA call JIT-compiles again."""
    global _chosen
    from lava.lib.dl.slayer.neuron.dynamics import leaky_integrator

    shift = _shift_module()
    if isinstance(leaky_integrator.Accelerated.module, TorchLeakyIntegrator):
        leaky_integrator.Accelerated.module = None
    if isinstance(shift.Accelerated.module, TorchShift):
        shift.Accelerated.module = None
    _chosen = None


def _build_jit() -> None:
    """Build (or load from torch's extension cache) the kernels the CUBA neurons use."""
    from lava.lib.dl.slayer.neuron.dynamics import leaky_integrator

    leaky_integrator.Accelerated.leaky_integrator  # noqa: B018 - the property compiles


def prepare_lava_dl_cuda(device=None, route: str | None = None) -> str:
    """Choose how lava-dl runs CUDA tensors (``"jit"``, ``"python"``), once per process.

    ``device``: a CUDA device does the work; anything else returns ``"cpu"``. ``route``
    overrides ``$I2E_NEURO_LAVA_DL_CUDA``. Warns once when falling back to ``"python"``.
    """
    global _chosen
    import torch

    if device is not None and torch.device(device).type != "cuda":
        return "cpu"
    route = (route or os.environ.get(ENV) or "auto").lower()
    if route not in ROUTES:
        raise ValueError(f"{ENV}={route!r}: must be one of {ROUTES}")
    if _chosen is not None:
        return _chosen
    if route == "python":
        install_python_dynamics()
        _chosen = "python"
        return _chosen
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available; lava-dl's CUDA dynamics cannot be prepared")
    fix_arch_list()
    tk = find_toolkit()
    reason = tk.problem
    if reason is None:
        try:
            _build_jit()
            _chosen = "jit"
            return _chosen
        except Exception as e:  # noqa: BLE001 - any build failure leads to the same fallback
            reason = f"building leaky_integrator.cu failed ({type(e).__name__}: {str(e)[:300]})"
    if route == "jit":
        raise RuntimeError(f"{ENV}=jit: lava-dl's CUDA kernels cannot be used: {reason}")
    install_python_dynamics()
    warnings.warn(
        f"lava-dl CUDA kernels not compiled: {reason}. Using lava-dl's non-JIT torch implementation "
        f"on the GPU instead (same integer arithmetic as on the CPU; slower for long sequences). "
        f"Install a CUDA {torch.version.cuda} toolkit (nvcc) for the JIT kernels, or set {ENV}=python "
        f"to silence this.",
        RuntimeWarning,
        stacklevel=2,
    )
    _chosen = "python"
    return _chosen
