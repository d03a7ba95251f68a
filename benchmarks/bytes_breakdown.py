"""Where the bytes path's client CPU goes per image, step by step, with no WebSocket involved.

    python -m benchmarks.bytes_breakdown [--files 24] [--runs 5]

The inputs are the bytes-path scenario's own files (``noise_png.write_bytes_inputs``: PNG and
JPEG of 0.1-0.9 MB) and the result is its 512 px noise PNG (768 KiB, 1 MiB of base64). Each step
is timed alone over every input file with ``time.thread_time`` (this thread's CPU, so a loaded
machine inflates it less than wall time; the HTTP server's thread is not counted), best of
``--runs``, and printed as milliseconds per image. The floor's steps are those of
``contenders/raw_bytes_floor.py``; the library's are its public calls (``prepare_input``,
``TaskTemplate.encode``, ``UpscaleResult.read_bytes``), so running this with another revision's
``src`` on ``PYTHONPATH`` gives that revision's figures for the same steps.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import http.server
import io
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from PIL import Image

from benchmarks.noise_png import noise_png, write_bytes_inputs
from upscale_stream import inputs
from upscale_stream.models import SWINIR, TaskTemplate
from upscale_stream.results import decode_result

try:
    import pybase64
except ImportError:  # the fast extra is not installed: its rows are left out
    pybase64 = None  # type: ignore[assignment]  # (a module or None: checked before use)


def best_of(runs: int, step: Callable[[], object]) -> float:
    """CPU seconds of this thread for the fastest of ``runs`` calls of ``step``."""
    best = float("inf")
    for _ in range(runs):
        start = time.thread_time()
        step()
        best = min(best, time.thread_time() - start)
    return best


@contextmanager
def image_server(body: bytes) -> Iterator[str]:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 that answers every GET with ``body``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/result.png"
    finally:
        server.shutdown()
        server.server_close()


class FloorFetcher:
    """The floor's GET (``raw_bytes_floor.Fetcher``): one kept-alive connection, no checks."""

    def __init__(self) -> None:
        self.connection: http.client.HTTPConnection | None = None

    def get(self, url: str) -> bytes:
        parts = urlsplit(url)
        if self.connection is None:
            self.connection = http.client.HTTPConnection(parts.netloc)
        self.connection.request("GET", parts.path)
        return self.connection.getresponse().read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=24, help="input files (as the scenario)")
    parser.add_argument("--runs", type=int, default=5, help="best of this many passes")
    args = parser.parse_args()
    runs = args.runs
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_bytes_inputs(folder / "inputs", count=args.files)
        raws = [p.read_bytes() for p in paths]
        result_png = noise_png(512, seed=7)
        with image_server(result_png) as url:
            timings = measure(paths, raws, result_png, url, folder / "out.png", runs)
    n = len(paths)
    mean_in = sum(map(len, raws)) / n / 1e6
    print(
        f"ms of CPU per image, {n} inputs of {mean_in:.2f} MB on average, "
        f"result {len(result_png) / 1e6:.2f} MB, best of {runs}:"
    )
    for section, rows in timings.items():
        print(f"  {section}")
        for name, seconds in rows.items():
            print(f"    {name:<62} {seconds / n * 1e3:7.3f}")


