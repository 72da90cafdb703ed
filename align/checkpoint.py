"""Atomic, optionally asynchronous checkpoints with a `latest` pointer and retention.

A checkpoint is a directory `step-XXXXXXXX` under a run's checkpoint root. It is written under a
temporary name, fsynced, then renamed; only after the rename is the `latest` file replaced
(itself written to a temporary file and renamed). A crash at any moment therefore leaves `latest`
naming a complete checkpoint, and stray temporary directories are ignored and swept on the next
save. What goes inside the directory is the caller's: a `write(directory)` callback.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from align.errors import InputError

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
"""Every training command (pretrain, sft, rm, ppo) keeps its resumable state in
`<output_dir>/checkpoints`: a re-run with the same output_dir continues from there."""
LATEST = "latest"
TMP_SUFFIX = ".tmp"
META = "checkpoint.json"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _discard(checkpoint: Path) -> None:
    """Delete a checkpoint so that a kill midway leaves a swept `.tmp`, never a half-deleted step."""
    doomed = checkpoint.with_name(checkpoint.name + ".old" + TMP_SUFFIX)
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(checkpoint, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


class CheckpointManager:
    """Saves checkpoints atomically under `root`, keeps the last `keep`, and finds `latest`.

    `save(step, write, meta, blocking=False)` runs `write(tmp_dir)` on a background thread (one at a
    time, in order), so training goes on while the files are written. Callers must hand `write`
    tensors that training will not change afterwards (e.g. CPU copies of the state dicts).
    """

    def __init__(self, root: str | Path, keep: int = 3, protect: Callable[[dict], bool] | None = None):
        self.root = Path(root)
        self.keep = keep
        self.protect = protect or (lambda meta: False)
        self.root.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None
        self._lock = threading.Lock()

    def save(self, step: int, write: Callable[[Path], None], meta: dict, blocking: bool = False) -> Future:
        """Write checkpoint `step` with `write(directory)`; returns a future of its final path."""
        with self._lock:
            self._pending = self._pool.submit(self._save, step, write, dict(meta, step=step))
            future = self._pending
        if blocking:
            future.result()
        return future

    def _save(self, step: int, write: Callable[[Path], None], meta: dict) -> Path:
        final = self.root / checkpoint_name(step)
        tmp = self.root / (final.name + TMP_SUFFIX)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
        (tmp / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        _fsync_tree(tmp)
        if final.exists():
            _discard(final)
        os.replace(tmp, final)
        _write_atomically(self.root / LATEST, final.name)
        self._prune()
        log.info("checkpoint %s written", final)
        return final

    def wait(self) -> None:
        """Block until the checkpoint being written (if any) is complete; re-raise its error."""
        with self._lock:
            pending = self._pending
        if pending is not None:
            pending.result()

    def close(self) -> None:
        self.wait()
        self._pool.shutdown(wait=True)

    def _prune(self) -> None:
        for stray in self.root.glob(f"*{TMP_SUFFIX}"):
            if stray.is_dir():
                shutil.rmtree(stray, ignore_errors=True)
        complete = self.list()
        for old in complete[: max(0, len(complete) - self.keep)]:
            if not self.protect(read_meta(old)):
                _discard(old)

    def rewind(self, checkpoint: Path | None) -> list[Path]:
        """Make `checkpoint` the latest again (None: no checkpoint); later ones move to `superseded/`.

        For restarting a run from an earlier point (e.g. a phase boundary): the abandoned branch is
        kept for inspection but no longer counts for `latest` or retention. Returns the moved paths.
        """
        self.wait()
        later = [p for p in self.list() if checkpoint is None or p.name > Path(checkpoint).name]
        aside = self.root / "superseded"
        moved = []
        for path in later:
            aside.mkdir(exist_ok=True)
            target = aside / path.name
            shutil.rmtree(target, ignore_errors=True)
            os.replace(path, target)
            moved.append(target)
        if checkpoint is None:
            (self.root / LATEST).unlink(missing_ok=True)
        else:
            _write_atomically(self.root / LATEST, Path(checkpoint).name)
        return moved

    def list(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        return sorted(
            p for p in self.root.glob("step-*") if not p.name.endswith(TMP_SUFFIX) and (p / META).is_file()
        )

    def latest(self) -> Path | None:
        """The checkpoint `latest` names, or None before the first save."""
        pointer = self.root / LATEST
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text(encoding="utf-8").strip()
        if not (path / META).is_file():
            raise InputError(f"{pointer} names {path.name}, which is not a complete checkpoint")
        return path


def read_meta(checkpoint: str | Path) -> dict:
    """The metadata (step and whatever the caller stored) of a complete checkpoint."""
    return json.loads((Path(checkpoint) / META).read_text(encoding="utf-8"))


def save_pretrained_atomically(path: Path, model, tokenizer, state_dict: dict | None = None) -> None:
    """`save_pretrained` of a model and its tokenizer under a temporary name, renamed over `path`
    when complete: a reader never sees half a model directory. `state_dict`: the weights to write
    instead of the model's own (the gathered whole of a sharded model)."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def rng_state() -> dict:
    """Every random generator a training process draws from: Python, NumPy, torch (and CUDA's)."""
    import random

    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` took (CUDA's only where this process has CUDA)."""
    import random

    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def cpu_copy(value):
    """A deep copy on the CPU (tensors cloned, containers rebuilt), so training can go on while
    a checkpoint thread writes it."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: cpu_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(cpu_copy(v) for v in value)
    return value
