#!/usr/bin/env python
"""Paper-size MS-ResNets through the whole pipeline: export, legality, Loihi 2 resources, Lava, energy.

For each configuration ``ARCH@SIZE`` (default: msresnet18 and msresnet34 at 32x32, 128x128 and
224x224, 2 event channels, T=8): a network with random weights drawn the way a trained model's
are (Kaiming-initialised convolutions, random BatchNorm statistics from ``randomize_batchnorm``,
BN shifts projected under the bias bound, then folded to Loihi integers); the network
description; the Loihi 2 legality check (``export.lava.legality``, when present); cores and chips
from ``export.resources`` (and which limit binds); seconds per sample in the Lava CPU simulator
(fast models) and in lava-dl's forward pass; whether every spike of every group is identical;
SynOps and energy per sample (``export.synops.energy_report``), with the constants of each
energy estimate.

``--target NAME`` (a named Loihi 2 system of ``hw_configs/``: oheo-gulch, kapoho-point,
hala-point): each paper configuration is replaced by the closest network that fits the target
(``export.resources.closest_fit``: the first of the architecture's Loihi 2 variants, widest first,
whose every group's fan-in and whose cores fit), and the row names it (widths, stem, input size)
with its cores, chips and ``fits``.

Input: the embedded sample photos (``i2e_neuro/data/samples``) plus any folder given with
``--images``, resized (short side) and centre-cropped to each size and converted by the Lava I2E
source at ratio 0.12 (the paper's ImageNet setting); the measured event rate is reported.
One JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import export.lava.runner  # noqa: F401  (Lava first: it fixes multiprocessing's start method)
from i2e_neuro.allocator import keep_freed_memory  # noqa: E402

DEFAULT_CONFIGS = [f"{a}@{s}" for a in ("msresnet18", "msresnet34") for s in (32, 128, 224)]
QUICK_CONFIGS = ["msresnet_tiny@32"]
KAPOHO_POINT_CHIPS = 8  # Intel's Kapoho Point board: 8 Loihi 2 chips
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def fitted_config(arch: str, size: int, classes: int, timesteps: int, target: str):
    """``(network name, its fit report as a dict, what was tried)``: the closest network to
    ``arch@size`` that fits ``target`` (SystemExit naming every reason when none does)."""
    from export.resources import DoesNotFit, closest_fit

    try:
        spec, rep, tried = closest_fit(arch, size, classes, target, timesteps)
    except (DoesNotFit, ValueError) as e:
        raise SystemExit(f"--target {target}: {e}") from None
    return spec.name, rep.to_dict(), [f"{r.network}: {'; '.join(r.reasons)}" for r in tried[:-1]]


def parse_configs(text: str) -> list[tuple[str, int]]:
    """``"msresnet18@32,msresnet34@224"`` -> ``[("msresnet18", 32), ("msresnet34", 224)]``."""
    from i2e_neuro.models.spec import ARCHITECTURES

    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        arch, sep, size = item.partition("@")
        if not sep or not size.isdigit() or int(size) < 8:
            raise SystemExit(f"--configs: {item!r} is not ARCH@SIZE (e.g. msresnet18@128)")
        if arch not in ARCHITECTURES:
            raise SystemExit(f"--configs: {item!r}: arch must be one of {sorted(ARCHITECTURES)}")
        out.append((arch, int(size)))
    if not out:
        raise SystemExit("--configs: no configuration given")
    return out


def photo_paths(images: str | None) -> list[Path]:
    """The embedded sample photos, then the images of ``images`` (a folder, sorted)."""
    from i2e_neuro.datasets.sample_photos import sample_photos

    paths = list(sample_photos())
    if images:
        folder = Path(images)
        if not folder.is_dir():
            raise SystemExit(f"--images {images}: not a folder")
        extra = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not extra:
            raise SystemExit(f"--images {images}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        paths += extra
    return paths


def square_images(paths: list[Path], size: int):
    """Images ``[N, 3, size, size]`` uint8: resized (short side, bilinear) and centre-cropped."""
    import numpy as np

    from i2e_neuro.i2e.images import load_image, resize

    out = []
    for p in paths:
        try:
            im = load_image(p)
        except Exception as e:  # noqa: BLE001 - name the file
            raise SystemExit(f"{p}: cannot read image ({e})") from e
        if im.shape[2] == 1:
            im = np.repeat(im, 3, axis=2)
        im = resize(im[:, :, :3], (size,))
        y, x = (im.shape[0] - size) // 2, (im.shape[1] - size) // 2
        out.append(im[y : y + size, x : x + size].transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out))


def random_trained_like(arch: str, size: int, classes: int, timesteps: int, seed: int = 0):
    """A folded ``SpikingGraph`` whose integers look like a trained model's, and its description."""
    import torch

    from export.description import from_deploy
    from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm
    from i2e_neuro.models.spec import build_spec

    torch.manual_seed(seed)
    spec = build_spec(arch, (2, size, size), classes, timesteps=timesteps)
    model = randomize_batchnorm(SpikingGraph(spec), seed=seed)
    model.project_bn_shifts()  # as training does: folding then cuts no bias at the bound
    model.eval().fold()
    return from_deploy(model.deploy(i2e={"ratio": 0.12, "order": "efghabcd"}))


