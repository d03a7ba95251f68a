"""The output folder's state: the job id, the resume manifest, and the order of every write.

It lives in ``DIR/.upscale-stream/``: ``job.json`` (the job id, so a rerun into the same
folder is the same job and derives the same taskUUIDs), ``manifest.jsonl`` and
``summary.json``. Each manifest line::

    {"input": "/abs/photo.png", "options": "3f0c...", "output": "photo.jpg",
     "taskUUID": "...", "cost": 0.0021, "bytesIn": 48211, "bytesOut": 190523,
     "sha256": "9e1c...", "finishedAt": "2025-01-01T12:00:00Z"}

``input`` is the absolute path, URL or UUID; ``options`` a digest of every task field except
``taskUUID`` and ``inputImage``, so changing an option (format, factor, model, settings...) runs
the input again. An input is done when a line with the same input, options digest and output
exists *and* the output file is still there. Only successes are recorded; failed and
interrupted inputs are tried again by the next run. A line cut short by a crash is ignored.
The API key is never written here.

**The order of a write** (:meth:`ManifestWriter.commit`), so that a ``kill -9`` at any point
loses nothing and redoes nothing:

1. the bytes go to ``.<name>.<taskUUID>.part`` next to the output (mode ``0666 & ~umask``,
   so 0644 under umask 022, like any file the user creates; not mkstemp's 0600);
2. the manifest line, with the bytes' SHA-256, is appended and flushed;
3. the part file is renamed onto the output.

A kill before 2 leaves a part file and no line: the rerun deletes the part file and sends the
task again under the same taskUUID (the server already knows it, so nothing runs twice). A kill
between 2 and 3 leaves a line and a complete part file: the rerun finishes the rename
(:func:`recover_outputs`) and sends nothing. No ``.part`` file survives the start of a rerun
(:func:`remove_part_files`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any, Self

import orjson

from ..jobs import check_job_id, new_job_id
from .errors import UsageError

__all__ = [
    "JOB_FILE",
    "MANIFEST_FILE",
    "STATE_DIR",
    "SUMMARY_FILE",
    "Entry",
    "ManifestWriter",
    "is_done",
    "job_id_for",
    "options_digest",
    "part_path",
    "read_manifest",
    "recover_outputs",
    "remove_part_files",
    "write_file_atomic",
]

STATE_DIR = ".upscale-stream"
"""The folder inside the output folder that holds the job id, the manifest and the summary."""
MANIFEST_FILE = "manifest.jsonl"
SUMMARY_FILE = "summary.json"
JOB_FILE = "job.json"
PART_SUFFIX = ".part"

_FILE_MODE = 0o666  # the process umask takes its bits off, as for any file the user creates

_NOT_OPTIONS = frozenset({"taskUUID", "inputImage"})


def options_digest(task_wire: Mapping[str, Any]) -> str:
    """A short, stable digest of a task's options (every wire field but the UUID and input)."""
    fields = {name: value for name, value in task_wire.items() if name not in _NOT_OPTIONS}
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Entry:
    """One finished task, as a manifest line.

    Attributes:
        input: The source's key: absolute path, URL or UUID.
        options: :func:`options_digest` of the task.
        output: The output file, relative to the output folder (POSIX separators).
        task_uuid: The task's UUID.
        cost: The task's cost in USD, when ``includeCost`` was asked for.
        bytes_in: The input file's size, when it is a local file.
        bytes_out: The output file's size.
        finished_at: When the output was written (ISO 8601, UTC).
        sha256: The output bytes' SHA-256 (hex), so a rerun can check a part file left by a
            kill between the manifest line and the rename; empty in lines of older versions.
    """

    input: str
    options: str
    output: str
    task_uuid: str
    cost: float | None
    bytes_in: int | None
    bytes_out: int
    finished_at: str
    sha256: str = ""

    def to_line(self) -> bytes:
        """The entry as one JSON line, newline included."""
        return orjson.dumps(
            {
                "input": self.input,
                "options": self.options,
                "output": self.output,
                "taskUUID": self.task_uuid,
                "cost": self.cost,
                "bytesIn": self.bytes_in,
                "bytesOut": self.bytes_out,
                "sha256": self.sha256,
                "finishedAt": self.finished_at,
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )

    @classmethod
    def from_line(cls, line: bytes) -> Entry | None:
        """Read one line; ``None`` for a line that is damaged or not an entry."""
        try:
            item = orjson.loads(line)
            entry = cls(
                input=item["input"],
                options=item["options"],
                output=item["output"],
                task_uuid=item["taskUUID"],
                cost=item.get("cost"),
                bytes_in=item.get("bytesIn"),
                bytes_out=item["bytesOut"],
                finished_at=item.get("finishedAt", ""),
                sha256=item.get("sha256") or "",
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        texts = (entry.input, entry.options, entry.output, entry.task_uuid, entry.sha256)
        if not all(isinstance(v, str) for v in texts):
            return None
        return entry


def read_manifest(path: Path) -> dict[tuple[str, str], Entry]:
    """The entries of a manifest by ``(input, options)``; later lines win.

    A missing file is an empty manifest; damaged lines (a crash mid-write) are skipped.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    entries: dict[tuple[str, str], Entry] = {}
    for line in raw.splitlines():
        entry = Entry.from_line(line) if line.strip() else None
        if entry is not None:
            entries[(entry.input, entry.options)] = entry
    return entries


def is_done(
    entries: Mapping[tuple[str, str], Entry],
    key: str,
    options: str,
    output: PurePosixPath,
    out_dir: Path,
) -> bool:
    """Whether ``key`` was already upscaled with these options into ``output``, still present."""
    entry = entries.get((key, options))
    return entry is not None and entry.output == str(output) and (out_dir / output).is_file()


class ManifestWriter:
    """Appends entries to a manifest, one flushed line each. Use it as a context manager.

    Args:
        path: The manifest file (its folder is created).
        fresh: Start an empty manifest instead of appending to an existing one.
    """

    def __init__(self, path: Path, *, fresh: bool = False) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._fresh = fresh
        self._lock = threading.Lock()  # commit() runs in writer threads

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("wb" if self._fresh else "ab")
        if handle.tell() > 0 and not _ends_with_newline(self.path):
            handle.write(b"\n")  # end a line cut short by a crash, so the next one stays whole
        self._file = handle
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def append(self, entry: Entry) -> None:
        """Write ``entry`` as one line and flush it to the operating system.

        Raises:
            OSError: the line could not be written (a full disk): nothing of it is kept.
        """
        with self._lock:
            if self._file is None:
                raise RuntimeError("the manifest is not open: use 'with ManifestWriter(...)'")
            line = entry.to_line()
            try:
                self._file.write(line)
                self._file.flush()
            except OSError:
                self._drop_partial_line()
                raise

    def _drop_partial_line(self) -> None:
        # A failed flush may leave part of the line in the buffer or on disk; reopen and cut
        # the file back to its last newline so the next line stays whole.
        assert self._file is not None
        with contextlib.suppress(OSError):
            self._file.close()
        self._file = self.path.open("ab")
        with self.path.open("r+b") as handle:
            raw = handle.read()
            handle.truncate(raw.rfind(b"\n") + 1)

    def commit(self, out_dir: Path, entry: Entry, content: bytes) -> None:
        """Write ``content`` as ``entry.output``: part file, then the manifest line, then the
        rename (the order the module docstring explains). Safe to call from several threads.

        ``entry.sha256`` and ``entry.bytes_out`` are filled in here.

        Raises:
            OSError: a step failed (a full disk, a folder where the file should go); the part
                file is removed, and the line is written only if the part file is complete.
        """
        target = out_dir / entry.output
        part = out_dir / part_path(PurePosixPath(entry.output), entry.task_uuid)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():  # the rename would fail after the line: fail before it instead
            raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(target))
        recorded = dataclasses.replace(
            entry, sha256=hashlib.sha256(content).hexdigest(), bytes_out=len(content)
        )
        try:
            _write_new_file(part, content)
            self.append(recorded)
            os.replace(part, target)
        except BaseException:
            part.unlink(missing_ok=True)
            raise


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


# -- the job id ------------------------------------------------------------------------------


def job_id_for(state_dir: Path, *, new_job: bool) -> tuple[str, bool]:
    """The output folder's job id: the one in ``job.json``, or a new one written there.

    Args:
        state_dir: ``DIR/.upscale-stream`` (created when the id is written).
        new_job: Start a new job even if the folder has one.

    Returns:
        The job id and whether it is new.

    Raises:
        UsageError: ``job.json`` exists but holds no usable job id.
    """
    path = state_dir / JOB_FILE
    if not new_job:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            pass
        else:
            try:
                return check_job_id(orjson.loads(raw)["jobId"]), False
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                raise UsageError(
                    f"{path}: not a job file of upscale-stream; remove it or pass --new-job"
                ) from None
    job_id = new_job_id()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    body = orjson.dumps({"jobId": job_id, "createdAt": created}, option=orjson.OPT_INDENT_2)
    write_file_atomic(path, body + b"\n")
    return job_id, True


# -- files: permissions, part files, recovery ------------------------------------------------


def part_path(output: PurePosixPath, task_uuid: str) -> PurePosixPath:
    """Where the bytes of ``output`` are written before the rename (hidden, next to it)."""
    return output.with_name(f".{output.name}.{task_uuid}{PART_SUFFIX}")


def write_file_atomic(path: Path, content: bytes) -> Path:
    """Write ``content`` to ``path`` through a part file and a rename, with the usual mode.

    The file gets ``0666 & ~umask`` (0644 under umask 022), as ``open()`` would give it.

    Raises:
        OSError: the write failed; no part file is left.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{PART_SUFFIX}")
    try:
        _write_new_file(part, content)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return path


def recover_outputs(entries: Mapping[tuple[str, str], Entry], out_dir: Path) -> int:
    """Finish the renames that a kill between a manifest line and its rename left undone.

    A part file is moved into place only when its size and SHA-256 match the line.

    Returns:
        How many outputs were recovered.
    """
    recovered = 0
    for entry in entries.values():
        target = out_dir / entry.output
        if not entry.sha256 or target.exists():
            continue
        part = out_dir / part_path(PurePosixPath(entry.output), entry.task_uuid)
        try:
            content = part.read_bytes()
        except OSError:
            continue
        if len(content) == entry.bytes_out and hashlib.sha256(content).hexdigest() == entry.sha256:
            os.replace(part, target)
            recovered += 1
    return recovered


def remove_part_files(out_dir: Path) -> int:
    """Delete every part file a killed run left in ``out_dir`` (hidden ``.*.part`` files).

    Returns:
        How many were deleted.
    """
    removed = 0
    if not out_dir.is_dir():
        return 0
    for folder, _subfolders, files in os.walk(out_dir):
        for name in files:
            if name.startswith(".") and name.endswith(PART_SUFFIX):
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
    return removed


def _write_new_file(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
