#!/usr/bin/env python
"""Run every CUDA path of the project once and print one JSON report (last line).

Checks (each ``pass``, ``fail``, ``error``, ``cpu only`` or ``skipped``, with its numbers):

- ``i2e``: the I2E CUDA engine bit-equal to the CPU engine on the sample photos at 224x224,
  batch 256 (``--quick``: 32); CUDA ms/image and the achieved memory bandwidth (uint8 input +
  bool output bytes / time) as a fraction of the GPU's peak;
- ``slayer``: forward and backward of a small QAT network (msresnet_tiny, 2x32x32, folded to
  Loihi integers, random BatchNorm statistics) on CUDA equal to the CPU: every spike equal,
  logits equal, gradients within 1e-4 relative (TF32 off); also which route lava-dl's CUDA
  dynamics took (``i2e_neuro.train.cuda_setup``: ``jit`` or ``python``);
- ``amp``: one float16-autocast training step (GradScaler) of the float-phase network: finite
  loss, finite gradients, parameters updated;
- ``ddp``: one training step under ``torchrun --standalone --nproc_per_node 1`` with the nccl
  back end (gloo on the CPU when CUDA is absent);
- ``throughput``: msresnet18 training samples/s at 32x32 and 224x224 (slayer float, slayer QAT,
  SpikingJelly float reference, same GPU, same events; ``scripts/bench_train.py``'s step).

Without CUDA it says so, runs the CPU parts (CPU I2E engine, slayer forward/backward on the
CPU, DDP with gloo) and exits 0. With CUDA it exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "scripts"))

CPU_ONLY, SKIPPED = "cpu only", "skipped"
# Peak memory bandwidth (bytes/s) from NVIDIA's data sheets, used where neither torch's device
# properties nor pynvml give the memory clock and bus width.
KNOWN_PEAK_BANDWIDTH = {
    "NVIDIA H200": 4.8e12,
    "NVIDIA H100 80GB HBM3": 3.35e12,
    "NVIDIA A100-SXM4-80GB": 2.039e12,
    "NVIDIA A100-SXM4-40GB": 1.555e12,
}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def check_i2e(cuda: bool, quick: bool) -> dict:
    from bench_i2e import peak_bandwidth, photos

    from i2e_neuro.i2e.conversion import i2e

    batch, size, steps = (32 if quick else 256), 224, 8
    x = photos(size, batch)
    start = time.perf_counter()
    ref = i2e(x, ratio=0.12, timesteps=steps)
    cpu_ms = (time.perf_counter() - start) * 1e3 / batch
    out = {"size": size, "batch": batch, "cpu_ms_per_image": cpu_ms}
    if not cuda:
        return {"status": CPU_ONLY, **out, "event_rate": float(ref.float().mean())}
    xc = x.cuda()
    got = i2e(xc, ratio=0.12, timesteps=steps)
    equal = bool(torch.equal(got.cpu(), ref))
    times = []
    for _ in range(3 if quick else 10):
        sync()
        t = time.perf_counter()
        i2e(xc, ratio=0.12, timesteps=steps)
        sync()
        times.append(time.perf_counter() - t)
    sec = statistics.median(times)
    moved = xc.numel() * xc.element_size() + got.numel() * got.element_size()
    peak = peak_bandwidth() or KNOWN_PEAK_BANDWIDTH.get(torch.cuda.get_device_name())
    return {
        "status": "pass" if equal else "fail",
        **out,
        "bit_equal": equal,
        "cuda_ms_per_image": sec * 1e3 / batch,
        "bandwidth_gb_s": moved / sec / 1e9,
        "peak_bandwidth_gb_s": peak / 1e9 if peak else None,
        "bandwidth_fraction": moved / sec / peak if peak else None,
    }


def small_network(folded: bool = True):
    from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm
    from i2e_neuro.models.spec import build_spec

    torch.manual_seed(0)
    model = randomize_batchnorm(SpikingGraph(build_spec("msresnet_tiny", (2, 32, 32), 10)))
    if folded:
        model.eval().fold()
    return model


def small_batch(batch: int = 4):
    g = torch.Generator().manual_seed(1)
    events = torch.rand(8, batch, 2, 32, 32, generator=g) < 0.15
    return events, torch.randint(10, (batch,), generator=g)


def forward_backward(model, events, labels):
    logits, rec = model(events, record=True)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach().cpu(), {k: v.detach().cpu() for k, v in rec.items()}, grads


def check_slayer(cuda: bool) -> dict:
    import copy

    model = small_network()
    events, labels = small_batch()
    cpu_model = copy.deepcopy(model)
    logits, rec, grads = forward_backward(cpu_model, events, labels)
    spikes = int(sum(v.sum() for k, v in rec.items() if k != model.spec.readout.name))
    out = {"network": "msresnet_tiny 2x32x32 (QAT, folded)", "cpu_spikes": spikes}
    if not cuda:
        return {"status": CPU_ONLY, **out, "gradients": len(grads)}
    from i2e_neuro.train.cuda_setup import prepare_lava_dl_cuda

    route = prepare_lava_dl_cuda("cuda")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    g_logits, g_rec, g_grads = forward_backward(model.cuda(), events.cuda(), labels.cuda())
    spikes_equal = all(torch.equal(rec[k], g_rec[k]) for k in rec if k != model.spec.readout.name)
    logits_equal = bool(torch.equal(logits, g_logits))
    worst = max(
        float((grads[n] - g_grads[n]).abs().max() / grads[n].abs().max().clamp(min=1e-12))
        for n in grads
    )
    ok = spikes_equal and logits_equal and worst <= 1e-4 and set(grads) == set(g_grads)
    return {
        "status": "pass" if ok else "fail",
        **out,
        "lava_dl_cuda_route": route,
        "spikes_equal": spikes_equal,
        "logits_equal": logits_equal,
        "max_relative_gradient_difference": worst,
    }


def check_amp(cuda: bool) -> dict:
    if not cuda:
        return {"status": SKIPPED, "reason": "needs CUDA (autocast float16)"}
    from i2e_neuro.train.cuda_setup import prepare_lava_dl_cuda

    prepare_lava_dl_cuda("cuda")
    model = small_network(folded=False).cuda().train()
    events, labels = small_batch()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.cuda.amp.GradScaler()
    events, labels = events.cuda(), labels.cuda()
    # GradScaler starts at scale 2**16; a first step whose scaled gradients overflow is skipped
    # (that is the mechanism working), so allow a few steps until one is taken.
    for attempt in range(1, 9):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(model(events).float(), labels)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        finite = all(
            bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None
        )
        scaler.step(opt)
        scaler.update()
        if finite:
            break
    moved = any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    ok = bool(torch.isfinite(loss)) and finite and moved
    return {
        "status": "pass" if ok else "fail",
        "loss": float(loss),
        "finite_gradients": finite,
        "parameters_updated": moved,
        "steps_until_taken": attempt,
        "final_scale": float(scaler.get_scale()),
    }


def ddp_child(backend: str) -> None:
    """Runs under torchrun: one DDP training step; prints a JSON line."""
    from i2e_neuro.train.cuda_setup import prepare_lava_dl_cuda

    torch.distributed.init_process_group(backend=backend)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        prepare_lava_dl_cuda(device)
    model = small_network(folded=False).to(device).train()
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[rank] if device.type == "cuda" else None
    )
    events, labels = small_batch(4)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(ddp(events.to(device)), labels.to(device))
    loss.backward()
    opt.step()
    world = torch.distributed.get_world_size()
    torch.distributed.destroy_process_group()
    print(json.dumps({"loss": float(loss), "world_size": world, "backend": backend}))


def check_ddp(cuda: bool, timeout: int) -> dict:
    backend = "nccl" if cuda else "gloo"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    cmd += [str(Path(__file__).resolve()), "--ddp-child", backend]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    start = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "fail", "backend": backend, "reason": f"timed out after {timeout} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {
            "status": "fail",
            "backend": backend,
            "rc": p.returncode,
            "stderr": p.stderr[-1500:],
        }
    result = json.loads(lines[-1])
    ok = result["world_size"] == 1 and result["loss"] == result["loss"]  # not NaN
    return {
        "status": ("pass" if ok else "fail") if cuda else (CPU_ONLY if ok else "fail"),
        **result,
        "seconds": time.perf_counter() - start,
    }


def check_throughput(cuda: bool, quick: bool) -> dict:
    if not cuda:
        return {"status": SKIPPED, "reason": "needs CUDA (CPU figures: scripts/bench_train.py)"}
    from bench_train import bench

    from i2e_neuro.train.cuda_setup import prepare_lava_dl_cuda

    prepare_lava_dl_cuda("cuda")
    configs = [(32, 64), (224, 8)] if quick else [(32, 128), (224, 32)]
    rows = []
    for size, batch in configs:
        r = bench("msresnet18", size, batch, 2 if quick else 5, torch.device("cuda"))
        r["qat_over_spikingjelly"] = r["rate"]["slayer QAT"] / r["rate"]["SpikingJelly"]
        rows.append(r)
        torch.cuda.empty_cache()
    return {"status": "pass", "unit": "samples/s (median)", "configs": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller batches and fewer repeats")
    p.add_argument("--ddp-child", metavar="BACKEND", help=argparse.SUPPRESS)
    p.add_argument("--ddp-timeout", type=int, default=300, help="seconds for the torchrun step")
    args = p.parse_args(argv)
    if args.ddp_child:
        ddp_child(args.ddp_child)
        return 0
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    report = {
        "cuda": cuda,
        "device": torch.cuda.get_device_name() if cuda else None,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "note": None if cuda else "CUDA is not available: CPU parts only",
        "checks": {},
    }
    checks = {
        "i2e": lambda: check_i2e(cuda, args.quick),
        "slayer": lambda: check_slayer(cuda),
        "amp": lambda: check_amp(cuda),
        "ddp": lambda: check_ddp(cuda, args.ddp_timeout),
        "throughput": lambda: check_throughput(cuda, args.quick),
    }
    for name, fn in checks.items():
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - one broken path must not hide the others
            result = {"status": "error", "error": f"{type(e).__name__}: {e}"[:2000]}
        result["check_seconds"] = round(time.perf_counter() - start, 2)
        report["checks"][name] = result
        print(f"{name}: {result['status']}", flush=True)
    failed = [k for k, v in report["checks"].items() if v["status"] in ("fail", "error")]
    report["failed"] = failed
    print(json.dumps(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
