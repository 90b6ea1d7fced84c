"""Crash-safe checkpoint files.

A checkpoint is one safetensors file: every tensor of the training state, named by its
place in it (``model/0.weight``, ``optimizer/state/0/exp_avg``), and in the header's
metadata the rest (counters, history, param groups), which ``torch.load(weights_only=True)``
reads: no pickled code ever runs. Beside it, ``<name>.manifest.json`` records its size and
sha256. Both are written to a temporary name, fsynced and renamed, so a crash mid-write
never damages an earlier checkpoint, and a file whose manifest is missing or does not
match is never loaded by ``latest``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pickle
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from trainwell.errors import CheckpointError
from trainwell.statetree import join, walk

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


class StagedFile:
    """What ``write(file_object)`` writes, in a temporary file beside ``path``: in the page
    cache, not yet durable or visible. ``commit()`` fsyncs it and renames it into place."""

    def __init__(self, path: Path, write: Callable[[Any], Any]) -> None:
        self.path = path
        fd, self._tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        self._file = os.fdopen(fd, "wb")
        try:
            os.fchmod(fd, FILE_MODE)
            write(self._file)
            self._file.flush()
        except BaseException:
            self._discard()
            raise

    def commit(self, sync_dir: bool = True) -> Path:
        """fsync, rename into place, and (unless a later rename's will do) fsync the directory."""
        try:
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self._discard()
            raise
        if sync_dir:
            _fsync_dir(self.path.parent)
        return self.path

    def _discard(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # the write already failed; that is the error to report
        Path(self._tmp).unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, fsync, then rename."""
    StagedFile(path, write).commit()


FORMAT = "trainwell-checkpoint/2"
# torch dtype -> safetensors dtype; tensors of other dtypes stay with the plain data
_SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _split(state: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[torch.Tensor]]:
    """The state without its tensors (each replaced by None, its path and name recorded),
    the tensors' names, and the tensors."""
    names: list[str] = []
    places: list[tuple[tuple, str]] = []
    tensors: list[torch.Tensor] = []
    used: set[str] = set()

    def take(path: tuple, tensor: torch.Tensor) -> Any:
        if tensor.dtype not in _SAFETENSORS_DTYPES or tensor.layout != torch.strided:
            return tensor  # rare (a numpy RNG's uint32 words): torch.save keeps it with the plain data
        name = "/".join(map(str, path))
        if name in used:  # keys that contain "/" could collide
            name = f"{name}#{len(names)}"
        used.add(name)
        names.append(name)
        places.append((path, name))
        tensors.append(tensor)
        return None

    rest = walk(state, take)
    return {"state": rest, "tensors": places}, names, tensors


def _bytes_of(tensor: torch.Tensor) -> Any:
    """A tensor's bytes in memory order (a view where it is already contiguous on the CPU)."""
    tensor = tensor.detach().cpu().contiguous().resolve_neg()
    return tensor.reshape(-1).view(torch.uint8).numpy()


def _encode(state: dict[str, Any]) -> list[Any]:
    """The pieces of a checkpoint file, in order: safetensors' 8-byte header length, its JSON
    header (tensor table, plain data in the metadata), then each tensor's bytes. The tensor
    bytes are views of the live tensors where possible, so they must be written before
    training goes on; no copy of the whole state is made (torch.save's pickling of each
    tensor was most of a checkpoint's time on the training thread)."""
    rest, names, tensors = _split(state)
    plain = io.BytesIO()
    torch.save(rest, plain)
    header: dict[str, Any] = {"__metadata__": {"format": FORMAT, "state": base64.b64encode(plain.getvalue()).decode()}}
    data = [_bytes_of(tensor) for tensor in tensors]
    offset = 0
    for name, tensor, raw in zip(names, tensors, data):
        header[name] = {"dtype": _SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + raw.nbytes]}
        offset += raw.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # tensor data starts 8-byte aligned
    return [struct.pack("<Q", len(encoded)), encoded, *data]


class StagedCheckpoint:
    """A state written to a temporary file beside ``path``: hashed and handed to the kernel,
    not yet durable or visible. ``commit()`` makes it both.

    Staging is the CPU work (encoding, sha256, copying into the page cache) and runs on the
    caller's thread, so the file holds the state of that moment; committing is mostly
    waiting for the disk (fsyncs, renames) and can run on a background thread without
    taking a CPU core from training.
    """

    def __init__(self, state: dict[str, Any], path: Path) -> None:
        self.path = path
        pieces = _encode(state)
        digest = hashlib.sha256()
        for piece in pieces:
            digest.update(piece)
        size = sum(memoryview(piece).nbytes for piece in pieces)
        self.manifest = json.dumps({"file": path.name, "size": size, "sha256": digest.hexdigest(), "format": 2},
                                   indent=1).encode()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._data = StagedFile(path, lambda f: f.writelines(pieces))
        except OSError as e:
            raise _write_error(path, e) from e

    def commit(self) -> Path:
        """Make the file durable and visible, then write the manifest (whose rename's
        directory fsync covers both renames)."""
        try:
            self._data.commit(sync_dir=False)
            atomic_write(manifest_path(self.path), lambda f: f.write(self.manifest))
        except OSError as e:
            raise _write_error(self.path, e) from e
        return self.path


def _write_error(path: Path, e: OSError) -> CheckpointError:
    return CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}")