def legality(desc) -> dict:
    """The Loihi 2 legality check of ``export.lava.legality`` (issue 9) on the built Lava graph, or
    ``{"status": "not available"}`` where this tree has no such module."""
    try:
        import export.lava.legality as legal
    except ImportError:
        return {"status": "not available"}
    check = getattr(legal, "check_graph", None)
    if check is None:
        return {"status": "not available", "reason": "export.lava.legality has no check_graph"}
    from export.lava.graph import build

    report = check(build(desc))
    return {
        "status": "legal" if report.ok else "illegal",
        "violations": [c.text() for c in report.violations],
        "warnings": [c.text() for c in report.warnings],
    }


def loihi2_resources(desc) -> dict:
    """Cores and chips on Loihi 2 (same per-group formula as ``export.resources``), the binding limit.

    ``resource_report`` is called for one chip and for a Kapoho Point board (8 chips); its
    refusal message is kept. The core count is the sum over groups of
    ``max(ceil(neurons / neurons_per_core), ceil(synapse_bytes / memory_per_core))``.
    """
    from export.resources import DoesNotFit, fan_in, resource_report
    from i2e_neuro.energy.hw import hw_value, load_hw_config

    cfg = load_hw_config("loihi2")
    per_core = int(hw_value(cfg, "limits.max_neurons_per_core"))
    memory = int(hw_value(cfg, "limits.synaptic_memory_per_core_bytes"))
    max_fan_in = int(hw_value(cfg, "limits.max_fan_in_per_core"))
    per_chip = int(hw_value(cfg, "limits.cores_per_chip"))
    neuron_cores = memory_cores = cores = 0
    over_fan_in = []
    for g in desc.groups:
        n, f = g.size, fan_in(desc, g.name)
        a, b = math.ceil(n / per_core), math.ceil(n * f / memory)
        neuron_cores, memory_cores, cores = neuron_cores + a, memory_cores + b, cores + max(a, b)
        if f > max_fan_in:
            over_fan_in.append(f"{g.name} ({f})")
    chips = math.ceil(cores / per_chip)
    fits = {}
    for label, n_chips in (("one_chip", 1), ("kapoho_point", KAPOHO_POINT_CHIPS)):
        try:
            resource_report(desc, "loihi2", chips=n_chips)
            fits[label] = {"fits": True}
        except DoesNotFit as e:
            fits[label] = {"fits": False, "reason": str(e)}
    return {
        "neurons": sum(g.size for g in desc.groups),
        "synapse_bytes": sum(g.size * fan_in(desc, g.name) for g in desc.groups),
        "max_fan_in": max(fan_in(desc, g.name) for g in desc.groups),
        "cores": cores,
        "cores_neuron_bound": neuron_cores,
        "cores_memory_bound": memory_cores,
        "chips": chips,
        "groups_over_fan_in": over_fan_in,
        "fan_in_limit": max_fan_in,
        **fits,
    }


def event_rates(images, timesteps: int) -> list[float]:
    """I2E event rate (events / (2 * H * W * T)) of each image at ratio 0.12."""
    import torch

    from i2e_neuro.i2e.conversion import i2e

    ev = i2e(torch.from_numpy(images), ratio=0.12, timesteps=timesteps)  # [T, N, 2, H, W]
    return [float(r) for r in ev.float().mean(dim=(0, 2, 3, 4))]


