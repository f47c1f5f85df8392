"""Several training processes (``torchrun``): the rank and world from the environment, the
device of a process, and the collectives the loop uses. With one process every helper here is a
no-op, so the loop reads the same either way."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from i2e_neuro.train.config import TrainError


@dataclass
class Distributed:
    """This process's place among ``world`` processes (from torchrun's environment)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Distributed":
        return cls(
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def setup_device(self, want: str, threads: int | None) -> torch.device:
        """The device of this process (``want``: auto, cpu or cuda); joins the process group."""
        if threads:
            torch.set_num_threads(int(threads))
        if want not in ("auto", "cpu", "cuda"):
            raise TrainError(f"device {want}: choose auto, cpu or cuda", "device")
        if want == "cuda" and not torch.cuda.is_available():
            raise TrainError(
                f"device cuda: CUDA is not available (torch {torch.__version__}); use device cpu",
                "device",
            )
        cuda = want == "cuda" or (want == "auto" and torch.cuda.is_available())
        device = torch.device("cuda", self.local_rank) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
            from i2e_neuro.train.cuda_setup import prepare_lava_dl_cuda

            prepare_lava_dl_cuda(device)  # lava-dl's JIT kernels, or its torch path on CUDA
        if self.enabled and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
        return device

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``model`` in DistributedDataParallel (itself with one process)."""
        if not self.enabled:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """``values`` summed over all processes."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def broadcast(self, tensors) -> None:
        """Give every process rank 0's ``tensors`` (in place)."""
        if self.enabled:
            for t in tensors:
                torch.distributed.broadcast(t, 0)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()
