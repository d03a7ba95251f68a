"""Job ids and the deterministic taskUUIDs derived from them (pure: no I/O, no clock).

A *job* is one logical run over a set of inputs: a CLI run into one output folder, one
``upscale_dataset`` call on Ray, one ``upscale_many(..., job_id=...)``. Every task of a job
gets a taskUUID that is a function of what the task is::

    task_uuid = derive_task_uuid(job_id, input_key, options_digest, attempt)

so the same job, the same input and the same options give the same taskUUID in any process, on
any machine, after any crash. A task that an earlier (killed) process of the job already sent
is then known to the server under that taskUUID: the server refuses to run it again
(``conflictTaskUUID``) and the client recovers its result instead of paying for it twice
(docs/jobs.md explains the whole argument).

``attempt`` counts the tries of one task that the server *answered with an error* (so it is
known not to have run): the retry goes under the next attempt's taskUUID, which every process
of the job derives the same way.

The value is a SHA-256 of the four parts with the UUID version (4) and variant (RFC 4122) bits
set, so it is a valid UUID v4 as the API requires (seed: "taskUUID ... UUID v4").
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import orjson

from .errors import InvalidTask

__all__ = [
    "MAX_JOB_ID_LENGTH",
    "JobTask",
    "attempt_task_uuid",
    "check_job_id",
    "derive_task_uuid",
    "input_key",
    "new_job_id",
    "options_digest",
]

MAX_JOB_ID_LENGTH = 128
"""Longest job id accepted; it is a label, not data."""

_NAMESPACE = b"upscale-stream/job-task/v1"
_UUID_PREFIX_LENGTH = 36


def new_job_id() -> str:
    """A fresh random job id (a UUID v4 string from the OS's CSPRNG)."""
    return _as_uuid4(secrets.token_bytes(16))


def check_job_id(job_id: object) -> str:
    """Return ``job_id`` if it is usable as a job id.

    Raises:
        InvalidTask: it is not a non-empty printable string of at most
            :data:`MAX_JOB_ID_LENGTH` characters.
    """
    if (
        not isinstance(job_id, str)
        or not job_id
        or len(job_id) > MAX_JOB_ID_LENGTH
        or not job_id.isprintable()
    ):
        raise InvalidTask(
            f"must be a non-empty printable string of at most {MAX_JOB_ID_LENGTH} characters",
            parameter="job_id",
            value=job_id,
        )
    return job_id


def input_key(source: Any) -> str:
    """A stable key for one input, the same in every process.

    * a path (``os.PathLike``): ``path:`` and the path as given (callers that want reruns from
      another working directory to match pass a path relative to the job's input root);
    * an http(s) URL: ``url:`` and the URL;
    * an image UUID: ``uuid:`` and the UUID, lower-cased;
    * anything else that carries the image itself (bytes, a data URI, base64 text, a
      ``PIL.Image``): ``sha256:`` and the digest of its content.
    """
    if isinstance(source, PurePath | os.PathLike):
        return "path:" + os.fspath(source)
    if isinstance(source, str):
        if source.startswith(("http://", "https://")):
            return "url:" + source
        if len(source) == _UUID_PREFIX_LENGTH and _looks_like_uuid(source):
            return "uuid:" + source.lower()
        return "sha256:" + hashlib.sha256(source.encode()).hexdigest()
    if isinstance(source, bytes | bytearray | memoryview):
        return "sha256:" + hashlib.sha256(source).hexdigest()
    tobytes = getattr(source, "tobytes", None)
    if callable(tobytes):  # a PIL image, or a numpy array as Ray Data hands it
        digest = hashlib.sha256()
        for part in (getattr(source, "mode", ""), getattr(source, "size", "")):
            digest.update(repr(part).encode())
        shape = getattr(source, "shape", None)
        if shape is not None:
            digest.update(repr((shape, str(getattr(source, "dtype", "")))).encode())
        digest.update(tobytes())
        return "sha256:" + digest.hexdigest()
    raise InvalidTask(
        "cannot derive a job key from this input type", parameter="inputImage", value=source
    )


def options_digest(options: Mapping[str, Any] | bytes) -> str:
    """A digest of a task's options (everything but taskUUID and inputImage).

    Args:
        options: The wire options as a mapping (key order does not matter), or their canonical
            encoding as bytes.
    """
    if isinstance(options, Mapping):
        encoded = orjson.dumps(dict(options), option=orjson.OPT_SORT_KEYS)
    else:
        encoded = options
    return hashlib.sha256(encoded).hexdigest()[:32]


def derive_task_uuid(job_id: str, key: str, digest: str, attempt: int = 0) -> str:
    """The taskUUID of one attempt of one task of a job (a valid UUID v4 string).

    Args:
        job_id: The job's id (see :func:`check_job_id`).
        key: The input's key (see :func:`input_key`).
        digest: The options' digest (see :func:`options_digest`).
        attempt: 0 for the first try; +1 for each retry after an error answer.

    Raises:
        InvalidTask: ``attempt`` is negative.
    """
    if attempt < 0:
        raise InvalidTask("must be 0 or more", parameter="attempt", value=attempt)
    material = b"\0".join(
        (_NAMESPACE, job_id.encode(), key.encode(), digest.encode(), str(attempt).encode())
    )
    return _as_uuid4(hashlib.sha256(material).digest()[:16])


@dataclass(frozen=True, slots=True)
class JobTask:
    """What makes one task of a job: the parts of its taskUUID but the attempt.

    Attributes:
        job_id: The job's id.
        key: The input's key (:func:`input_key`, or the caller's own, such as a relative path).
        digest: The options' digest (:func:`options_digest`).
    """

    job_id: str
    key: str
    digest: str

    def task_uuid(self, attempt: int) -> str:
        """The taskUUID of try ``attempt`` (0 for the first)."""
        return derive_task_uuid(self.job_id, self.key, self.digest, attempt)


def attempt_task_uuid(job: JobTask | None, attempt: int, new_uuid: Callable[[], str]) -> str:
    """The taskUUID of try ``attempt`` (0-based) of a task: the one function that decides it.

    Without a job every try gets a fresh random taskUUID (``new_uuid()``); a task of a job
    gets the derived one, the same in every process of the job.
    """
    if job is None:
        return new_uuid()
    return job.task_uuid(attempt)


def _as_uuid4(raw: bytes) -> str:
    value = bytearray(raw)
    value[6] = (value[6] & 0x0F) | 0x40  # version 4
    value[8] = (value[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = value.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _looks_like_uuid(text: str) -> bool:
    parts = text.split("-")
    if [len(p) for p in parts] != [8, 4, 4, 4, 12]:
        return False
    try:
        int("".join(parts), 16)
    except ValueError:
        return False
    return True
