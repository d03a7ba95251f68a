"""The resume manifest: one JSON line per finished task, so a rerun skips what is done.

It lives at ``DIR/.upscale-stream/manifest.jsonl``, next to ``summary.json``. Each line::

    {"input": "/abs/photo.png", "options": "3f0c...", "output": "photo.jpg",
     "taskUUID": "...", "cost": 0.0021, "bytesIn": 48211, "bytesOut": 190523,
     "finishedAt": "2025-01-01T12:00:00Z"}

``input`` is the absolute path, URL or UUID; ``options`` a digest of every task field except
``taskUUID`` and ``inputImage``, so changing an option (format, factor, model, settings...) runs
the input again. A line is appended, and flushed, only after the output file was renamed into
place: an input is done when a line with the same input, options digest and output exists *and*
the output file is still there. Only successes are recorded; failed and interrupted inputs are
tried again by the next run. A line cut short by a crash is ignored. The API key is never
written here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any, Self

import orjson

__all__ = [
    "MANIFEST_FILE",
    "STATE_DIR",
    "SUMMARY_FILE",
    "Entry",
    "ManifestWriter",
    "is_done",
    "options_digest",
    "read_manifest",
]

STATE_DIR = ".upscale-stream"
"""The folder inside the output folder that holds the manifest and the summary."""
MANIFEST_FILE = "manifest.jsonl"
SUMMARY_FILE = "summary.json"

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
    """

    input: str
    options: str
    output: str
    task_uuid: str
    cost: float | None
    bytes_in: int | None
    bytes_out: int
    finished_at: str

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
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        if not all(isinstance(v, str) for v in (entry.input, entry.options, entry.output)):
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
        """Write ``entry`` as one line and flush it to the operating system."""
        if self._file is None:
            raise RuntimeError("the manifest is not open: use 'with ManifestWriter(...)'")
        self._file.write(entry.to_line())
        self._file.flush()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"
