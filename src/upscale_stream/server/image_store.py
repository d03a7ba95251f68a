"""The reference server's in-memory image store: uploads, inputs and outputs by image UUID.

Each image has an expiry time (the task's ``ttl``, or the server's ``url_ttl``); after it, the
image's URL answers 410 Gone for as long as the store remembers the UUID, then 404. The store has
a byte cap and evicts the least recently used images first. Pure bookkeeping: no I/O, and time
comes in as ``now``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

__all__ = ["ImageStore", "Lookup", "StoredImage"]

_MAX_TOMBSTONES = 10_000


@dataclass(frozen=True, slots=True)
class StoredImage:
    """One stored image file.

    Attributes:
        data: The encoded file.
        mime: Its MIME type, for example ``image/png``.
        extension: Its file extension without the dot (``png``, ``jpg``, ``webp``).
        expires_at: When it stops being served, on the server's clock.
        owner: The tenant (API key) whose task stored it; only that tenant may use its UUID
            or URL as a task input, or delete it. The URL itself is a capability: anyone
            holding it can download the image, as with the real API's CDN links.
    """

    data: bytes
    mime: str
    extension: str
    expires_at: float
    owner: str = ""


class Lookup(Enum):
    """What :meth:`ImageStore.lookup` found."""

    FOUND = "found"
    EXPIRED = "expired"
    MISSING = "missing"


class ImageStore:
    """Images by UUID, capped at ``max_bytes`` with least-recently-used eviction.

    Args:
        max_bytes: The most bytes of image data kept at once. An image larger than the cap is
            not kept at all.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes_used = 0
        self._images: OrderedDict[str, StoredImage] = OrderedDict()
        self._expired: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._images)

    def put(self, image_uuid: str, image: StoredImage) -> None:
        """Store ``image`` under ``image_uuid``, evicting the oldest images if needed."""
        self._remove(image_uuid)
        if len(image.data) > self.max_bytes:
            return
        self._images[image_uuid] = image
        self.bytes_used += len(image.data)
        while self.bytes_used > self.max_bytes:
            _, evicted = self._images.popitem(last=False)
            self.bytes_used -= len(evicted.data)

    def lookup(self, image_uuid: str, now: float) -> tuple[Lookup, StoredImage | None]:
        """Find an image; an expired one is dropped and reported as :attr:`Lookup.EXPIRED`."""
        image = self._images.get(image_uuid)
        if image is None:
            found = Lookup.EXPIRED if image_uuid in self._expired else Lookup.MISSING
            return found, None
        if now >= image.expires_at:
            self._expire_one(image_uuid)
            return Lookup.EXPIRED, None
        self._images.move_to_end(image_uuid)
        return Lookup.FOUND, image

    def get(self, image_uuid: str, now: float) -> StoredImage | None:
        """The image, or ``None`` when it is unknown or expired."""
        return self.lookup(image_uuid, now)[1]

    def owned(self, image_uuid: str, owner: str, now: float) -> StoredImage | None:
        """The image if it is stored, not expired and belongs to ``owner``; else ``None``."""
        image = self.get(image_uuid, now)
        return image if image is not None and image.owner == owner else None

    def delete(self, image_uuid: str, owner: str, now: float) -> bool:
        """Delete ``owner``'s image now (its URL answers 410 afterwards); False if not found."""
        if self.owned(image_uuid, owner, now) is None:
            return False
        self._expire_one(image_uuid)
        return True

    def expire(self, now: float) -> int:
        """Drop every expired image; returns how many were dropped."""
        expired = [key for key, image in self._images.items() if now >= image.expires_at]
        for key in expired:
            self._expire_one(key)
        return len(expired)

    def clear(self) -> None:
        """Forget everything (a server restart)."""
        self._images.clear()
        self._expired.clear()
        self.bytes_used = 0

    def _expire_one(self, image_uuid: str) -> None:
        self._remove(image_uuid)
        self._expired[image_uuid] = None
        while len(self._expired) > _MAX_TOMBSTONES:
            self._expired.popitem(last=False)

    def _remove(self, image_uuid: str) -> None:
        old = self._images.pop(image_uuid, None)
        if old is not None:
            self.bytes_used -= len(old.data)
