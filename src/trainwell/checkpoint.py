"""Crash-safe checkpoint files.

A checkpoint is one ``torch.save`` file holding only tensors and plain data, so it
loads with ``torch.load(weights_only=True)``: no pickled code ever runs. Beside it,
``<name>.manifest.json`` records its size and sha256. Both are written to a temporary
name, fsynced and renamed, so a crash mid-write never damages an earlier checkpoint,
and a file whose manifest is missing or does not match is never loaded by ``latest``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from trainwell.errors import CheckpointError

MANIFEST_SUFFIX = ".manifest.json"


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _default_mode()  # mkstemp makes 0600 files; finished files get the usual permissions


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, fsync, then rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def copy_state(state: Any, reuse: Any = None) -> Any:
    """A private copy of a nested state (dicts, lists, tensors, plain values), taken now.

    Tensors are copied into ``reuse``'s tensors (a previous copy of the same structure)
    where shape, dtype and device match, so repeated copies allocate nothing; others are cloned.
    """
    spare = iter(_tensors(reuse))
    targets: list[torch.Tensor] = []
    sources: list[torch.Tensor] = []

    def copy(value: torch.Tensor) -> torch.Tensor:
        value = value.detach()
        buffer = next(spare, None)
        if buffer is not None and (buffer.shape, buffer.dtype, buffer.device) == (value.shape, value.dtype, value.device):
            targets.append(buffer)
            sources.append(value)
            return buffer
        return value.clone()

    copied = _map_tensors(state, copy)
    if targets:
        torch._foreach_copy_(targets, sources)
    return copied


def _map_tensors(state: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``state`` rebuilt with ``fn(tensor)`` in place of each tensor (depth first, in order)."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: _map_tensors(v, fn) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        if set(map(type, state)) <= _PLAIN:  # e.g. a list of floats: no walk needed
            return list(state) if isinstance(state, list) else state
        return type(state)(_map_tensors(v, fn) for v in state)
    return state


def _tensors(state: Any) -> list[torch.Tensor]:
    """The tensors in a nested state, in the order ``_map_tensors`` visits them."""
    found: list[torch.Tensor] = []
    _map_tensors(state, found.append)
    return found


_PLAIN = {int, float, str, bool, bytes, type(None)}


def serialize(state: dict[str, Any]) -> memoryview:
    """The checkpoint's bytes, taken now (the training state may change right after).

    This runs on the training thread, which holds the GIL anyway; the writer thread then
    only hashes and writes, which release it. torch's own crc32 of each record is
    skipped: the manifest's sha256 covers every byte, and the crc was most of the time
    this takes (3 of 3.7 ms for a 5 MB state).
    """
    buffer = io.BytesIO()
    crc = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(state, buffer)
    finally:
        torch.serialization.set_crc32_options(crc)
    return buffer.getbuffer()


def write(data: memoryview, path: str | os.PathLike) -> Path:
    """Write serialised bytes and their manifest atomically; on failure earlier files are intact."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(data))
        manifest = {"file": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "format": 1}
        atomic_write(manifest_path(path), lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    except OSError as e:
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}") from e
    return path


class BackgroundWriter:
    """Writes checkpoints on a background thread, one at a time.

    The state is serialised on the caller's thread (so it is the state of that moment,
    and the pickling, which holds the GIL, does not fight the training thread for it);
    the sha256, write and fsyncs, which release the GIL, overlap with training.
    ``submit`` first waits for the previous write, so at most one is in flight and its
    error (a full disk, say) surfaces at the next checkpoint or at ``wait()``.
    """

    def __init__(self) -> None:
        self._pool: Any = None
        self._pending: Any = None

    def submit(self, state: dict[str, Any], path: Path, then: Callable[[Path], None] | None = None) -> None:
        self.wait()
        data = serialize(state)
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainwell-checkpoint")
        self._pending = self._pool.submit(self._write, data, path, then)

    @staticmethod
    def _write(data: memoryview, path: Path, then: Callable[[Path], None] | None) -> Path:
        written = write(data, path)
        if then is not None:
            then(written)
        return written

    def wait(self) -> None:
        """Block until the pending write is on disk; raise its error, if any."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()


def verify(path: Path) -> str | None:
    """None when ``path`` matches its manifest, else the reason it does not."""
    mpath = manifest_path(path)
    if not path.is_file():
        return "file is missing"
    if not mpath.is_file():
        return "manifest is missing (the write did not finish)"
    try:
        manifest = json.loads(mpath.read_text())
        size, digest = int(manifest["size"]), str(manifest["sha256"])
    except (ValueError, KeyError, TypeError):
        return "manifest is unreadable"
    if path.stat().st_size != size:
        return f"size is {path.stat().st_size} bytes, manifest says {size} (truncated?)"
    if sha256_of(path) != digest:
        return "sha256 does not match the manifest (corrupted or tampered)"
    return None


def load(path: str | os.PathLike, map_location: Any = "cpu", *, require_manifest: bool = False) -> dict[str, Any]:
    """Load a checkpoint safely: verified against its manifest, unpickled with weights_only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    problem = verify(path)
    if problem is not None and (require_manifest or manifest_path(path).is_file()):
        raise CheckpointError(f"refusing checkpoint {path}: {problem}")
    if problem is not None:
        warnings.warn(f"checkpoint {path} has no manifest; its integrity cannot be checked", stacklevel=2)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing checkpoint {path}: it contains pickled objects other than tensors and plain data, "
            "which could run code; only load checkpoints written by trainwell"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(state, dict) or "trainer" not in state:
        raise CheckpointError(f"{path} is not a trainwell checkpoint (no trainer state)")
    return state


def latest(directory: str | os.PathLike, pattern: str = "*.ckpt") -> Path | None:
    """The newest (highest-named) checkpoint in ``directory`` that matches its manifest.

    Names are zero-padded step numbers, so name order is step order. Bad ones are warned about.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for path in sorted(directory.glob(pattern), reverse=True):
        problem = verify(path)
        if problem is None:
            return path
        warnings.warn(f"skipping checkpoint {path}: {problem}", stacklevel=2)
    return None


def check_model_keys(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """A CheckpointError naming the first differing keys when ``saved`` belongs to a different model."""
    current = model.state_dict()
    missing = [k for k in current if k not in saved]
    unexpected = [k for k in saved if k not in current]
    reshaped = [f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}" for k, v in current.items()
                if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    if missing or unexpected or reshaped:
        parts = [f"{label}: {', '.join(items[:3])}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("shape differs", reshaped)) if items]
        raise CheckpointError("the checkpoint is from a different model; " + "; ".join(parts))
