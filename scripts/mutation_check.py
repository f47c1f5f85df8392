#!/usr/bin/env python
"""Break central behaviours one at a time in a copy of the tree and check that tests fail.

Each mutation replaces one exact string in the library (it must occur exactly once among the
files it may be in, or the script stops with an error: a mutation that no longer applies is
reported, never skipped). The copy is the repository's tracked and untracked-but-not-ignored
files; the relevant tests run there with ``PYTHONPATH`` pointing at the copy. First the same
tests run on the unmutated copy (they must pass, or a failure would prove nothing).

The last line of the output is JSON: per mutation the failing tests and whether it was caught.
Exit status 0 when every mutation is caught, 1 when one is not, 2 on a usage or setup error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("i2e_neuro/**/*.py", "export/**/*.py")


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    old: str
    new: str
    tests: tuple[str, ...]
    within: tuple[str, ...] = LIBRARY  # globs of the files that may hold ``old``


MUTATIONS = (
    Mutation(
        "direction-e-reversed",
        "direction e reversed in the direction table",
        '"e": ((9, 4), (6, 1)),',
        '"e": ((4, 9), (1, 6)),',
        ("tests/i2e/test_paper_oracles.py",),
    ),
    Mutation(
        "directions-c-d-swapped",
        "entries c and d of the direction table swapped",
        '"c": ((5, 3), (4, 2), (7, 5), (8, 6)),\n    "d": ((5, 1), (6, 2), (8, 4), (9, 5)),',
        '"c": ((5, 1), (6, 2), (8, 4), (9, 5)),\n    "d": ((5, 3), (4, 2), (7, 5), (8, 6)),',
        ("tests/i2e/test_paper_oracles.py",),
    ),
    Mutation(
        "no-optimizer-step",
        "the optimizer step removed from training",
        "self.scaler.step(self.optimizer)",
        "None  # mutation: no optimizer step",
        ("tests/test_learning.py",),
    ),
    Mutation(
        "event-polarity-swapped",
        "ON/OFF polarity swapped in I2ESource(events=True)",
        "samples.astype(bool)[:, :timesteps]",
        "samples.astype(bool)[:, :timesteps, ::-1]",
        ("tests/export/test_event_input.py",),
    ),
    Mutation(
        "ann-macs-kernel-not-squared",
        "ann_macs with kernel instead of kernel^2",
        "c.kernel * c.kernel",
        "c.kernel",
        ("tests/energy/test_energy_oracles.py",),
        ("export/**/synops.py",),  # export/resources.py counts kernel^2 too (memory, not MACs)
    ),
    Mutation(
        "ann-macs-two-input-channels",
        "ann_macs with 2 input channels instead of 3 (RGB)",
        "cin = 3 if (c.source == INPUT and rgb_input)",
        "cin = 2 if (c.source == INPUT and rgb_input)",
        ("tests/energy/test_energy_oracles.py",),
    ),
    Mutation(
        "lava-shape-hwc",
        "chw_shape_to_lava returning (H, W, C) instead of (W, H, C)",
        "return tuple(shape[::-1]) if len(shape) == 3 else tuple(shape)",
        "return (shape[1], shape[2], shape[0]) if len(shape) == 3 else tuple(shape)",
        ("tests/export/test_event_input.py",),
    ),
)


class SetupError(Exception):
    pass


def copy_tree(dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files of the repository into ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = raw.decode()
        src = ROOT / rel
        if not src.is_file():  # deleted in the work tree
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def locate(tree: Path, old: str, within: tuple[str, ...] = LIBRARY) -> Path:
    """The one file (of the globs ``within``) holding ``old`` exactly once; else a setup error."""
    hits = []
    for pattern in within:
        for path in sorted(tree.glob(pattern)):
            n = path.read_text().count(old)
            if n:
                hits.append((path, n))
    if len(hits) != 1 or hits[0][1] != 1:
        where = ", ".join(f"{p.relative_to(tree)} ({n}x)" for p, n in hits) or "nowhere"
        raise SetupError(f"the string to mutate must occur exactly once; found {where}: {old!r}")
    return hits[0][0]


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, list[str], str]:
    """Run pytest on ``tests`` in ``tree``; return (status, failing test ids, output tail)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *tests]
    try:
        proc = subprocess.run(
            cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return 124, ["(timed out)"], ""
    out = proc.stdout + proc.stderr
    failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", out, flags=re.M)))
    return proc.returncode, failed, out[-3000:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the run of the unmutated tests"
    )
    parser.add_argument(
        "--timeout", type=float, default=1200, help="seconds per pytest run (default 1200)"
    )
    args = parser.parse_args(argv)
    chosen = list(MUTATIONS)
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTATIONS}
        if unknown:
            print(f"mutation_check: --only: unknown {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        chosen = [m for m in MUTATIONS if m.name in args.only]
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name}: {m.what}; tests {' '.join(m.tests)}")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="i2e-mutation-") as tmp:
        tree = Path(tmp) / "tree"
        copy_tree(tree)
        try:
            targets = {m.name: locate(tree, m.old, m.within) for m in chosen}
        except SetupError as e:
            print(f"mutation_check: {e}", file=sys.stderr)
            return 2
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            start = time.perf_counter()
            code, failed, tail = run_tests(tree, tests, args.timeout)
            print(
                f"baseline: {' '.join(tests)}: exit {code} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            if code != 0:
                print(tail, file=sys.stderr)
                print(f"mutation_check: the unmutated tests fail: {failed}", file=sys.stderr)
                return 2
        for m in chosen:
            path = targets[m.name]
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new))
            start = time.perf_counter()
            try:
                code, failed, _ = run_tests(tree, m.tests, args.timeout)
            finally:
                path.write_text(original)
            caught = code != 0 and bool(failed)
            seconds = round(time.perf_counter() - start, 1)
            print(
                f"{m.name} ({path.relative_to(tree)}): {'caught' if caught else 'NOT CAUGHT'} "
                f"by {len(failed)} test(s) in {seconds} s",
                flush=True,
            )
            for t in failed:
                print(f"    {t}", flush=True)
            results.append(
                {
                    "name": m.name,
                    "what": m.what,
                    "file": str(path.relative_to(tree)),
                    "tests": list(m.tests),
                    "failed": failed,
                    "caught": caught,
                    "seconds": seconds,
                }
            )
    summary = {"mutations": results, "all_caught": all(r["caught"] for r in results)}
    print(json.dumps(summary))
    return 0 if summary["all_caught"] else 1


if __name__ == "__main__":
    sys.exit(main())
