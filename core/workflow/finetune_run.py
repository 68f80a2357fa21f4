"""``secateur finetune``: the fine-tuning loop as a resumable job, on one process or under ``torchrun``.

Every process of a ``torchrun`` world runs this same function: DDP averages gradients, each
process reads its own shard of every epoch (``--batch-size`` is per process, so the global batch
is batch × processes), metrics are averaged over processes, and only rank 0 prints and writes.
At the end of every epoch rank 0 writes the resume state and then the checkpoint (the best epoch
so far), each atomically; ``resume=True`` continues after the last finished epoch, with the
optimizer, schedule and data order of an uninterrupted run.

``torchrun_command`` builds the command line that runs a fine-tuning on a cluster.
"""

from __future__ import annotations

import copy
import json
import math
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from secateur.core.common.errors import InputError
from secateur.core.common.progress import SILENT, Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import DataBundle
from secateur.core.model.checkpoint import (
    CheckpointInfo,
    read_checkpoint_info,
    read_checkpoint_tensors,
    save_checkpoint,
)
from secateur.core.model.specs import LoadedModel, ModelSpec
from secateur.core.train.distributed import SINGLE, World
from secateur.core.train.finetune import EpochRecord, FinetuneConfig, Trainer
from secateur.core.train.state_file import read_state, save_state, state_path


@dataclass
class FinetuneRequest:
    """Everything ``secateur finetune`` needs, already parsed."""

    loaded: LoadedModel
    data: DataBundle
    config: FinetuneConfig
    settings: RunSettings
    out: Path
    resume: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # the input checkpoint's record (method, metrics), kept


