"""Hardware descriptions (``hw_configs/*.yaml``): per-core limits, number formats, energy per event.

Every number that describes hardware lives in one YAML file per target, each value next to the
published source it comes from::

    limits:
      cores_per_chip:
        value: 128
        unit: cores
        source: Davies et al., IEEE Micro 2018, p. 86 ...

:func:`load_hw_config` finds a file by name (``loihi2``, ``loihi1``, ``cpu``, ``energy_45nm``) or
path, checks that it is a mapping whose every ``value`` is a number (or ``null`` for "not
applicable") with a non-empty ``source``, and returns it as a dict. :func:`hw_value` reads one
entry by its dotted key, e.g. ``hw_value(cfg, "energy.synaptic_op_j")``.

Where the files are looked for, in order: the folder named by ``$I2E_NEURO_HW_CONFIGS``; the
package ``i2e_neuro.hw_configs`` (the repository's top-level ``hw_configs/``, which editable and
normal installs map to that package, read with ``importlib.resources``); and, for a source tree
used without installing, ``hw_configs/`` beside ``i2e_neuro/``.
"""

from __future__ import annotations

import copy
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: named Loihi 2 systems (boards and racks): chips, and the chip file whose per-core limits apply
TARGET_NAMES = ("oheo-gulch", "kapoho-point", "hala-point")
#: the targets shipped with the project
NAMES = ("loihi2", "loihi1", "cpu", "energy_45nm", *TARGET_NAMES)
#: the shipped targets with per-core limits (a network can be mapped onto them)
CHIP_NAMES = ("loihi2", "loihi1", "cpu")
ENV_VAR = "I2E_NEURO_HW_CONFIGS"
_SUFFIXES = (".yaml", ".yml")


class HardwareConfigError(ValueError):
    """A hardware description that is missing, unreadable or malformed; the message names the file."""


def search_dirs() -> list[Path]:
    """The folders searched for ``<name>.yaml``, in order."""
    dirs = []
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env))
    installed = _package_dir()
    if installed is not None:
        dirs.append(installed)
    checkout = Path(__file__).resolve().parents[2] / "hw_configs"  # a source tree, not installed
    if checkout.is_dir() and checkout not in dirs:
        dirs.append(checkout)
    return dirs


def _package_dir() -> Path | None:
    """The folder of the package ``i2e_neuro.hw_configs`` (editable or normal install), if any."""
    from importlib.resources import files

    try:
        root = files("i2e_neuro.hw_configs")
    except ModuleNotFoundError:
        return None
    return Path(root).resolve() if isinstance(root, Path) else None


def config_path(name_or_path: str | os.PathLike, known: tuple[str, ...] = NAMES) -> Path:
    """Resolve a target name (``loihi2``) or a YAML path to an existing file; ``known``: the
    names the messages offer."""
    text = os.fspath(name_or_path)
    candidate = Path(text).expanduser()
    looks_like_path = (
        candidate.suffix in _SUFFIXES or os.sep in text or (os.altsep and os.altsep in text)
    )
    if looks_like_path:
        if not candidate.is_file():
            raise HardwareConfigError(f"{candidate}: hardware config file not found")
        return candidate
    if not text or not text.replace("_", "").replace("-", "").isalnum():
        raise HardwareConfigError(
            f"{text!r}: not a hardware config name (known: {', '.join(known)}) or a .yaml path"
        )
    tried = []
    for folder in search_dirs():
        for suffix in _SUFFIXES:
            path = folder / f"{text}{suffix}"
            tried.append(str(path))
            if path.is_file():
                return path
    raise HardwareConfigError(
        f"{text!r}: no hardware config found (known: {', '.join(known)}); looked for "
        f"{', '.join(tried)}"
    )


def load_hw_config(name_or_path: str | os.PathLike, known: tuple[str, ...] = NAMES) -> dict:
    """Load and check one hardware description; return it as a dict (plus ``"_path"``).

    Parsed once per file content (a fresh copy each call: callers may change it)."""
    path = config_path(name_or_path, known)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HardwareConfigError(f"{path}: cannot read hardware config ({exc})") from exc
    return copy.deepcopy(_parse_hw_config(str(path), text))


@functools.lru_cache(maxsize=16)
def _parse_hw_config(path: str, text: str) -> dict:
    import yaml

    try:
        # libyaml's parser when PyYAML has it (7x faster; the same safe subset of YAML).
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise HardwareConfigError(f"{path}: malformed YAML ({detail})") from exc
    if not isinstance(data, dict):
        raise HardwareConfigError(
            f"{path}: expected a mapping at the top level, got {type(data).__name__}"
        )
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise HardwareConfigError(f"{path}: missing the top-level 'name' string")
    problems: list[str] = []
    _check(data, "", problems)
    if problems:
        raise HardwareConfigError(f"{path}: " + "; ".join(problems))
    data["_path"] = path
    return data