def run_config(
    arch: str,
    size: int,
    paths: list[Path],
    samples: int,
    timesteps: int,
    runs: bool = True,
    target: str | None = None,
    repeats: int = 1,
) -> dict:
    import numpy as np

    from export.lava.runner import simulate
    from export.peers.lava_dl import run_lava_dl
    from export.synops import energy_report
    from i2e_neuro.datasets.eval_data import Samples
    from i2e_neuro.models.spec import ARCHITECTURES

    classes = 1000 if size >= 224 else 10  # ImageNet / CIFAR-10, CIFAR10-DVS
    row: dict = {"arch": arch, "size": size, "classes": classes, "timesteps": timesteps}
    if target is not None:
        row["paper_config"] = f"{arch}@{size}"
        arch, row["fit"], row["variants_refused"] = fitted_config(
            arch, size, classes, timesteps, target
        )
        kw = ARCHITECTURES[arch]
        row.update(
            arch=arch,
            blocks=list(kw["blocks"]),
            widths=list(kw["widths"]),
            stem=f"{kw.get('stem_kernel', 7)}x{kw.get('stem_kernel', 7)}/{kw.get('stem_stride', 4)}",
        )
    start = time.perf_counter()
    desc = random_trained_like(arch, size, classes, timesteps)
    row["export_s"] = time.perf_counter() - start
    row["groups"], row["connections"] = len(desc.groups), len(desc.connections)
    row["steps_per_sample"] = desc.steps
    row["legality"] = legality(desc)
    row["loihi2"] = loihi2_resources(desc)

    images = square_images(paths, size)
    rates = event_rates(images, timesteps)
    row["event_rate"] = {
        "mean": float(np.mean(rates)),
        "per_image": {p.name: r for p, r in zip(paths, rates)},
    }
    if not runs:
        return row
    n = min(samples, len(images))
    run_images = images[:n]
    data = Samples(run_images, np.full(n, -1), [p.name for p in paths[:n]])
    row["samples"] = n

    run_lava_dl(desc, Samples(run_images[:1], np.full(1, -1), ["warm-up"]), batch=1)
    # Lava's warm-up too: the first run in a process also sets up torch for each convolution
    # shape and measures each geometry's event and dense convolution costs (once per process,
    # conv_plan._event_costs); timed and reported, not counted in the rounds.
    start = time.perf_counter()
    simulate(desc, run_images[:1], fast=True)
    row["lava_first_run_s"] = time.perf_counter() - start
    # ``repeats`` rounds, lava-dl then Lava in each (load hits both alike); the ratio per round
    dl_s, lava_s, walls = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        ref = run_lava_dl(desc, data, record=n, batch=1)
        dl_s.append((time.perf_counter() - start) / n)  # both after one warm-up sample
        start = time.perf_counter()
        res = simulate(desc, run_images, record=n, fast=True)
        walls.append(time.perf_counter() - start)  # with graph build and compilation
        lava_s.append(res.seconds / n)
    rounds = [a / b for a, b in zip(lava_s, dl_s)]
    row["lava_dl_s_per_sample"] = statistics.median(dl_s)
    row["lava_s_per_sample"] = statistics.median(lava_s)
    row["lava_wall_s"] = statistics.median(walls)
    row["lava_over_lava_dl"] = statistics.median(rounds)
    row["rounds"] = {"lava_dl_s": dl_s, "lava_s": lava_s, "lava_over_lava_dl": rounds}
    mismatched = [g for g in ref.trains if not np.array_equal(res.trains[g], ref.trains[g])]
    row["identical_spikes"] = not mismatched
    row["mismatched_groups"] = mismatched
    row["predictions_equal"] = bool(np.array_equal(res.predictions, ref.predictions))
    row["spikes_per_sample"] = sum(int(c.sum()) for c in res.counts.values()) / n
    activity = row["spikes_per_sample"] / (
        sum(g.size for g in desc.spiking_groups) * desc.timesteps
    )
    row["network_activity"] = activity

    rep = energy_report(desc, ref.input_counts, res.neuron_counts, n)
    total = rep["total"]
    row["synops_per_sample"] = total["synops"]
    row["snn_uj_per_sample"] = total["snn_uj"]
    row["loihi2_uj_per_sample"] = total["loihi_uj"]
    row["ann_uj_per_sample"] = total["ann_uj"]
    row["input_event_rate_simulated"] = rep["input_event_rate"]
    row["energy_constants"] = rep["constants"]
    return row


