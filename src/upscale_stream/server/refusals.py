"""How the reference server refuses what names no task, with bounded work per frame.

protocol.md section 9 rule 3: every ``errors`` item carries ``taskUUID`` and ``taskType``.
The reason is section 4: ``runware-sdk`` and the TypeScript SDK *broadcast* an error item they
cannot route (no ``taskUUID``, or one without a live subscriber) to every pending task on the
socket, so one stray frame-level error fails unrelated work. A ``taskType`` alone does not
help: routing is by ``taskUUID`` only. So this server never sends an ``errors`` item that
names no task (authentication errors aside: no task is pending before authentication):

* A problem with a whole frame (a binary frame, invalid JSON, not an array, an empty array,
  too large) and every item of a frame that has no usable ``taskUUID`` (not an object, no
  ``taskUUID``, a ``taskUUID`` over :data:`MAX_TASK_UUID_CHARS`) are reported together in
  **one** ``data`` item per frame, the *frame notice*::

      {"data":[{"taskType":"frameError","status":"error",
                "error":{"code":…,"message":…,"documentation":…},
                "refused":3,"errors":[<up to 10 of the item errors>]}]}

  It has no ``taskUUID``, so every SDK skips it (they route ``data`` items by ``taskUUID``),
  and a raw client still reads why its frame was refused.
* Items that do name a task keep their own scoped error, but a frame gets at most
  :data:`SCOPED_REFUSALS` of those for the tasks over the per-frame limit; the notice counts
  the rest.

A taskUUID is stored (registry, counters) or echoed only when it is a string of at most
:data:`MAX_TASK_UUID_CHARS` characters: a client cannot make the server keep or repeat
megabytes of "taskUUID".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..models import ErrorItem

__all__ = [
    "FRAME_ERROR",
    "MAX_TASK_UUID_CHARS",
    "NOTICE_EXAMPLES",
    "SCOPED_REFUSALS",
    "FrameRefusals",
    "bounded_uuid",
    "documentation_for",
    "error_item",
    "frame_notice",
    "scoped_error",
]

FRAME_ERROR = "frameError"
"""The ``taskType`` of a frame notice: no SDK sends or awaits a task of that type."""

MAX_TASK_UUID_CHARS = 64
"""Longest ``taskUUID`` string the server stores or echoes (a UUID has 36 characters)."""

SCOPED_REFUSALS = 100
"""Most scoped errors one frame gets for tasks refused as a group (over a limit)."""

NOTICE_EXAMPLES = 10
"""Item errors quoted in a frame notice; the rest are only counted."""

_DOCS = "https://runware.ai/docs"
_DOCUMENTATION = {
    "upscale": f"{_DOCS}/en/tools/upscale",
    "imageUpscale": f"{_DOCS}/en/tools/upscale",
    "authentication": f"{_DOCS}/models-api/authentication",
    "getResponse": f"{_DOCS}/platform/task-polling",
    "getTaskDetails": f"{_DOCS}/platform/task-details",
    "imageUpload": f"{_DOCS}/en/utilities/image-upload",
    "mediaStorage": f"{_DOCS}/en/utilities/media-storage",
}
_ERRORS_PAGE = f"{_DOCS}/platform/errors"


def documentation_for(task_type: object) -> str:
    """The documentation page an error item about ``task_type`` points to."""
    if not isinstance(task_type, str):
        return _ERRORS_PAGE
    return _DOCUMENTATION.get(task_type, _ERRORS_PAGE)


def bounded_uuid(value: object) -> str | None:
    """``value`` when it is a non-empty string short enough to store and echo, else ``None``."""
    if isinstance(value, str) and 0 < len(value) <= MAX_TASK_UUID_CHARS:
        return value
    return None


def error_item(
    code: str,
    message: str,
    *,
    parameter: str | None = None,
    task_type: object = None,
    task_uuid: object = None,
) -> dict[str, Any]:
    """An ``errors`` item with its ``documentation`` page.

    ``taskType`` is included when it is a short string, ``taskUUID`` when it is a string short
    enough to echo (:func:`bounded_uuid`).
    """
    kind = task_type if isinstance(task_type, str) and len(task_type) <= 64 else None
    return ErrorItem(
        code=code,
        message=message,
        parameter=parameter,
        task_type=kind,
        task_uuid=bounded_uuid(task_uuid),
        documentation=documentation_for(kind),
    ).to_wire()


def scoped_error(
    item: Mapping[str, Any], code: str, message: str, parameter: str | None = None
) -> dict[str, Any]:
    """An error item about the task ``item`` (its ``taskType`` and bounded ``taskUUID``)."""
    return error_item(
        code,
        message,
        parameter=parameter,
        task_type=item.get("taskType"),
        task_uuid=item.get("taskUUID"),
    )


def frame_notice(
    code: str, message: str, *, refused: int = 0, examples: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The one ``data`` item that reports what was wrong with a frame (see the module doc)."""
    notice: dict[str, Any] = {
        "taskType": FRAME_ERROR,
        "status": "error",
        "error": {"code": code, "message": message, "documentation": _ERRORS_PAGE},
    }
    if refused:
        notice["refused"] = refused
        notice["errors"] = examples or []
    return notice


@dataclass(slots=True)
class FrameRefusals:
    """What one frame's items were refused for, when the refusal names no task.

    Attributes:
        count: Items refused without an answer of their own.
        examples: The first :data:`NOTICE_EXAMPLES` of their error items.
        scoped: Scoped errors already spent on tasks refused as a group.
        ponged: Whether the frame's pong is already queued.
    """

    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    scoped: int = 0
    ponged: bool = False

    def add(self, error: Mapping[str, Any]) -> None:
        """Count one refused item; its error is quoted if fewer than the cap are."""
        self.count += 1
        if len(self.examples) < NOTICE_EXAMPLES:
            self.examples.append(dict(error))

    def notice(self) -> dict[str, Any]:
        """The frame notice for everything counted."""
        first = self.examples[0] if self.examples else {}
        code = str(first.get("code", "invalidRequest"))
        noun = "item was" if self.count == 1 else "items were"
        message = (
            f"{self.count} {noun} refused without naming a task (no usable taskUUID), so no "
            "answer of their own could be routed; see errors for the first ones"
        )
        return frame_notice(code, message, refused=self.count, examples=self.examples)
