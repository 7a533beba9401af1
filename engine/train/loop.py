"""Training plumbing shared by the trainers: device and precision, distributed setup (torchrun/DDP),
learning-rate schedule, and resumable checkpoints stored as safetensors (weights with diffusers'
save_pretrained; optimizer state flattened into tensors + JSON, never pickle)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from engine.train.config import Precision

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    precision: Precision = "fp32"

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        if self.precision == "fp16":
            return torch.autocast(device_type=self.device.type, dtype=torch.float16)
        return nullcontext()


def setup(device: str = "auto", precision: Precision = "auto") -> Runtime:
    """Pick the device; join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA GPU is available (use --device cpu).")
    dev = torch.device(device)
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if dev.type == "cuda":
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if dev.type == "cpu" and precision != "fp32":
        log.warning("mixed precision %s is for GPUs; training in fp32 on the CPU", precision)
        precision = "fp32"
    return Runtime(dev, rank, world, precision)


def teardown(rt: Runtime) -> None:
    """Leave the process group together: every rank waits at a barrier (rank 0 may still be writing the
    final model) before the group is destroyed; destroying it while a peer is busy can hang (gloo)."""
    if rt.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def lr_at(step: int, total: int, base: float, warmup: int, floor: float = 0.05) -> float:
    """Linear warm-up, then cosine decay to floor * base."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def save_checkpoint(folder: Path, model, optimizer: torch.optim.Optimizer, step: int, extra: dict) -> None:
    """Weights (save_pretrained: safetensors + config.json), optimizer state (safetensors) and the
    step/extra state (JSON); written to a temporary folder, then renamed (atomic)."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        for f in tmp.iterdir():
            f.unlink()
    model.save_pretrained(tmp)
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "trainer_state.json").write_text(json.dumps(
        {"step": step, "param_groups": sd["param_groups"], "scalars": scalars, **extra}, indent=1), "utf-8")
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        folder.rename(old)
        tmp.rename(folder)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        tmp.rename(folder)


def load_checkpoint(folder: Path, model, optimizer: torch.optim.Optimizer) -> dict:
    """Restore weights and optimizer state saved by `save_checkpoint`; returns the JSON state."""
    from safetensors.torch import load_model

    load_model(model, str(folder / "diffusion_pytorch_model.safetensors"), device=str(next(model.parameters()).device))
    state = json.loads((folder / "trainer_state.json").read_text("utf-8"))
    tensors = load_file(str(folder / "optimizer.safetensors"))
    per: dict[int, dict] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        per.setdefault(int(pid), {})[k] = v
    for key, v in state["scalars"].items():
        pid, k = key.split(".", 1)
        per.setdefault(int(pid), {})[k] = v
    optimizer.load_state_dict({"state": per, "param_groups": state["param_groups"]})
    return state


def jsonable(cfg) -> dict:
    """A config dataclass as plain JSON values (paths as strings)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def save_final(out: Path, model, cfg, step: int, history: list, started: float, what: str) -> Path:
    """The finished model (out/model) and the run summary (out/train.json: config, steps, evaluations, time)."""
    final = out / "model"
    model.save_pretrained(final)
    (out / "train.json").write_text(json.dumps({"config": jsonable(cfg), "steps": step, "history": history,
                                                "seconds": round(time.time() - started, 1)}, indent=1), "utf-8")
    log.info("%s saved to %s", what, final)
    return final


def step_randomness(seed: int, step: int, rank: int, device: torch.device) -> tuple[np.random.Generator, torch.Generator]:
    """All randomness of a training step as a function of (seed, step, rank): a numpy generator (batches),
    a torch generator (noise, dropout of conditions), and torch's global seed (dropout layers). A resumed
    run therefore repeats an uninterrupted one exactly."""
    rng = np.random.default_rng([seed, step, rank])
    gen = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
    torch.manual_seed(int(rng.integers(2**62)))
    return rng, gen