def summary_line(r: dict) -> str:
    lo = r["loihi2"]
    leg = r["legality"]["status"]
    if "fit" in r:
        fit = r["fit"]
        head = (
            f"{r['paper_config']} -> {r['arch']} (widths {','.join(map(str, r['widths']))}, stem "
            f"{r['stem']}, input {r['size']}x{r['size']}): {fit['cores']} cores, {fit['chips']} "
            f"chip(s), fits {fit['target']}: {str(fit['fits']).lower()}, largest fan-in "
            f"{fit['max_fan_in']} <= {fit['fan_in_limit']}, legality: {leg}, "
            f"event rate {r['event_rate']['mean']:.3f}"
        )
    else:
        head = (
            f"{r['arch']}@{r['size']}: {lo['neurons']} neurons, {lo['cores']} cores, {lo['chips']} chip(s) "
            f"[1 chip: {'fits' if lo['one_chip']['fits'] else 'no'}, 8 chips: "
            f"{'fits' if lo['kapoho_point']['fits'] else 'no'}], legality: {leg}, "
            f"event rate {r['event_rate']['mean']:.3f}"
        )
    if "lava_s_per_sample" not in r:
        return head
    ratios = r["rounds"]["lava_over_lava_dl"]
    return (
        f"{head}, Lava / lava-dl {r['lava_over_lava_dl']:.2f} (median of {len(ratios)} rounds, "
        f"{min(ratios):.2f} to {max(ratios):.2f}), Lava {r['lava_s_per_sample']:.2f} s/sample "
        f"(wall {r['lava_wall_s']:.1f} s; first run in the process {r['lava_first_run_s']:.1f} s "
        f"for 1 sample), lava-dl {r['lava_dl_s_per_sample']:.2f} s/sample, "
        f"identical spikes: {r['identical_spikes']}, SynOps {r['synops_per_sample']:.3g}, "
        f"SNN {r['snn_uj_per_sample']:.3g} uJ, Loihi 2 {r['loihi2_uj_per_sample']:.3g} uJ, "
        f"ANN {r['ann_uj_per_sample']:.3g} uJ per sample"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--configs",
        default=",".join(DEFAULT_CONFIGS),
        help="comma-separated ARCH@SIZE (default: msresnet18 and msresnet34 at 32, 128, 224)",
    )
    p.add_argument("--samples", type=int, default=2, help="samples through Lava and lava-dl (>= 2)")
    p.add_argument(
        "--repeats", type=int, default=1, help="timed rounds of lava-dl then Lava (ratio spread)"
    )
    p.add_argument("--timesteps", type=int, default=8)
    p.add_argument("--images", help="a folder of images to add to the embedded sample photos")
    p.add_argument("--quick", action="store_true", help=f"only {QUICK_CONFIGS[0]}, 2 samples")
    p.add_argument(
        "--skip-runs",
        action="store_true",
        help="export, legality, resources and event rates only (no Lava, lava-dl or energy)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: up to 2; 1 keeps lava-dl's OpenMP from stalling on a "
        "machine whose cores other jobs occupy)",
    )
    p.add_argument("--out", help="also write the JSON report to this file")
    p.add_argument(
        "--kept-malloc",
        action="store_true",
        help="keep freed memory mapped, as the i2e-neuro commands do (i2e_neuro/allocator.py); "
        "it speeds up both sides, by different amounts (default: glibc's own settings, what "
        "both libraries get out of the box)",
    )
    p.add_argument(
        "--target",
        help="a named Loihi 2 system (oheo-gulch, kapoho-point, hala-point): run, for each paper "
        "configuration, the closest network that fits it",
    )
    args = p.parse_args(argv)
    if args.samples < 1 or args.repeats < 1:
        raise SystemExit("--samples and --repeats must be >= 1")
    malloc = "kept" if args.kept_malloc and keep_freed_memory() else "default"
    if args.target is not None:
        from i2e_neuro.energy.hw import HardwareConfigError, load_target
        from i2e_neuro.models.spec import LOIHI2_VARIANTS

        try:
            load_target(args.target)
        except HardwareConfigError as e:
            raise SystemExit(f"--target {e}") from None
        if args.quick:
            args.configs, args.quick = "msresnet18@32", False  # the smallest paper configuration
        for arch, _ in parse_configs(args.configs):
            if arch not in LOIHI2_VARIANTS:
                raise SystemExit(
                    f"--target: {arch} is not a paper architecture ({', '.join(LOIHI2_VARIANTS)})"
                )

    import torch

    torch.set_num_threads(args.threads or max(1, min(2, os.cpu_count() or 1)))
    configs = parse_configs(",".join(QUICK_CONFIGS) if args.quick else args.configs)
    paths = photo_paths(args.images)
    load = os.getloadavg()
    rows = []
    for arch, size in configs:
        r = run_config(
            arch,
            size,
            paths,
            args.samples,
            args.timesteps,
            runs=not args.skip_runs,
            target=args.target,
            repeats=args.repeats,
        )
        print(summary_line(r), flush=True)
        rows.append(r)
    if rows and "energy_constants" in rows[0]:
        print("energy constants: " + " | ".join(rows[0]["energy_constants"].values()))
    if args.target is not None:
        from i2e_neuro.energy.hw import load_target

        print(f"target limits: {load_target(args.target).constants()}")
    from i2e_neuro.machine import run_context

    report = {
        **run_context(load, os.getloadavg()),
        "torch_threads": torch.get_num_threads(),
        "malloc": malloc,
        "images": [str(p) for p in paths],
        "configs": rows,
    }
    text = json.dumps(report)
    if args.out:
        from i2e_neuro.atomic import write_text

        write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