def _check(node: Any, where: str, problems: list[str]) -> None:
    if not isinstance(node, dict):
        return
    if "value" in node:
        value = node["value"]
        ok = value is None or (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
        if not ok:
            problems.append(
                f"{where}.value={value!r} is not a finite number or null "
                "(note: YAML reads 1e-12 as text; write 1.0e-12)"
            )
        source = node.get("source")
        if not isinstance(source, str) or not source.strip():
            problems.append(f"{where}: value without a 'source'")
        return
    for key, child in node.items():
        _check(child, f"{where}.{key}" if where else str(key), problems)


def hw_value(cfg: dict, key: str) -> Any:
    """The ``value`` of the entry at dotted ``key`` (e.g. ``"limits.cores_per_chip"``); may be None."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(
                f"{cfg.get('_path', cfg.get('name', 'hardware config'))}: no entry {key!r}"
            )
        node = node[part]
    if not isinstance(node, dict) or "value" not in node:
        raise KeyError(
            f"{cfg.get('_path', cfg.get('name', 'hardware config'))}: {key!r} is not a value entry"
        )
    return node["value"]


def hw_source(cfg: dict, key: str) -> str:
    """The published source of the entry at dotted ``key``."""
    hw_value(cfg, key)  # same errors
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return " ".join(str(node["source"]).split())


def register_formats(cfg: dict) -> dict:
    """The number formats of a hardware config (``formats``), as inclusive ``(lo, hi)`` ranges:
    weights per sign mode, ``weight_exp``, 12-bit decays, 17-bit ``vth``, 13-bit signed
    ``bias_mant``, 3-bit ``bias_exp``; ``state`` is ``2**(state_bits - 1)`` (the 24-bit ``u``,
    ``v``). The one reader of these limits (legality checks and the network description)."""

    def f(key: str) -> int:
        return int(hw_value(cfg, f"formats.{key}"))

    decay, vth, bias = f("decay_bits"), f("threshold_bits"), f("bias_mantissa_bits")
    return {
        "weight_bits": f("weight_mantissa_bits"),
        "mixed": (f("weight_mixed_min"), f("weight_mixed_max")),
        "excitatory": (0, f("weight_excitatory_max")),
        "inhibitory": (f("weight_inhibitory_min"), 0),
        "weight_exp": (f("weight_exp_min"), f("weight_exp_max")),
        "decay": (0, (1 << decay) - 1),
        "vth": (0, (1 << vth) - 1),
        "bias_mant": (-(1 << (bias - 1)), (1 << (bias - 1)) - 1),
        "bias_exp": (0, (1 << f("bias_exponent_bits")) - 1),
        "state": 1 << (f("state_bits") - 1),
    }


@dataclass(frozen=True)
class Target:
    """A named system a network is deployed on: ``chips`` chips of the ``chip`` config (whose
    per-core limits apply) and ``cores`` neuromorphic cores in all (the system's published total
    where there is one, else ``chips x cores_per_chip``)."""

    name: str
    chip: str
    chips: int
    cores: int
    cores_per_chip: int
    max_neurons_per_core: int
    memory_per_core_bytes: int
    max_fan_in_per_core: int
    max_delay_steps: int
    fan_in_published: bool
    sources: dict

    def constants(self) -> str:
        """The limits applied, in one line (printed next to every estimate)."""
        return (
            f"{self.name}: {self.chips} {self.chip} chip(s), {self.cores} cores; per core "
            f"{self.max_neurons_per_core} neurons, {self.memory_per_core_bytes} B, fan-in "
            f"{self.max_fan_in_per_core}"
            + ("" if self.fan_in_published else " (Loihi 1's figure; Loihi 2's not published)")
        )


def load_target(name_or_path: str | os.PathLike) -> Target:
    """A named system (``oheo-gulch``, ``kapoho-point``, ``hala-point``), or a chip config
    (``loihi2``: one chip) as a :class:`Target`; :class:`HardwareConfigError` names the file."""
    known = TARGET_NAMES + CHIP_NAMES
    cfg = load_hw_config(name_or_path, known)
    if "system" in cfg:
        chip_name = cfg.get("chip")
        if not isinstance(chip_name, str) or not chip_name:
            raise HardwareConfigError(f"{cfg['_path']}: a system without the 'chip' it is made of")
        chip = load_hw_config(chip_name, CHIP_NAMES)
        try:
            chips = int(hw_value(cfg, "system.chips"))
        except KeyError as e:
            raise HardwareConfigError(str(e)) from None
        total = cfg["system"].get("cores", {}).get("value")
    elif "limits" in cfg:
        chip, chip_name, chips, total = cfg, cfg["name"], 1, None
    else:
        raise HardwareConfigError(
            f"{cfg['_path']}: neither a system (system.chips) nor a chip (limits): not a target "
            f"a network can be mapped onto (targets: {', '.join(known)})"
        )
    if chips < 1:
        raise HardwareConfigError(f"{cfg['_path']}: system.chips {chips}: must be >= 1")
    per_chip = int(hw_value(chip, "limits.cores_per_chip"))
    cores = chips * per_chip if total is None else min(int(total), chips * per_chip)
    keys = (
        "limits.cores_per_chip",
        "limits.max_neurons_per_core",
        "limits.synaptic_memory_per_core_bytes",
        "limits.max_fan_in_per_core",
    )
    sources = {k: hw_source(chip, k) for k in keys}
    if "system" in cfg:
        sources["system.chips"] = hw_source(cfg, "system.chips")
        if total is not None:
            sources["system.cores"] = hw_source(cfg, "system.cores")
    return Target(
        name=cfg["name"],
        chip=chip_name,
        chips=chips,
        cores=cores,
        cores_per_chip=per_chip,
        max_neurons_per_core=int(hw_value(chip, "limits.max_neurons_per_core")),
        memory_per_core_bytes=int(hw_value(chip, "limits.synaptic_memory_per_core_bytes")),
        max_fan_in_per_core=int(hw_value(chip, "limits.max_fan_in_per_core")),
        max_delay_steps=int(hw_value(chip, "limits.max_delay_steps")),
        fan_in_published="NOT PUBLISHED" not in sources["limits.max_fan_in_per_core"],
        sources=sources,
    )