def run_finetune(
    request: FinetuneRequest,
    world: World = SINGLE,
    progress: Progress = SILENT,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune, saving after every epoch; returns the report (the same on every process)."""
    started = time.perf_counter()
    out = request.out
    if out.suffix != ".safetensors":
        raise InputError(f"--out {out}: a checkpoint is a .safetensors file; name it something.safetensors")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: the folder {out.parent} does not exist")
    settings = replace(request.settings, device=world.device_for(request.settings.device))
    info = CheckpointInfo(request.loaded.spec, request.loaded.input_shape, list(request.loaded.edits))
    trainer = Trainer(request.loaded.model, request.data, request.config, settings, world)
    if request.resume:
        best_state = _restore(trainer, request, info)
        resumed_from: int | None = trainer.epoch
    else:
        trainer.start()
        best_state, resumed_from = copy.deepcopy(trainer.model.state_dict()), None
    while trainer.epoch < request.config.epochs:
        record = trainer.run_epoch(progress)
        if trainer.improved(record):
            best_state = copy.deepcopy(trainer.model.state_dict())
        if world.is_main:
            _save(trainer, request, info, best_state)
            if on_epoch is not None:
                on_epoch(record)
        world.barrier()  # no process starts the next epoch (or exits) before the files are in place
    return {
        "model": request.loaded.label,
        "data": request.data.spec,
        "out": str(out),
        "state": str(state_path(out)),
        "epochs": request.config.epochs,
        "resumed_from_epoch": resumed_from,
        "best_epoch": trainer.best_epoch,
        "history": [asdict(r) for r in trainer.history],
        "processes": world.size,
        "batch_size": settings.batch_size,
        "global_batch": settings.batch_size * world.size,
        "steps_per_epoch": trainer.steps_per_epoch,
        "device": str(settings.device),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _save(trainer: Trainer, request: FinetuneRequest, info: CheckpointInfo, best_state: dict) -> None:
    """The state first, then the checkpoint: a run killed between them resumes from the state alone."""
    tensors, record = trainer.state()
    record["checkpoint"] = json_of(info)
    save_state(state_path(request.out), tensors, record)
    summary = {
        "epoch": trainer.epoch,
        "best_epoch": trainer.best_epoch,
        "config": asdict(request.config),
        "global_batch": trainer.settings.batch_size * trainer.world.size,
        "history": record["history"],
    }
    best = copy.deepcopy(request.loaded.model)  # the caller's plain model, not the trainer's (DDP-ready) one
    best.load_state_dict(best_state)
    save_checkpoint(request.out, best, replace(info, extra={**request.extra, "finetune": summary}))


def json_of(info: CheckpointInfo) -> dict[str, Any]:
    """The part of a checkpoint record that identifies the model: base SPEC, input shape, edits."""
    return {"base": info.base.to_dict(), "input_shape": list(info.input_shape), "edits": info.edits}


def _restore(trainer: Trainer, request: FinetuneRequest, info: CheckpointInfo) -> dict[str, torch.Tensor]:
    """Load the state beside ``--out`` into ``trainer``; returns the best epoch's weights."""
    path = state_path(request.out)
    tensors, record = read_state(path)
    _check_compatible(record, trainer, request, info, path)
    trainer.restore(tensors, record)
    if trainer.best_epoch == trainer.epoch:
        return copy.deepcopy(trainer.model.state_dict())
    if trainer.best_epoch == 0:  # no epoch beat the starting model: that is the best
        return {k: v.to(trainer.device).clone() for k, v in request.loaded.model.state_dict().items()}
    if not request.out.is_file():
        raise InputError(f"--resume: the checkpoint {request.out} is missing; its state {path} cannot stand alone")
    saved = read_checkpoint_info(request.out).extra.get("finetune") or {}
    if saved.get("best_epoch") != trainer.best_epoch:
        raise InputError(
            f"--resume: {request.out} holds epoch {saved.get('best_epoch')} but the state's best epoch is "
            f"{trainer.best_epoch}; the two files are from different runs"
        )
    return {k: v.to(trainer.device) for k, v in read_checkpoint_tensors(request.out).items()}


def _check_compatible(
    record: dict[str, Any], trainer: Trainer, request: FinetuneRequest, info: CheckpointInfo, path: Path
) -> None:
    """Refuse a state made for another model or another run's settings (the result would differ)."""
    if record.get("checkpoint") != json.loads(json.dumps(json_of(info))):
        raise InputError(f"--resume: {path} was made for another model (its base SPEC or edits differ)")
    expected = {
        "epochs": (record["config"]["epochs"], request.config.epochs),
        "--lr": (record["config"]["lr"], request.config.lr),
        "--steps-per-epoch": (record["config"].get("steps_per_epoch"), request.config.steps_per_epoch),
        "--seed": (record["seed"], trainer.settings.seed),
        "global batch (--batch-size × processes)": (
            record["batch_size"] * record["world_size"],
            trainer.settings.batch_size * trainer.world.size,
        ),
    }
    for name, (saved, given) in expected.items():
        if saved != given:
            raise InputError(f"--resume: {path} was made with {name} {saved}, this run has {given}; use the same")


def spec_arguments(spec: ModelSpec) -> list[str]:
    """The command-line words that name ``spec`` with its options."""
    words = [spec.text()]
    if spec.kind == "checkpoint":
        return words
    if spec.num_classes is not None:
        words += ["--num-classes", str(spec.num_classes)]
    if spec.weights is not None:
        words += ["--weights", spec.weights]
    if isinstance(spec.input_size, tuple):
        words += ["--input-size", "x".join(str(v) for v in spec.input_size)]
    elif spec.input_size is not None:
        words += ["--input-size", str(spec.input_size)]
    return words


def torchrun_command(
    model: ModelSpec,
    data: str,
    out: str | Path,
    config: FinetuneConfig,
    settings: RunSettings,
    nproc_per_node: int,
    nnodes: int = 1,
    rendezvous: str | None = None,
    keep_global_batch: bool = True,
    device: str | None = None,
) -> list[str]:
    """The ``torchrun`` command that runs this fine-tuning on ``nnodes`` × ``nproc_per_node`` processes.

    With ``keep_global_batch`` each process gets ``ceil(batch / processes)`` images, so the global
    batch (and the learning rate that suits it) stays that of ``settings``; otherwise every process
    takes ``settings.batch_size``. Several nodes need ``rendezvous`` (``HOST:PORT`` of the first node);
    the command is the same on every node. ``device`` is the ``--device`` word (default: cuda or
    cpu, from ``settings``; ``auto`` lets each node choose). Join the words with ``shlex.join`` to show them.
    """
    if nproc_per_node < 1 or nnodes < 1:
        raise InputError("a cluster run needs at least one node and one process per node")
    if nnodes > 1 and not rendezvous:
        raise InputError("a run on several nodes needs the rendezvous address HOST:PORT of the first node")
    processes = nproc_per_node * nnodes
    batch = math.ceil(settings.batch_size / processes) if keep_global_batch else settings.batch_size
    words = ["torchrun", "--nproc-per-node", str(nproc_per_node)]
    if nnodes > 1:
        words += ["--nnodes", str(nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", str(rendezvous)]
    words += ["-m", "secateur.app.cli", "finetune", *spec_arguments(model), "--data", data]
    words += ["--epochs", str(config.epochs), "--lr", repr(config.lr), "--batch-size", str(batch)]
    if config.steps_per_epoch is not None:
        words += ["--steps-per-epoch", str(config.steps_per_epoch)]
    words += ["--num-workers", str(settings.num_workers), "--seed", str(settings.seed)]
    device = device or ("cuda" if settings.device.type == "cuda" else "cpu")
    words += ["--device", device, "--out", str(out)]
    return words


def torchrun_text(words: list[str]) -> str:
    """The command as one line a shell reads back exactly."""
    return shlex.join(words)
