"""Getting an output image's bytes: decode base64 / data URI, or download the URL; atomic saves."""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DownloadError, InvalidResult

if TYPE_CHECKING:
    from .models import UpscaleResult

__all__ = ["result_bytes", "save_atomic"]

MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024


def result_bytes(result: UpscaleResult, *, timeout: float = 60.0) -> bytes:
    """Return the image bytes a result carries or points to (blocking).

    Raises:
        InvalidResult: the result has no image.
        DownloadError: its data is not valid base64, or the download failed.
    """
    try:
        if result.image_base64_data is not None:
            return base64.b64decode(result.image_base64_data, validate=True)
        if result.image_data_uri is not None:
            _, sep, payload = result.image_data_uri.partition(";base64,")
            if not sep:
                raise DownloadError(
                    f"task {result.task_uuid}: imageDataURI is not base64-encoded",
                    task_uuid=result.task_uuid,
                )
            return base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise DownloadError(
            f"task {result.task_uuid}: image data is not valid base64", task_uuid=result.task_uuid
        ) from exc
    url = result.url
    if url is None:
        raise InvalidResult(
            f"task {result.task_uuid}: the result carries no image", task_uuid=result.task_uuid
        )
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(
            f"task {result.task_uuid}: refusing to download {url!r} (not http or https)",
            task_uuid=result.task_uuid,
        )
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: bytes = response.read(MAX_DOWNLOAD_BYTES + 1)
    except OSError as exc:
        raise DownloadError(
            f"task {result.task_uuid}: download of {url} failed: {exc}", task_uuid=result.task_uuid
        ) from exc
    if len(body) > MAX_DOWNLOAD_BYTES:
        raise DownloadError(
            f"task {result.task_uuid}: {url} is larger than {MAX_DOWNLOAD_BYTES} B",
            task_uuid=result.task_uuid,
        )
    return body


def save_atomic(path: str | os.PathLike[str], content: bytes) -> Path:
    """Write ``content`` to ``path`` through a temporary file in the same folder and a rename.

    A reader never sees a half-written file, and an interrupted write leaves no partial file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