def save(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a state and its manifest atomically; on failure earlier files are intact."""
    return StagedCheckpoint(state, Path(path)).commit()


class BackgroundWriter:
    """Writes checkpoints, their waiting for the disk on a background thread, one at a time.

    On the caller's thread the state is encoded, hashed and copied into a temporary file:
    CPU work, which costs training less there than on a second thread, where it takes a core
    from torch's intra-op threads and the GIL from the loop. The fsyncs and renames,
    which only wait, overlap with training. ``submit`` first waits for the previous write,
    so at most one is in flight and its error surfaces at the next checkpoint or at ``wait()``.
    """

    def __init__(self) -> None:
        self._pool: Any = None
        self._pending: Any = None

    def submit(self, state: dict[str, Any], path: Path, then: Callable[[Path], None] | None = None) -> None:
        self.wait()
        staged = StagedCheckpoint(state, path)
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainwell-checkpoint")
        self._pending = self._pool.submit(self._commit, staged, then)

    @staticmethod
    def _commit(staged: StagedCheckpoint, then: Callable[[Path], None] | None) -> Path:
        written = staged.commit()
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
        with open(path, "rb") as f:
            head = f.read(9)
        state = _load_safetensors(path, map_location) if head[8:] == b"{" else _load_plain(path, map_location)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing checkpoint {path}: it contains pickled objects other than tensors and plain data, "
            "which could run code; only load checkpoints written by trainwell"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(state, dict) or "trainer" not in state:
        raise CheckpointError(f"{path} is not a trainwell checkpoint (no trainer state)")
    return state


def _load_plain(source: Any, map_location: Any) -> Any:
    """Tensors and plain data saved by ``torch.save``, never running pickled code."""
    return torch.load(source, map_location=map_location, weights_only=True)


def _load_safetensors(path: Path, map_location: Any) -> Any:
    """A checkpoint written by ``_encode`` (earlier trainwell versions wrote ``torch.save`` files)."""
    from safetensors import SafetensorError, safe_open

    device = torch.device(map_location) if map_location is not None else torch.device("cpu")
    try:
        with safe_open(path, framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise ValueError(f"not a trainwell checkpoint (format {metadata.get('format')!r})")
            skeleton = _load_plain(io.BytesIO(base64.b64decode(metadata["state"])), device)
            placed = {tuple(where): f.get_tensor(name) for where, name in skeleton["tensors"]}
    except SafetensorError as e:
        raise ValueError(str(e)) from e
    return join(skeleton["state"], placed)


def latest(directory: str | os.PathLike, pattern: str = "*.ckpt") -> Path | None:
    """The newest (highest-named) checkpoint in ``directory`` that matches its manifest, or None."""
    return latest_valid(directory, pattern)[0]


def latest_valid(directory: str | os.PathLike, pattern: str = "*.ckpt") -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest valid checkpoint or None, [(newer checkpoint skipped, why)]).

    Names are zero-padded step numbers, so name order is step order.
    """
    directory = Path(directory)
    skipped: list[tuple[Path, str]] = []
    if not directory.is_dir():
        return None, skipped
    for path in sorted(directory.glob(pattern), reverse=True):
        problem = verify(path)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


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
