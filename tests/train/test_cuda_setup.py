"""lava-dl's CUDA route (i2e_neuro.train.cuda_setup), as far as a machine without a GPU allows."""

from __future__ import annotations

import os
import re
import shutil
import stat

import pytest
import torch
from lava.lib.dl.slayer.neuron.dynamics import leaky_integrator

from i2e_neuro.train import cuda_setup

shift = cuda_setup._shift_module()


@pytest.fixture
def python_dynamics():
    cuda_setup.install_python_dynamics()
    yield
    cuda_setup.uninstall_python_dynamics()


def test_python_dynamics_equal_lava_dl_cpu_path(python_dynamics):
    """The stand-in, called as lava-dl's CUDA branch calls it, equals lava-dl's CPU path
    (forward and backward), on the module lava-dl dispatches to."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 5, 16, generator=g) * 0.7).requires_grad_(True)
    decay = torch.full((5,), 1024.0)
    state = torch.zeros(2, 5)
    ref = leaky_integrator.dynamics(x, decay, state, 64, threshold=1.0)
    ref.sum().backward()
    ref_grad = x.grad.clone()
    x.grad = None
    module = leaky_integrator.Accelerated.leaky_integrator  # what the CUDA branch calls
    assert isinstance(module, cuda_setup.TorchLeakyIntegrator)
    out = module.dynamics(x.contiguous(), decay.contiguous(), state.contiguous(), 1.0, 64)
    out.sum().backward()
    assert torch.equal(out, ref) and torch.equal(x.grad, ref_grad)
    assert (ref != 0).any()


def test_python_shift_equals_lava_dl_cpu_path(python_dynamics):
    x = torch.randn(2, 3, 10, generator=torch.Generator().manual_seed(1))
    module = shift.Accelerated.shift
    assert torch.equal(module.shift(x, 2, 1), shift.shift(x, 2))
    assert not torch.equal(module.shift(x, 2, 1), x)
    per_neuron = torch.tensor([0.0, 1.0, 3.0])
    assert torch.equal(module.shift(x, per_neuron, 1), shift._shift_individual(x, per_neuron, 1))


def test_uninstall_restores_jit_dispatch(python_dynamics):
    cuda_setup.uninstall_python_dynamics()
    assert leaky_integrator.Accelerated.module is None and shift.Accelerated.module is None


def _fake_nvcc(tmp_path, release: str) -> str:
    """A CUDA_HOME whose bin/nvcc prints a release line as nvcc does."""
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text(
        "#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
        f"echo 'Cuda compilation tools, release {release}, V{release}.105'\n"
    )
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IXUSR)
    return str(tmp_path)


def test_find_toolkit_names_the_missing_part(tmp_path):
    assert "built without CUDA" in cuda_setup.find_toolkit(torch_cuda=None, cuda_home="").problem
    empty = tmp_path / "empty"
    empty.mkdir()
    tk = cuda_setup.find_toolkit(torch_cuda="12.1", cuda_home=str(empty))
    assert tk.nvcc is None and "no executable bin/nvcc" in tk.problem
    home = _fake_nvcc(tmp_path / "cuda11", "11.8")
    tk = cuda_setup.find_toolkit(torch_cuda="12.1", cuda_home=home)
    assert tk.nvcc_version == "11.8" and "does not match torch's CUDA 12.1" in tk.problem


def test_find_toolkit_accepts_matching_major(tmp_path):
    home = _fake_nvcc(tmp_path, "12.4")
    tk = cuda_setup.find_toolkit(torch_cuda="12.1", cuda_home=home)
    assert tk.nvcc_version == "12.4" and tk.nvcc == os.path.join(home, "bin", "nvcc")
    if tk.cxx and tk.ninja:
        assert tk.problem is None
    else:
        assert "ninja" in tk.problem or "C++" in tk.problem


def test_pip_ninja_put_on_path(monkeypatch):
    """torch runs `ninja` from PATH; a venv used without activation lacks it there."""
    import ninja

    monkeypatch.setenv("PATH", "/nonexistent")
    found = cuda_setup.ensure_ninja_on_path()
    assert found == os.path.join(ninja.BIN_DIR, "ninja")
    assert os.environ["PATH"].split(os.pathsep)[0] == ninja.BIN_DIR


def test_prepare_routes(monkeypatch):
    assert cuda_setup.prepare_lava_dl_cuda("cpu") == "cpu"
    monkeypatch.setenv(cuda_setup.ENV, "fast")
    with pytest.raises(ValueError, match="I2E_NEURO_LAVA_DL_CUDA"):
        cuda_setup.prepare_lava_dl_cuda()
    monkeypatch.setenv(cuda_setup.ENV, "python")
    try:
        assert cuda_setup.prepare_lava_dl_cuda() == "python"
        assert isinstance(leaky_integrator.Accelerated.module, cuda_setup.TorchLeakyIntegrator)
    finally:
        cuda_setup.uninstall_python_dynamics()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_prepare_without_cuda_says_so(monkeypatch):
    monkeypatch.delenv(cuda_setup.ENV, raising=False)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        cuda_setup.prepare_lava_dl_cuda()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on this machine")
def test_find_toolkit_on_this_machines_nvcc():
    """A real toolkit: its release is read, and only torch's CUDA major version is accepted
    (a CUDA 13 nvcc beside torch 2.3's CUDA 12.1 must lead to the torch path)."""
    nvcc = shutil.which("nvcc")
    home = os.path.dirname(os.path.dirname(nvcc))
    release = cuda_setup.nvcc_release(nvcc)
    assert release and re.fullmatch(r"\d+\.\d+", release)
    tk = cuda_setup.find_toolkit(torch_cuda="12.1", cuda_home=home)
    assert tk.nvcc_version == release
    if release.split(".")[0] != "12":
        assert "does not match torch's CUDA 12.1" in tk.problem