def measure(
    paths: list[Path], raws: list[bytes], result_png: bytes, url: str, out: Path, runs: int
) -> dict[str, dict[str, float]]:
    """Every step's best CPU time over all inputs, by section."""
    n = len(paths)
    template = TaskTemplate(model=SWINIR, upscale_factor=2, output_type="base64Data")
    task_uuid = str(uuid.uuid4())
    mimes = [inputs.sniff_mime(raw[:12]) or "" for raw in raws]
    encoded = [base64.b64encode(raw) for raw in raws]
    uris = [inputs.prepare_input(raw, verify=False).value for raw in raws]
    head = b'{"taskType":"upscale","taskUUID":"%s","model":"x","inputs":{"image":"data:'
    result_b64 = base64.b64encode(result_png).decode("ascii")
    frame = orjson.dumps(
        {"data": [{"taskType": "upscale", "taskUUID": task_uuid, "imageBase64Data": result_b64}]}
    )
    item = orjson.loads(frame)["data"][0]
    result_b64_typed = decode_result(item)
    result_url_typed = decode_result(
        {"taskType": "upscale", "taskUUID": task_uuid, "imageURL": url}
    )
    floor_fetcher = FloorFetcher()
    floor_fetcher.get(url)  # connect once, as both pools do before the measured run
    result_url_typed.read_bytes()

    def each(step: Callable[[int], object]) -> float:
        return best_of(runs, lambda: [step(i) for i in range(n)])

    def write(data: bytes) -> None:
        with open(out, "wb") as handle:
            handle.write(data)

    def pillow_header(i: int) -> object:
        with Image.open(io.BytesIO(raws[i])) as image:
            return image.size

    def pillow_full(i: int) -> object:
        with Image.open(io.BytesIO(raws[i])) as image:
            image.load()
            return image.size

    steps_in: dict[str, Callable[[int], object]] = {
        "read the file (Path.read_bytes)": lambda i: paths[i].read_bytes(),
        "magic bytes (inputs.sniff_mime)": lambda i: inputs.sniff_mime(raws[i][:12]),
        "Pillow header: Image.open, size, no pixels": pillow_header,
        "Pillow full decode: Image.open + load (old verify=True)": pillow_full,
    }
    incomplete = getattr(inputs, "_incomplete", None)  # absent before the container check
    if incomplete is not None:
        steps_in["container walk (inputs._incomplete, the default check)"] = lambda i: incomplete(
            raws[i], mimes[i]
        )
    steps_in |= {
        "zlib.crc32 over the whole file (a PNG CRC check would cost)": lambda i: zlib.crc32(
            raws[i]
        ),
        "base64 encode, stdlib (base64.b64encode)": lambda i: base64.b64encode(raws[i]),
    }
    if pybase64 is not None:
        steps_in["base64 encode, pybase64 (fast extra)"] = lambda i: pybase64.b64encode(raws[i])
    steps_in |= {
        "data URI str from base64 bytes (decode + concat)": lambda i: (
            f"data:{mimes[i]};base64,{encoded[i].decode('ascii')}"
        ),
        "task bytes from the data URI str (TaskTemplate.encode)": lambda i: template.encode(
            task_uuid, uris[i]
        ),
        "floor: task bytes, one join around the base64 bytes": lambda i: b"".join(
            (head % task_uuid.encode(), mimes[i].encode(), b";base64,", encoded[i], b'"}}')
        ),
        "library: prepare_input(path) (default checks)": lambda i: inputs.prepare_input(paths[i]),
        "library: prepare_input(path) + TaskTemplate.encode": lambda i: template.encode(
            task_uuid, inputs.prepare_input(paths[i]).value
        ),
        "floor: read + b64encode + join (its whole input side)": lambda i: b"".join(
            (
                head % task_uuid.encode(),
                mimes[i].encode(),
                b";base64,",
                base64.b64encode(paths[i].read_bytes()),
                b'"}}',
            )
        ),
    }
    steps_out: dict[str, Callable[[int], object]] = {
        "orjson.loads of the 1 MiB result frame (both)": lambda _: orjson.loads(frame),
        "typed result (decode_result)": lambda _: decode_result(item),
        "floor: base64.b64decode(str)": lambda _: base64.b64decode(result_b64),
        "library: read_bytes() of a base64Data result": lambda _: result_b64_typed.read_bytes(),
        "floor: HTTP GET on one kept-alive connection": lambda _: floor_fetcher.get(url),
        "library: read_bytes() of a URL result (download.fetch)": lambda _: (
            result_url_typed.read_bytes()
        ),
        "write the file (open + write)": lambda _: write(result_png),
    }
    return {
        "input side (per input file)": {name: each(step) for name, step in steps_in.items()},
        "result side (per result)": {name: each(step) for name, step in steps_out.items()},
    }


if __name__ == "__main__":
    main()
