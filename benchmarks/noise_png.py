"""A deterministic noise PNG for the data-URI scenario, made with the standard library only.

Random pixels do not compress, so a 256x256 RGB image stays about 192 KiB: the size of a real
photo of that resolution, and about 256 KiB once base64-encoded into a data URI.
"""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path


def noise_png(size: int = 256, seed: int = 0) -> bytes:
    """Return a ``size`` x ``size`` 8-bit RGB PNG of random pixels (same seed, same bytes)."""
    rng = random.Random(seed)
    row_bytes = size * 3
    # each scanline starts with filter type 0 (none)
    raw = b"".join(b"\x00" + rng.randbytes(row_bytes) for _ in range(size))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit depth, colour type RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def write_noise_png(path: Path, size: int = 256, seed: int = 0) -> Path:
    """Write ``noise_png(size, seed)`` to ``path`` and return ``path``."""
    path.write_bytes(noise_png(size, seed))
    return path


def write_bytes_inputs(folder: Path, count: int = 24, seed: int = 1) -> list[Path]:
    """Write ``count`` real PNG and JPEG files of 100 KB to 1 MB (the bytes-path inputs).

    Half are noise PNGs from 190 to 560 pixels square (about 105 KB to 920 KB), half JPEGs of
    noise at quality 95 saved by Pillow (about 110 KB to 900 KB), so the client's format sniffing
    and the encoders see real files of both kinds. Same seed, same files.
    """
    import io

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for index in range(count):
        fraction = index / max(1, count - 1)
        if index % 2 == 0:
            size = int(190 + fraction * 370)
            path = folder / f"in{index:03}.png"
            path.write_bytes(noise_png(size, seed + index))
        else:
            size = int(270 + fraction * 550)
            pixels = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
            buffer = io.BytesIO()
            pixels.save(buffer, "JPEG", quality=95)
            path = folder / f"in{index:03}.jpg"
            path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths
