"""The QAT neuron's fast CUBA dynamics (``qat._cuba_voltage``: exact integers in float32 /
float64, one contiguous time slice per step) equal the int64 step-by-step reference
(``qat._cuba_voltage_int64``) bit for bit, peaks included, at the 24-bit limits too; its
backward is the step-by-step recursion. The reference itself is checked against Lava's
``PyLifModelBitAcc`` in ``test_state_range.py``."""

from __future__ import annotations

import pytest
import torch

from i2e_neuro.models import qat


def _reference(syn: torch.Tensor, bias: torch.Tensor, vth: int, dv: int, peaks: dict):
    """``_ChipCuba``'s forward as it was: int64 throughout."""
    a_in = torch.round(syn.double() * 64).long()
    b = torch.round(bias.double() * 4096).long()[..., 0]
    v = qat._cuba_voltage_int64(a_in << 6, b, vth, dv, peaks)
    return v.to(syn.dtype) / 4096


@pytest.mark.parametrize("dv", [2048, 0, 4096, 1000, 3000, 1024, 4095])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1.0, 300.0, 2.0**12, 2.0**20])
def test_fast_voltage_equals_the_int64_reference(dv: int, dtype, scale: float):
    """Any decay, both float types, inputs from quiet to far past the wrap of ``u`` (scale
    2**12 and 2**20 weight units: ``u`` past 2**23, ``v`` clipped) and down to the clip."""
    g = torch.Generator().manual_seed(dv + int(scale))
    syn = (torch.randn(3, 5, 4, 4, 11, generator=g) * scale).to(dtype)
    syn[0] = -abs(syn[0])  # a sample driven to the negative clip
    bias = torch.randint(-4096, 513, (1, 5, 1, 1, 1), generator=g).to(dtype) / 64
    p_fast, p_ref = {}, {}
    fast = qat._ChipCuba.apply(syn, bias, 1024 << 6, dv, p_fast)
    ref = _reference(syn, bias, 1024 << 6, dv, p_ref)
    assert fast.dtype == ref.dtype and fast.is_contiguous()
    assert torch.equal(fast, ref)
    assert p_fast == p_ref
    if scale >= 2**12:
        assert p_ref["u"] >= qat.STATE_LIMIT  # the wrap was exercised


def test_cuba_integer_is_the_reference():
    """The public int64 function: ``u`` wrapped, ``v`` before the reset, as before."""
    g = torch.Generator().manual_seed(1)
    a_in = torch.randint(-(2**18), 2**18, (4, 6, 13), generator=g)
    bias = torch.randint(-(2**18), 2**15, (1, 6), generator=g)
    peaks, p_ref = {}, {}
    u, v = qat.cuba_integer(a_in, bias, 1024 << 6, 2048, peaks)
    assert u.dtype == v.dtype == torch.int64
    assert torch.equal(u, qat.wrap_current(a_in << 6))
    assert torch.equal(v, qat._cuba_voltage_int64(a_in << 6, bias, 1024 << 6, 2048, p_ref))
    assert peaks == p_ref and "overflow_step" in peaks


def test_out_of_bounds_input_falls_back_to_int64():
    """Inputs whose integers a float cannot hold (and NaN) take the int64 reference."""
    raw_u = torch.tensor([[[2**50, 0, -(2**50)]]], dtype=torch.int64)
    assert qat._cuba_voltage(raw_u, torch.zeros(1, 1, dtype=torch.int64), 1, 2048, None) is None
    u, v = qat.cuba_integer(raw_u >> 6, torch.zeros(1, 1, dtype=torch.int64), 1 << 16, 2048)
    assert torch.equal(
        v, qat._cuba_voltage_int64(raw_u, torch.zeros(1, 1, dtype=torch.int64), 1 << 16, 2048, None)
    )
    nan = torch.tensor([[[float("nan"), 1.0]]])
    assert qat._cuba_voltage(nan, torch.zeros(1, 1, dtype=torch.int64), 1, 2048, None) is None


def test_backward_is_the_step_by_step_recursion():
    g = torch.Generator().manual_seed(2)
    syn = (torch.randn(2, 3, 4, 9, generator=g) * 40).requires_grad_()
    bias = (torch.randint(-200, 200, (1, 3, 1, 1), generator=g).float() / 64).requires_grad_()
    v = qat._ChipCuba.apply(syn, bias, 1024 << 6, 2048, None)
    grad_v = torch.randn(v.shape, generator=g)
    v.backward(grad_v)
    expected = torch.empty_like(grad_v)
    expected[..., -1] = grad_v[..., -1]
    for n in range(grad_v.shape[-1] - 2, -1, -1):
        expected[..., n] = 0.5 * expected[..., n + 1] + grad_v[..., n]
    assert torch.equal(syn.grad, expected)
    assert torch.equal(bias.grad, expected.sum_to_size(bias.shape))
