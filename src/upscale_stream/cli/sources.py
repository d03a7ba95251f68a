"""Input discovery and output naming for ``upscale-stream run``.

An INPUT argument is one of:

* a file: sent as is (a file that is not an image fails alone, with its reason; a path that
  does not exist is a usage error, raised before anything starts);
* a folder: every PNG, JPG/JPEG and WEBP file below it, recursively, in sorted order; hidden
  folders and the output folder are skipped;
* an ``http(s)://`` URL or an image UUID: passed to the server as is;
* ``@list.txt``: a text file with one file, folder, URL or UUID per line (blank lines and lines
  starting with ``#`` are ignored; relative paths are relative to the current folder);
* ``-``: the same, read from standard input.

Output names mirror the input tree: a file found in a folder keeps its path relative to that
folder; a file given directly keeps only its name; a URL gives the last segment of its path
(or ``url-<hash>``); a UUID gives itself. The extension is replaced by the output format's, and
an optional suffix goes before it (``photo@2x.jpg``). When two inputs would get the same name
(``a.png`` and ``a.jpg`` both become ``a.jpg``), the later one gets ``-2``, ``-3``... in input
order, which is stable from one run to the next.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TextIO
from urllib.parse import unquote, urlsplit

from ..inputs import is_uuid
from ..jobs import input_key
from .errors import UsageError

__all__ = ["IMAGE_SUFFIXES", "Planned", "Source", "discover", "plan_outputs"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
"""File extensions picked up in folders (any case)."""

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


@dataclass(frozen=True, slots=True)
class Source:
    """One input to upscale.

    Attributes:
        key: Its identity in the resume manifest: the absolute path, the URL or the UUID.
        image: What the client is given: a :class:`~pathlib.Path` for local files, the text
            for URLs and UUIDs.
        stem: The output path relative to the output folder, without extension (``sub/a``).
        size: The file's size in bytes, when it is a local file that exists.
    """

    key: str
    image: Path | str
    stem: PurePosixPath
    size: int | None = None

    @property
    def job_key(self) -> str:
        """The input's key for its taskUUID (:func:`upscale_stream.jobs.input_key`): the
        absolute path, the URL or the UUID, so a rerun from another folder is the same job."""
        return input_key(Path(self.key) if isinstance(self.image, Path) else self.key)


@dataclass(frozen=True, slots=True)
class Planned:
    """An input and the output file it will be written to.

    Attributes:
        source: The input.
        output: The output path relative to the output folder (``sub/a@2x.jpg``).
    """

    source: Source
    output: PurePosixPath


def discover(inputs: Sequence[str], *, stdin: TextIO, exclude: Path | None = None) -> list[Source]:
    """Expand the INPUT arguments into the list of sources, in order, without duplicates.

    Args:
        inputs: The INPUT arguments as typed.
        stdin: Where ``-`` reads its lines from.
        exclude: A folder never to look into (the output folder).

    Returns:
        Every source, first occurrence first.

    Raises:
        UsageError: a path does not exist, a list file cannot be read, a list names another
            list, or nothing at all was found.
    """
    excluded = exclude.resolve() if exclude is not None else None
    seen: set[str] = set()
    found: list[Source] = []
    for argument in inputs:
        for source in _expand_argument(argument, stdin, excluded):
            if source.key not in seen:
                seen.add(source.key)
                found.append(source)
    if not found:
        shown = " ".join(inputs)
        raise UsageError(
            f"INPUT {shown}: no PNG, JPG or WEBP images found "
            "(give files, folders, URLs, @list.txt or - for a list on stdin)"
        )
    return found


def plan_outputs(sources: Iterable[Source], *, extension: str, suffix: str = "") -> list[Planned]:
    """Give every source its output path: ``<stem><suffix>.<extension>``, made unique.

    Args:
        sources: The sources, in input order.
        extension: The output extension without the dot (``jpg``).
        suffix: Text added to every name before the extension (``@2x``).
    """
    taken: set[str] = set()
    planned: list[Planned] = []
    for source in sources:
        base = f"{source.stem}{suffix}"
        candidate = f"{base}.{extension}"
        number = 2
        while candidate.casefold() in taken:
            candidate = f"{base}-{number}.{extension}"
            number += 1
        taken.add(candidate.casefold())
        planned.append(Planned(source, PurePosixPath(candidate)))
    return planned


def _expand_argument(argument: str, stdin: TextIO, exclude: Path | None) -> Iterator[Source]:
    if argument == "-":
        for line in _list_lines(stdin.read().splitlines()):
            yield from _expand_entry(line, exclude, origin="- (stdin)")
        return
    if argument.startswith("@") and len(argument) > 1:
        list_path = Path(argument[1:])
        try:
            text = list_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UsageError(f"INPUT {argument}: cannot read the list: {reason}") from None
        for line in _list_lines(text.splitlines()):
            yield from _expand_entry(line, exclude, origin=argument)
        return
    yield from _expand_entry(argument, exclude, origin=None)


def _list_lines(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            yield entry


def _expand_entry(entry: str, exclude: Path | None, *, origin: str | None) -> Iterator[Source]:
    if origin is not None and (entry == "-" or entry.startswith("@")):
        raise UsageError(f"INPUT {origin}: a list cannot name another list ({entry!r})")
    if _URL_RE.match(entry):
        yield Source(entry, entry, PurePosixPath(_name_from_url(entry)))
        return
    if is_uuid(entry):
        yield Source(entry.lower(), entry, PurePosixPath(entry.lower()))
        return
    path = Path(entry)
    if path.is_dir():
        yield from _walk(path, exclude)
        return
    size = _size(path)
    if size is None and not path.exists():
        where = f"INPUT {entry}" if origin is None else f"INPUT {origin}: {entry}"
        raise UsageError(f"{where}: no such file or folder (check the path; nothing was started)")
    yield Source(str(path.absolute()), path, PurePosixPath(path.stem or "image"), size)


def _walk(root: Path, exclude: Path | None) -> Iterator[Source]:
    """Every image file below ``root``, sorted, skipping hidden folders and ``exclude``."""
    resolved_root = root.resolve()
    if exclude is not None and resolved_root.is_relative_to(exclude):
        return
    found: list[Path] = []
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        subfolders[:] = sorted(
            name
            for name in subfolders
            if not name.startswith(".") and (exclude is None or (here / name).resolve() != exclude)
        )
        found.extend(
            here / name
            for name in files
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES
        )
    for path in sorted(found, key=lambda p: p.relative_to(root).parts):
        relative = path.relative_to(root).with_suffix("")
        stem = PurePosixPath(*relative.parts)
        yield Source(str(path.absolute()), path, stem, _size(path))


def _name_from_url(url: str) -> str:
    path = unquote(urlsplit(url).path)
    name = _safe(PurePosixPath(path).stem) if path.strip("/") else ""
    return name or "url-" + hashlib.sha256(url.encode()).hexdigest()[:10]


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("._")


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
