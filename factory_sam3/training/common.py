"""What both training stages share: a free port for DDP, per-step seeding, checkpoint files and SLURM jobs.

Stage 1's loop is sam3's Trainer (training.stage1), Stage 2's is ours (training.stage2); both write their
resumable checkpoints with ``save_checkpoint`` (a kill mid-write leaves the previous one intact) and read them
with ``load_checkpoint`` (tensors only: ``weights_only=True``), and both go to SLURM the same way:
``run_on_slurm`` with the section's ``LaunchSettings``, one task per GPU; ``SlurmTask`` gives each task its
rank in the usual ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` variables.
"""

from __future__ import annotations

import os
import random
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from factory_sam3.config import Invalid, params_file
from factory_sam3.errors import UserError
from factory_sam3.io import atomic_file, load_torch_file


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (the DDP rendezvous of one node)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed_torch(*parts: int) -> None:
    """Seed torch from a tuple (seed, step, micro-step, rank): a resumed run replays the same random draws."""
    import torch

    torch.manual_seed(int(np.random.SeedSequence(list(parts)).generate_state(1)[0]))


def progress_line(stage: str, done: int, total: int, seconds_per_step: float, values: str) -> str:
    """The progress line every training loop prints: ``<stage>: step 40/100  loss 0.12  0.52 s/step  ETA 0:31``
    (no total or no rate yet: no ETA)."""
    line = f"{stage}: step {done}{f'/{total}' if total else ''}  {values}  {seconds_per_step:.2f} s/step"
    if total and seconds_per_step:
        eta = max(0, int(seconds_per_step * (total - done)))
        line += f"  ETA {eta // 60}:{eta % 60:02d}"
    return line


def save_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file, fsync, rename: the previous checkpoint stays valid until the rename."""
    import torch

    with atomic_file(path, "wb") as handle:
        torch.save(obj, handle)


def load_checkpoint(path: str | os.PathLike) -> Any:
    """A checkpoint written by ``save_checkpoint``; an unreadable file is a clear error naming it (delete it to
    start over), never a silent restart from step 0."""
    return load_torch_file(path, "unreadable training checkpoint", "; delete it to start this run over")


# ------------------------------------------------------------------------------------------------ SLURM

SLURM_PORT_RANGE = (10000, 65000)  # the rendezvous port on the job's first node (sam3's launcher range)


@dataclass(frozen=True)
class LaunchSettings:
    """The keys ``train_stage1`` and ``train_stage2`` share for how a run is launched: processes per node, and
    whether and where it goes to SLURM. Both sections' typed settings inherit these."""

    num_gpus: int  # processes (GPUs) per node; > 1 = DDP
    use_cluster: bool  # submit to SLURM through submitit
    num_nodes: int  # SLURM nodes
    partition: str | None
    account: str | None
    qos: str | None
    timeout_hour: int
    cpus_per_task: int
    mem_gb: int | None  # None: the cluster's default

    @property
    def world_size(self) -> int:
        return self.num_gpus * (self.num_nodes if self.use_cluster else 1)

    def check_launch(self) -> None:
        for key in ("num_gpus", "num_nodes", "timeout_hour", "cpus_per_task"):
            if getattr(self, key) < 1:
                raise Invalid(key, f"must be an integer >= 1, got {getattr(self, key)!r}")
        if self.mem_gb is not None and self.mem_gb < 1:
            raise Invalid("mem_gb", f"must be null (the cluster's default) or an integer >= 1, got {self.mem_gb!r}")


class SlurmTask:
    """What submitit runs on every task of the job: sets the DDP rendezvous from the SLURM job environment,
    then calls ``entry(*args)``, which reads its rank from the environment. Preempted or timed out, the job
    is requeued and the entry resumes from its own checkpoint."""

    def __init__(self, entry: Callable[..., Any], *args: Any, port: int | None = None):
        self.entry, self.args = entry, args
        self.port = port or random.randint(*SLURM_PORT_RANGE)

    def __call__(self) -> Any:
        import submitit

        env = submitit.JobEnvironment()
        os.environ.update(
            MASTER_ADDR=env.hostnames[0],
            MASTER_PORT=str(self.port),
            RANK=str(env.global_rank),
            LOCAL_RANK=str(env.local_rank),
            WORLD_SIZE=str(env.num_tasks),
        )
        return self.entry(*self.args)

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def run_on_slurm(task: SlurmTask, stage: str, run_dir: Path, options: LaunchSettings) -> list[Any]:
    """Submit ``task`` as one SLURM job (one task per GPU on each node), say so, wait for it and return what
    every task returned. A failed task is one error with its last line (the job's own error: a UserError's
    message, say) and the folder of its logs, not submitit's traceback.

    Without ``sbatch`` on this machine, submitit's AutoExecutor runs the job locally (how the tests run it)."""
    from submitit.core.utils import UncompletedJobError

    job = _submit(task, stage, run_dir, options)
    try:
        return job.results()
    except UncompletedJobError as err:  # also FailedJobError: the job raised, ran out of time or was killed
        cause = job_error(str(err))
        raise UserError(
            f"{stage}: SLURM job {job.job_id} failed: {cause} (its logs: {job.paths.folder})", run_dir
        ) from None


def job_error(report: str) -> str:
    """The exception line of the job's traceback in submitit's report (a UserError: its message alone); without
    one (the job was killed or timed out), the report's first line."""
    raised = re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)): (.*)$", report, re.MULTILINE)
    if not raised:
        return report.strip().splitlines()[0] if report.strip() else "no report"
    kind, message = raised[-1]
    return message if kind.endswith("UserError") else f"{kind.rsplit('.', 1)[-1]}: {message}"


def _submit(task: SlurmTask, stage: str, run_dir: Path, options: LaunchSettings):
    import submitit

    folder = Path(run_dir) / "submitit_logs"
    executor = submitit.AutoExecutor(folder=str(folder))
    extra = {key: value for key, value in (("account", options.account), ("qos", options.qos)) if value}
    parameters = dict(
        timeout_min=60 * options.timeout_hour,
        name=stage,
        slurm_partition=options.partition,
        gpus_per_node=options.num_gpus,
        tasks_per_node=options.num_gpus,
        cpus_per_task=options.cpus_per_task,
        nodes=options.num_nodes,
        slurm_additional_parameters=extra,
    )
    if options.mem_gb:
        parameters["mem_gb"] = options.mem_gb
    executor.update_parameters(**parameters)
    job = executor.submit(task)
    kind = "SLURM" if type(job).__name__.startswith("Slurm") else "local (no SLURM here)"
    print(f"{stage}: submitted {kind} job {job.job_id}; waiting for it (logs: {folder})", file=sys.stderr, flush=True)
    return job


def rank_from_environment() -> tuple[int, int]:
    """(global rank, local rank) of this process, as ``SlurmTask`` (or torchrun) set them."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))


def require_visible_gpus(settings: LaunchSettings, device: str, section: str) -> None:
    """A local run on GPUs needs ``num_gpus`` of them visible here (a SLURM job gets its own on its nodes)."""
    if not device.startswith("cuda") or settings.use_cluster:
        return
    import torch

    visible = torch.cuda.device_count()
    if settings.num_gpus > visible:
        raise UserError(
            f"'{section}.num_gpus' is {settings.num_gpus} but {visible} GPU(s) are visible", params_file(settings)
        )
