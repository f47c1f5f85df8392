"""Quantization-aware spiking network on lava-dl slayer parts, with Loihi's CUBA-LIF dynamics.

The model runs a :class:`~i2e_neuro.models.spec.NetSpec`: every connection is a slayer synapse
(``slayer.synapse.Conv`` / ``Dense``) followed by Loihi's one-step hop delay; every group is a
``slayer.neuron.cuba.Neuron`` (bit-accurate fixed-point CUBA dynamics) whose input is the sum
of its incoming connections plus a bias. Training goes in two phases:

1. ``float``: float weights, a BatchNorm per connection (the paper's conv -> BN);
2. ``folded``: :meth:`SpikingGraph.fold` folds every BN into its connection's weights and the
   target groups' biases, picks a per-connection exponent, and from then on the forward pass
   uses 8-bit mantissas ``m`` in [-128, 127] with ``w = m * 2**e / 64`` and biases on Loihi's
   1/64 grid (quantization-aware fine-tuning with straight-through rounding). Folded, the
   neurons compute Loihi's integer CUBA-LIF exactly, the 24-bit wrap of ``u`` and clip of ``v``
   included (:func:`cuba_integer`, slayer's surrogate gradient), and
   :meth:`SpikingGraph.project_state_range` keeps every neuron's reachable state inside 24 bits
   for any input (docs/EXACTNESS.md, "The 24-bit neuron states").

Units follow slayer's (``scale = 64``): a weight ``w`` adds ``w * 4096`` to Loihi's 24-bit
current, the threshold ``theta`` is ``vth_mant / 64``. Neuron parameters (see docs/DESIGN.md, "The
neuron"): ``du = 4096`` (the current is the synaptic input of this step, as SpikingJelly's
``decay_input=False`` LIF), ``dv = 2048`` (tau = 2), hard reset to 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from i2e_neuro.layouts import i2e_to_slayer
from i2e_neuro.models.deploy import (
    STATE_LIMIT,
    DeployRecord,
    NeuronParams,
    as_record,
    fan_in_sums,
    state_bounds,
)
from i2e_neuro.models.readout import spike_scores
from i2e_neuro.models.spec import INPUT, NetSpec
from i2e_neuro.quiet import import_lava_dl

slayer = import_lava_dl().slayer

WEIGHT_SCALE = 64  # slayer's neuron scale: float weight 1.0 == integer 64
CURRENT_DECAY = 4096  # u[t] = input[t]
VOLTAGE_DECAY = 2048  # v[t] = v[t-1] / 2 + u[t] + bias  (tau = 2)
MAX_EXPONENT = 7
BIAS_STEP = 1 / 64  # netx convention: bias_exp = 6, so a bias mantissa counts 1/64
STATE_SCALE = WEIGHT_SCALE * 64  # Loihi integer state per float unit (slayer's ``s_scale``)


@dataclass
class NeuronConfig:
    """Loihi CUBA-LIF parameters shared by all spiking groups.

    The mapping from the paper's SpikingJelly LIF: with ``du = 4096`` and ``dv = 2048`` the CUBA
    neuron fed ``threshold * x`` follows exactly SpikingJelly's ``LIFNode(tau=2,
    decay_input=False, v_threshold=1, v_reset=0)`` fed ``x`` (``H = V/2 + x``, hard reset to 0),
    except that Loihi fires only when the voltage is strictly above the threshold where
    SpikingJelly fires at ``H == v_threshold`` too (tested in ``tests/test_models.py``):

    ======================  ==============================
    ===========================================
    quantity                SpikingJelly (paper)            slayer ``cuba.Neuron`` / Loihi 2
    ======================  ==============================
    ===========================================
    input                   ``x``                           ``16 * x`` (``threshold * x``)
    current decay           (none: input used directly)     ``current_decay=1.0``, ``du = 4096``
    voltage decay           ``tau=2``, ``decay_input=False``  ``voltage_decay=0.5``, ``dv = 2048``
    threshold               ``v_threshold=1``               ``threshold=16``, ``vth_mant = 1024``
    state scale             float                           ``scale=64`` (24-bit state: v * 4096)
    reset                   ``v_reset=0`` (hard)            to 0 (hard)
    fires when              ``H >= 1``                      ``v > threshold`` (strict)
    ======================  ==============================
    ===========================================
    """

    threshold: float = 16.0  # vth_mant = 1024
    tau_grad: float = 0.01  # surrogate width 100 * tau_grad * threshold = 16 (one threshold)
    scale_grad: float = 20.0

    @property
    def vth_mant(self) -> int:
        return int(self.threshold * WEIGHT_SCALE)

    @property
    def max_bias(self) -> float:
        """Largest bias that keeps a neuron silent without input (v <= theta/2 + bias <= theta).

        This makes every sample's activity end ``depth`` steps after its last frame, so
        consecutive samples never interact on Lava / Loihi (see docs/DESIGN.md, "Timing").
        """
        return self.threshold * (4096 - VOLTAGE_DECAY) / 4096


def _key(name: str) -> str:
    return name.replace(".", "__")


def delay_one_step(x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """Loihi's synaptic hop: the output of step t reaches the target at step t + 1; with
    ``steps``, the result has that many steps (zeros after ``x``'s last one). One ``cat`` of
    the zeros and ``x``'s steps, where ``F.pad`` fills the whole output first and then copies
    into it (``[64, 32, 8, 8, 14]``: 0.44 against 6.4 ms here, outside a training step)."""
    steps = x.shape[-1] if steps is None else steps
    keep = max(0, min(x.shape[-1], steps - 1))
    parts = [x.new_zeros(*x.shape[:-1], 1), x[..., :keep]]
    if steps - 1 - keep > 0:
        parts.append(x.new_zeros(*x.shape[:-1], steps - 1 - keep))
    return torch.cat(parts, -1)


def wrap_current(u: torch.Tensor) -> torch.Tensor:
    """Lava's 24-bit wrap of the current ``u``, as ``AbstractPyLifModelFixed.subthr_dynamics``
    does it: ``2**24`` subtracted once above ``2**23``, added once at or below ``-2**23``."""
    wrapped = torch.where(u > STATE_LIMIT, u - 2 * STATE_LIMIT, u)
    return torch.where(wrapped <= -STATE_LIMIT, u + 2 * STATE_LIMIT, wrapped)


@torch.no_grad()
def cuba_integer(
    a_in: torch.Tensor, bias: torch.Tensor, vth: int, voltage_decay: int, peaks: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loihi 2's CUBA-LIF with ``du = 4096`` in integers, step for step as Lava's
    ``PyLifModelBitAcc``: ``(u, v)`` ``[..., T]`` int64, ``v`` before the spike reset.

    ``a_in`` ``[B, C, ..., T]``: the synaptic input (weight mantissa units, int64); ``bias``:
    the effective bias (state units), broadcastable to ``a_in[..., 0]``; ``vth``: the effective
    threshold (``vth_mant << 6``). Per step: ``u = wrap(a_in << 6)`` (:func:`wrap_current`),
    ``v = clip(v * (4096 - dv) / 4096 rounded toward 0 + u + bias, +-(2**23 - 1))``, a spike
    where ``v > vth`` and ``v = 0`` there. ``peaks`` (a dict) receives the largest ``|u|``
    and ``|v|`` before the wrap and the clip, so that an overflow shows as a value >= 2**23,
    and, where one happened, ``"overflow_step"``: the first step at which one did.

    Computed by :func:`_cuba_voltage` (exact integers in float32 / float64 where that is
    provably exact, else :func:`_cuba_voltage_int64`, the int64 reference).
    """
    raw_u = a_in << 6
    u = wrap_current(raw_u)
    bias = torch.as_tensor(bias, dtype=torch.int64, device=a_in.device)
    v = _cuba_voltage(raw_u, bias, vth, voltage_decay, peaks)
    if v is None:
        v = _cuba_voltage_int64(raw_u, bias, vth, voltage_decay, peaks)
    return u, v.to(torch.int64)


#: Integers below 2**24 (2**53) are exact in float32 (float64).
_F32_EXACT, _F64_EXACT = 1 << 24, 1 << 53


@torch.no_grad()
def _cuba_voltage(
    raw_u: torch.Tensor,
    bias: torch.Tensor,
    vth: int,
    voltage_decay: int,
    peaks: dict | None,
    dtype: torch.dtype | None = None,
    divisor: int = 1,
) -> torch.Tensor | None:
    """The voltage ``v`` (before the reset) of :func:`cuba_integer`, ``[..., T]``, from
    ``raw_u`` (``a_in << 6`` as integers, any dtype) and the integer ``bias``: the same integers
    as :func:`_cuba_voltage_int64`, computed in float32 or float64 (``dtype``: the float type
    of the result; default float32), one contiguous time slice per step; None when the bounds
    below do not hold (the caller then runs the int64 reference).  ``divisor``: a power of
    two the result is divided by (exactly), in the pass that lays it out.

    Why it is exact: every value is an integer, and each operation's exact result is an integer
    below the format's limit, so no rounding happens. The wrap subtracts or adds ``2**24``
    from integers below ``2**48`` (float32 keeps them: their spacing divides ``2**24``). The
    decay ``v * (4096 - dv) / 4096`` with ``|v| < 2**23`` needs 35 bits (float64), or 23 bits
    when ``4096 - dv`` is a power of two (a scaling: float32); ``trunc`` then rounds toward 0
    as the int64 ``sign * (|.| >> 12)`` does. The sum ``decayed + u + bias`` is bounded by
    ``max|u| + max|decayed| + max|bias|``, which picks float32 (below ``2**24``) or float64
    (below ``2**53``). The gradient does not pass through here (``_ChipCuba``).
    """
    keep, lim = 4096 - voltage_decay, STATE_LIMIT
    if not 0 <= keep <= 4096:
        return None
    wrapped = raw_u.to(torch.float64) if raw_u.dtype == torch.int64 else raw_u
    umax = _abs_max(wrapped)
    if not umax < 1 << 48:  # also NaN or inf: the int64 reference decides
        return None
    bmax = int(bias.abs().max()) if bias.numel() else 0
    if umax > lim:  # wrap_current, exact in this float type (see above)
        wrapped = wrap_current(wrapped)
        umax = _abs_max(wrapped)
    decayed_max = (lim - 1) * keep // 4096 + 1
    total = umax + decayed_max + bmax
    power_of_two = keep & (keep - 1) == 0
    if power_of_two and total < _F32_EXACT:
        work = torch.float32
    elif total < _F64_EXACT:
        work = torch.float64
    else:
        return None
    steps = raw_u.shape[-1]
    # [T, ...]: one contiguous slice per step; u + bias added once (exact, |.| <= total).
    state = torch.empty((steps, *raw_u.shape[:-1]), dtype=work, device=raw_u.device)
    state.copy_(wrapped.movedim(-1, 0))
    state += bias.to(work)
    v = torch.zeros(raw_u.shape[:-1], dtype=work, device=raw_u.device)
    spiked = torch.empty(raw_u.shape[:-1], dtype=torch.bool, device=raw_u.device)
    zero = torch.zeros((), dtype=work, device=raw_u.device)
    v_peaks = []
    for t in range(steps):
        if keep == 0:
            v.zero_()
        elif power_of_two and keep != 4096:
            # v * keep / 4096 rounded toward 0: a division by a power of two is exact, and
            # torch's rounding division is several times faster than ``trunc_`` on the CPU
            v.div_(4096 // keep, rounding_mode="trunc")
        elif keep != 4096:
            v.mul_(keep / 4096).div_(1.0, rounding_mode="trunc")  # the exact product, truncated
        out = state[t]
        out.add_(v)  # v before the clip: decayed + u + bias
        if peaks is not None and out.numel():
            v_peaks.append(out.abs().amax())
        out.clamp_(1 - lim, lim - 1)
        torch.where(torch.gt(out, vth, out=spiked), zero, out, out=v)  # the reset: 0 if spiked
    if peaks is not None and raw_u.numel():
        u_step = [int(x) for x in raw_u.abs().flatten(0, -2).amax(0).tolist()]  # per step
        v_step = [int(x) for x in torch.stack(v_peaks).tolist()]
        _record_peaks(peaks, u_step, v_step)
    result = torch.empty(raw_u.shape, dtype=dtype or torch.float32, device=raw_u.device)
    if divisor == 1:
        result.copy_(state.movedim(0, -1))
    else:  # a power of two: exact, in the same pass as the copy
        torch.div(state.movedim(0, -1), divisor, out=result)
    return result


def _abs_max(x: torch.Tensor) -> float:
    """``float(x.abs().max())`` (0 for an empty tensor) without the copy ``abs`` makes."""
    if not x.numel():
        return 0.0
    lo, hi = torch.aminmax(x)
    return max(-float(lo), float(hi))


def _record_peaks(peaks: dict, u_step: list[int], v_step: list[int]) -> None:
    lim = STATE_LIMIT
    peaks["u"] = max(peaks.get("u", 0), max(u_step))
    peaks["v"] = max(peaks.get("v", 0), max(v_step))
    over = [t for t, (a, b) in enumerate(zip(u_step, v_step)) if max(a, b) >= lim]
    if over:
        peaks["overflow_step"] = min(peaks.get("overflow_step", over[0]), over[0])


@torch.no_grad()
def _cuba_voltage_int64(
    raw_u: torch.Tensor, bias: torch.Tensor, vth: int, voltage_decay: int, peaks: dict | None
) -> torch.Tensor:
    """The voltage of :func:`cuba_integer` in int64, step for step: the reference that
    :func:`_cuba_voltage` equals, and what runs where its bounds do not hold."""
    u = wrap_current(raw_u)
    keep, lim = 4096 - voltage_decay, STATE_LIMIT
    v = torch.zeros(raw_u.shape[:-1], dtype=torch.int64, device=raw_u.device)
    out = torch.empty_like(u)
    v_peaks = []
    for t in range(u.shape[-1]):
        decayed = v * keep
        v = torch.sign(decayed) * (decayed.abs() >> 12) + u[..., t] + bias
        if peaks is not None and v.numel():
            v_peaks.append(v.abs().amax())
        v = v.clamp(1 - lim, lim - 1)
        out[..., t] = v
        v = torch.where(v > vth, 0, v)
    if peaks is not None and raw_u.numel():
        u_step = raw_u.abs().flatten(0, -2).amax(0).tolist()  # per step
        _record_peaks(peaks, u_step, torch.stack(v_peaks).tolist())
    return out


class _ChipCuba(torch.autograd.Function):
    """The voltage of :func:`cuba_integer` (float units) with slayer's gradient: the backward
    of ``slayer.neuron.dynamics.leaky_integrator`` for ``du = 4096`` (the current is the
    input) and ``dv``, ignoring the reset, the wrap and the clip (straight through)."""

    @staticmethod
    def forward(ctx, synaptic, bias, vth: int, voltage_decay: int, peaks):
        syn = synaptic.detach()
        b = torch.round(bias.detach().double() * STATE_SCALE).long()[..., 0]
        v = None
        if syn.dtype in (torch.float32, torch.float64):
            # a_in << 6 as exact integers in the input's own float type: round(x * 64) is
            # the int64 rounding of the double, and * 64 scales by a power of two.
            raw_u = (syn * WEIGHT_SCALE).round_().mul_(64)
            v = _cuba_voltage(raw_u, b, vth, voltage_decay, peaks, syn.dtype, STATE_SCALE)
        if v is None:
            a_in = torch.round(syn.double() * WEIGHT_SCALE).long()
            _, v = cuba_integer(a_in, b, vth, voltage_decay, peaks)
            v = v.to(synaptic.dtype).div_(STATE_SCALE)
        ctx.decay = 1 - voltage_decay / 4096
        ctx.bias_shape = bias.shape
        return v

    @staticmethod
    def backward(ctx, grad_v):
        # grad[n] = decay * grad[n + 1] + grad_v[n], from the last step back; computed on a
        # [T, ...] copy (contiguous slices), the same two float operations per element.
        steps = grad_v.shape[-1]
        rev = torch.empty((steps, *grad_v.shape[:-1]), dtype=grad_v.dtype, device=grad_v.device)
        rev.copy_(grad_v.movedim(-1, 0))
        carried = torch.empty_like(rev[0]) if steps > 1 else None  # no temporary per step
        for n in range(steps - 2, -1, -1):
            rev[n] += torch.mul(rev[n + 1], ctx.decay, out=carried)
        grad = torch.empty_like(grad_v)
        grad.copy_(rev.movedim(0, -1))
        grad_bias = grad.sum_to_size(ctx.bias_shape) if ctx.needs_input_grad[1] else None
        return grad, grad_bias, None, None, None


def chip_voltage(
    synaptic: torch.Tensor, bias: torch.Tensor, vth: int, peaks: dict | None = None
) -> torch.Tensor:
    """The voltage (before reset, float units ``v / 4096``) of Loihi's CUBA-LIF fed
    ``synaptic`` (``[B, C, ..., T]``, weight units) plus ``bias`` (``[1, C, 1.., 1]``); exact
    at the 24-bit limits, differentiable as slayer's ``cuba.Neuron``."""
    return _ChipCuba.apply(synaptic, bias, vth, VOLTAGE_DECAY, peaks)


def quantize_weight(w: torch.Tensor, exponent: int) -> torch.Tensor:
    """Round to an 8-bit mantissa times ``2**exponent / 64`` (straight-through gradient)."""
    step = 2.0**exponent / WEIGHT_SCALE
    return slayer.utils.quantize(w, step=step).clamp(-128 * step, 127 * step)


#: The lowest bias Loihi's 13-bit signed bias mantissa holds at exponent 6 (weight units).
MIN_BIAS = -4096 * BIAS_STEP


def quantize_bias(b: torch.Tensor, max_bias: float) -> torch.Tensor:
    return slayer.utils.quantize(b, step=BIAS_STEP).clamp(MIN_BIAS, max_bias)


class SpikingGraph(torch.nn.Module):
    """The QAT MS-ResNet (or any :class:`NetSpec`) on slayer synapses and CUBA neurons."""

    def __init__(self, spec: NetSpec, neuron: NeuronConfig | None = None) -> None:
        super().__init__()
        spec.validate()
        self.spec, self.neuron_config = spec, neuron or NeuronConfig()
        cfg = self.neuron_config
        self.synapses = torch.nn.ModuleDict()
        self.norms = torch.nn.ModuleDict()
        for c in spec.conns:
            if c.kind == "conv":
                syn = slayer.synapse.Conv(
                    c.in_channels, c.out_channels, c.kernel, stride=c.stride, padding=c.padding
                )
            else:
                syn = slayer.synapse.Dense(c.in_channels, c.out_channels)
            self.synapses[_key(c.name)] = syn
            if c.batchnorm:
                self.norms[_key(c.name)] = torch.nn.BatchNorm3d(c.out_channels)
        self.neurons = torch.nn.ModuleDict()
        self.biases = torch.nn.ParameterDict()
        for g in spec.groups:  # the readout spikes too: the host counts its spikes
            self.neurons[_key(g.name)] = slayer.neuron.cuba.Neuron(
                threshold=cfg.threshold,
                current_decay=CURRENT_DECAY / 4096,
                voltage_decay=VOLTAGE_DECAY / 4096,
                tau_grad=cfg.tau_grad,
                scale_grad=cfg.scale_grad,
                scale=WEIGHT_SCALE,
            )
            self.biases[_key(g.name)] = torch.nn.Parameter(
                torch.zeros(g.shape[0]), requires_grad=False
            )
        self.register_buffer("folded", torch.tensor(False))
        self.register_buffer("exponents", torch.zeros(len(spec.conns), dtype=torch.int64))

    # ------------------------------------------------------------------ forward
    def forward(self, events: torch.Tensor, record: bool = False, states: dict | None = None):
        """``events`` ``[T, B, 2, H, W]`` -> logits ``[B, K]`` (and spikes per group if ``record``).

        The logits are the readout group's spike counts over the sample window plus a detached
        tie-break below 0.5 (earliest first spike), :func:`~i2e_neuro.models.readout.spike_scores`:
        what the chip delivers to the host through ``NxToPyAdapter`` and the host counts.
        ``states``, a dict, receives per group the largest ``|u|`` and ``|v|`` in Loihi's
        integer units, for the 24-bit check: once folded, Lava's ``u`` (synaptic input, no bias)
        before its wrap and ``v`` before its clip and the spike reset (:func:`cuba_integer`).

        Folded, the neurons compute Loihi's integer CUBA-LIF exactly, wrap and clip included
        (:func:`chip_voltage`, slayer's surrogate gradient); the float phase runs slayer's
        ``cuba.Neuron`` (BatchNorm inputs are not on the integer grid).
        """
        if (
            events.ndim != 5
            or tuple(events.shape[2:]) != tuple(self.spec.input_shape)
            or events.shape[0] != self.spec.timesteps
        ):
            raise ValueError(
                f"events: expected [{self.spec.timesteps}, B, {', '.join(map(str, self.spec.input_shape))}] "
                f"for {self.spec.name}, got {tuple(events.shape)}"
            )
        x = i2e_to_slayer(events)  # T steps: only its connections read it (_synapse)
        spikes: dict[str, torch.Tensor] = {INPUT: x}
        outputs: dict[str, torch.Tensor] = {}
        for g in self.spec.groups:
            total = None
            for c in self.spec.incoming(g.name):
                if c.name not in outputs:
                    outputs[c.name] = self._synapse(c, spikes[c.source])
                total = outputs[c.name] if total is None else total + outputs[c.name]
            # under CUDA autocast the synapses give float16; the neurons take float32
            total = total.float()
            neuron = self.neurons[_key(g.name)]
            if bool(self.folded):
                # the chip's integer dynamics, 24-bit wrap of u and clip of v included
                bias = quantize_bias(self.biases[_key(g.name)], self.neuron_config.max_bias)
                bias = bias.view(1, -1, *([1] * (total.ndim - 2)))
                peaks = None if states is None else states.setdefault(g.name, {"u": 0, "v": 0})
                voltage = chip_voltage(total, bias, self.neuron_config.vth_mant << 6, peaks)
                spikes[g.name] = neuron.spike(voltage)
                continue
            if states is not None:
                with torch.no_grad():
                    current, voltage = neuron.dynamics(total)
                peak = states.setdefault(g.name, {"u": 0, "v": 0})
                for k, x in (("u", current), ("v", voltage)):
                    peak[k] = max(peak[k], int(round(float(x.abs().max()) * neuron.s_scale)))
            spikes[g.name] = neuron(total)
        logits = spike_scores(spikes[self.spec.readout.name], self.spec.readout.population)
        if record:
            return logits, {k: v for k, v in spikes.items() if k != INPUT}
        return logits

    def _synapse(self, c, source_spikes: torch.Tensor) -> torch.Tensor:
        """The synaptic input a connection delivers, one step late (Loihi's hop).

        BatchNorm (float phase) comes after the delay, so that its shift reaches the target from
        step 0 on, as the folded bias does on Loihi: the folded model is then exactly the
        unfolded one (tests/test_models.py). The input is silent after its ``T`` frames, so a
        connection from it convolves those only (given ``T`` or all steps) and pads with the
        zeros the rest would give.
        """
        syn = self.synapses[_key(c.name)]
        steps = self.spec.steps
        if c.source == INPUT:
            source_spikes = source_spikes[..., : self.spec.timesteps]
        if c.kind == "pool_dense":
            source_spikes = source_spikes.sum(dim=(2, 3))
        folded = bool(self.folded)
        weight = syn.weight
        if folded:
            weight = quantize_weight(weight, int(self.exponents[self._conn_index(c.name)]))
        out = self._conv(syn, c, source_spikes, weight)
        out = delay_one_step(out, steps)
        if c.batchnorm and not folded:
            out = self.neuron_config.threshold * self.norms[_key(c.name)](out)
        return out

    @staticmethod
    def _conv(syn, c, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # (not ``_apply``: that name is torch.nn.Module's, used by .to() / .cuda() / .double())
        if c.kind == "pool_dense":
            return F.conv3d(x.reshape(x.shape[0], -1, 1, 1, x.shape[-1]), weight).reshape(
                x.shape[0], -1, x.shape[-1]
            )
        return F.conv3d(x, weight, None, syn.stride, syn.padding, syn.dilation, syn.groups)

    def _conn_index(self, name: str) -> int:
        return [c.name for c in self.spec.conns].index(name)

    # ------------------------------------------------------------------ folding
    @torch.no_grad()
    def fold(self) -> None:
        """Fold BatchNorm into weights and group biases; choose exponents; switch to QAT; bring
        every neuron's reachable state within 24 bits (:meth:`project_state_range`)."""
        if bool(self.folded):
            return
        cfg = self.neuron_config
        for i, c in enumerate(self.spec.conns):
            syn = self.synapses[_key(c.name)]
            if c.batchnorm:
                bn = self.norms[_key(c.name)]
                inv = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                syn.weight.mul_(cfg.threshold * inv.view(-1, *([1] * (syn.weight.ndim - 1))))
                shift = cfg.threshold * (bn.bias - bn.running_mean * inv)
                for t in c.targets:
                    self.biases[_key(t)].add_(shift)
            self.exponents[i] = choose_exponent(syn.weight)
        for g in self.spec.groups:
            self.biases[_key(g.name)].requires_grad_(not g.readout)
        self.norms = torch.nn.ModuleDict()
        self.folded.fill_(True)
        self.project_state_range()

    @torch.no_grad()
    def project_bn_shifts(self) -> int:
        """Keep the biases that :meth:`fold` will make within Loihi's range; returns the channels moved.

        ``fold`` turns each BatchNorm into a bias ``threshold * (beta - mean * gamma / sigma)`` on
        its target groups, and the QAT forward clamps a group's summed bias to ``max_bias`` (a
        neuron must stay silent without input). Called after each float-phase step, this lowers
        the betas of a group's incoming BatchNorms, equally, wherever that sum (with the running
        statistics) exceeds ``max_bias``: projected SGD, so that folding cuts nothing.
        """
        if bool(self.folded):
            return 0
        th, limit = self.neuron_config.threshold, self.neuron_config.max_bias
        moved = 0
        for g in self.spec.groups:  # lowering a beta only lowers other groups' sums: one pass
            conns = [c for c in self.spec.incoming(g.name) if c.batchnorm]
            if not conns:
                continue
            total = sum(self._bn_shift(c) for c in conns)
            # above max_bias, or below the 13-bit bias mantissa's floor: move back inside
            excess = (total - limit).clamp(min=0) + (total - MIN_BIAS).clamp(max=0)
            if bool((excess != 0).any()):
                moved += int((excess != 0).sum())
                for c in conns:
                    self.norms[_key(c.name)].bias.sub_(excess / (th * len(conns)))
        return moved

    def _bn_shift(self, c) -> torch.Tensor:
        """The bias a BatchNorm folds into (as in :meth:`fold`)."""
        bn = self.norms[_key(c.name)]
        inv = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return self.neuron_config.threshold * (bn.bias - bn.running_mean * inv)

    # ------------------------------------------------------------------ state range
    @torch.no_grad()
    def state_bounds(self) -> dict[str, dict[str, int]]:
        """Per group, the largest ``|u|`` and ``|v|`` any input can reach with the deployable
        integers (:func:`~i2e_neuro.models.deploy.state_bounds`: no data involved)."""
        ints = self.integer_parameters()
        return state_bounds(
            self.spec,
            {n: c["weight"] for n, c in ints["conns"].items()},
            {n: c["exponent"] for n, c in ints["conns"].items()},
            {n: g["bias"] for n, g in ints["groups"].items()},
            self.neuron_config.vth_mant,
        )

    @torch.no_grad()
    def project_state_range(self, limit: int = STATE_LIMIT - 1) -> int:
        """Scale down, per neuron channel, the incoming weights of every neuron whose
        :meth:`state_bounds` exceed ``limit`` (default ``2**23 - 1``, the largest 24-bit state),
        so that no input at all can make ``u`` wrap or ``v`` clip; returns the channels moved.

        Projected SGD: called at :meth:`fold` and after every QAT step. A channel's weight
        mantissas (all its incoming connections) are multiplied by the largest factor that
        brings its bounds within ``limit`` and rounded to the nearest mantissa; a channel that
        rounding leaves above the limit (small mantissas: 0.9 * 3 rounds to 3) is rounded toward
        zero instead, which shrinks every sum of ``|mantissa|`` at least by the factor: one pass
        suffices, whatever the mantissas. A connection
        into several groups is only scaled down, which only lowers the others' bounds. Raises
        RuntimeError naming the group if its bias alone leaves no room.
        """
        if not bool(self.folded):
            raise RuntimeError("fold() the model before projecting its state range")
        vth = self.neuron_config.vth_mant << 6
        units = {}  # connection -> (mantissas as float64, 2**e): quantized weight = m * 2**e / 64
        for i, c in enumerate(self.spec.conns):
            e = int(self.exponents[i])
            w = quantize_weight(self.synapses[_key(c.name)].weight, e).double()
            units[c.name] = (torch.round(w * WEIGHT_SCALE / 2.0**e), 2.0**e)
        moved = 0
        for g in self.spec.groups:
            weights = {n: m * scale for n, (m, scale) in units.items()}
            pos, neg = fan_in_sums(self.spec, g.name, weights)
            bias = quantize_bias(self.biases[_key(g.name)], self.neuron_config.max_bias)
            bias = bias.double() * STATE_SCALE
            room_high = limit - vth // 2 - bias.clamp(min=0)
            room_low = limit / 2 - (-bias).clamp(min=0)
            if bool((room_high < 0).any() or (room_low < 0).any()):
                raise RuntimeError(
                    f"group {g.name!r}: its bias alone takes the state past {limit}; no weight "
                    "scaling can bring it into 24 bits"
                )
            factor = torch.minimum(
                room_high / (64 * pos).clamp(min=1), room_low / (64 * neg).clamp(min=1)
            ).clamp(max=1.0)
            hit = factor < 1
            if not bool(hit.any()):
                continue
            moved += int(hit.sum())
            incoming = self.spec.incoming(g.name)
            before = {c.name: units[c.name][0] for c in incoming}
            todo = hit
            for rounding in (torch.round, torch.trunc):  # nearest first, toward zero if needed
                for c in incoming:
                    m, scale = units[c.name]
                    shape = (-1, *([1] * (m.ndim - 1)))
                    scaled = rounding(before[c.name] * factor.view(shape))
                    units[c.name] = (torch.where(todo.view(shape), scaled, m), scale)
                weights = {n: m * scale for n, (m, scale) in units.items()}
                pos, neg = fan_in_sums(self.spec, g.name, weights)
                todo = (64 * pos > room_high) | (64 * neg > room_low)
                if not bool(todo.any()):
                    break
            for c in incoming:
                m, scale = units[c.name]
                syn = self.synapses[_key(c.name)]
                syn.weight.copy_((m * scale / WEIGHT_SCALE).to(syn.weight.dtype))
        return moved

    # ------------------------------------------------------------------ deployment
    @torch.no_grad()
    def integer_parameters(self) -> dict:
        """The deployable integers: per connection mantissas and exponent, per group bias mantissas."""
        if not bool(self.folded):
            raise RuntimeError("fold() the model before exporting integers")
        conns = {}
        for i, c in enumerate(self.spec.conns):
            e = int(self.exponents[i])
            w = quantize_weight(self.synapses[_key(c.name)].weight, e) * WEIGHT_SCALE / 2.0**e
            m = w.round().to(torch.int64)
            if not torch.equal(m.to(w.dtype), w):
                raise ValueError(
                    f"connection {c.name!r}: quantized weights are not integer mantissas"
                )
            conns[c.name] = {
                "weight": m.reshape(
                    c.out_channels, c.in_channels, *([c.kernel] * 2 if c.kind == "conv" else [])
                ),
                "exponent": e,
            }
        groups = {}
        for g in self.spec.groups:
            b = quantize_bias(self.biases[_key(g.name)], self.neuron_config.max_bias) / BIAS_STEP
            groups[g.name] = {"bias": b.round().to(torch.int64)}
        return {"conns": conns, "groups": groups}

    def deploy_record(
        self, i2e: dict | None = None, classes: list[str] | None = None
    ) -> DeployRecord:
        """The deploy record of the folded model (int64 CPU tensors for the integers)."""
        ints = self.integer_parameters()
        cfg = self.neuron_config
        return DeployRecord(
            spec=self.spec,
            neuron=NeuronParams(
                vth_mant=cfg.vth_mant,
                current_decay=CURRENT_DECAY,
                voltage_decay=VOLTAGE_DECAY,
                threshold=float(cfg.threshold),
                tau_grad=float(cfg.tau_grad),
                scale_grad=float(cfg.scale_grad),
            ),
            weights={n: c["weight"].detach().cpu().clone() for n, c in ints["conns"].items()},
            exponents={n: int(c["exponent"]) for n, c in ints["conns"].items()},
            biases={n: g["bias"].detach().cpu().clone() for n, g in ints["groups"].items()},
            steps=self.spec.steps,
            i2e=dict(i2e or {}),
            classes=list(classes or []),
        )

    def deploy(self, i2e: dict | None = None, classes: list[str] | None = None) -> dict:
        """The checkpoint's ``deploy`` entry: ``self.deploy_record(...).to_dict()``."""
        return self.deploy_record(i2e=i2e, classes=classes).to_dict()

    @classmethod
    def from_deploy(cls, deploy: DeployRecord | dict) -> "SpikingGraph":
        """Rebuild the quantized model from deployable integers (exactly: quantization is idempotent)."""
        record = as_record(deploy)
        n = record.neuron
        model = cls(
            NetSpec.from_dict(record.spec.to_dict()),  # a copy: the model owns its spec
            NeuronConfig(
                threshold=n.vth_mant / WEIGHT_SCALE, tau_grad=n.tau_grad, scale_grad=n.scale_grad
            ),
        )
        model.fold()
        with torch.no_grad():
            for i, c in enumerate(model.spec.conns):
                e = int(record.exponents[c.name])
                model.exponents[i] = e
                syn = model.synapses[_key(c.name)]
                w = (
                    torch.as_tensor(record.weights[c.name], dtype=syn.weight.dtype)
                    * 2.0**e
                    / WEIGHT_SCALE
                )
                syn.weight.copy_(w.reshape(syn.weight.shape))
            for g in model.spec.groups:
                b = torch.as_tensor(record.biases[g.name], dtype=torch.float32) * BIAS_STEP
                model.biases[_key(g.name)].copy_(b)
        return model


@torch.no_grad()
def randomize_batchnorm(model: SpikingGraph, seed: int = 0) -> SpikingGraph:
    """Plausible random BatchNorm statistics and affine parameters (tests and benchmarks of
    untrained networks: folding then gives varied weights and biases of both signs)."""
    g = torch.Generator().manual_seed(seed)
    for bn in model.norms.values():
        n = bn.num_features
        bn.running_mean.copy_(torch.rand(n, generator=g) * 0.6 - 0.3)
        bn.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
        bn.weight.copy_(torch.rand(n, generator=g) + 0.6)
        bn.bias.copy_(torch.rand(n, generator=g) * 1.3 - 0.5)
    return model


def choose_exponent(weight: torch.Tensor) -> int:
    """Smallest exponent e >= 0 with max|w| <= 127 * 2**e / 64 (capped at 7)."""
    peak = float(weight.abs().max())
    if peak == 0:
        return 0
    return int(min(MAX_EXPONENT, max(0, math.ceil(math.log2(peak * WEIGHT_SCALE / 127)))))
