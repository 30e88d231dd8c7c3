"""What both training stages share: a free port for DDP, per-step seeding and checkpoint files.

Stage 1's loop is sam3's Trainer (training.stage1), Stage 2's is ours (training.stage2); both write their
resumable checkpoints with ``save_checkpoint`` (a kill mid-write leaves the previous one intact) and read them
with ``load_checkpoint`` (tensors only: ``weights_only=True``).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import numpy as np

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


def save_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file, fsync, rename: the previous checkpoint stays valid until the rename."""
    import torch

    with atomic_file(path, "wb") as handle:
        torch.save(obj, handle)


def load_checkpoint(path: str | os.PathLike) -> Any:
    """A checkpoint written by ``save_checkpoint``; an unreadable file is a clear error naming it (delete it to
    start over), never a silent restart from step 0."""
    return load_torch_file(path, "unreadable training checkpoint", "; delete it to start this run over")
