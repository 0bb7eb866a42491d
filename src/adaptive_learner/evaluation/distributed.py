"""Data-parallel training under ``accelerate launch``, with the same code path as one process.

``accelerate launch --multi_gpu --num_processes 2 -m adaptive_learner.cli run seed ...`` starts one
process per GPU (on a machine without CUDA, one per CPU worker, joined over gloo); each builds the same plan of batches from the same seed, trains on its
shard of every batch, and ``accelerate`` averages the LoRA gradients (DDP). Evaluation runs in
every process on the same weights; only the main process writes results.
"""

from __future__ import annotations

import os
from typing import Any


def maybe_accelerator() -> Any | None:
    """An ``accelerate.Accelerator`` when launched with several processes, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import Accelerator

    # without CUDA, cpu=True makes accelerate use gloo across the launched CPU processes
    return Accelerator(cpu=not torch.cuda.is_available())


def is_main_process(accelerator: Any | None) -> bool:
    """True in a single-process run, and in the main process of a launched one."""
    return accelerator is None or bool(accelerator.is_main_process)
