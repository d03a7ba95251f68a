"""Contender: our client, ``upscale_stream.UpscaleClient``.

Modes (on top of the common contender command line, see ``_common``):

* default: ``--window`` worker coroutines each call ``client.upscale()`` in turn, so every task's
  latency is measured from the call to its result. The client gets
  ``max_in_flight=--window, max_batch=--batch``.
* ``--defaults``: the same workload on a client built with no tuning arguments at all.
* ``--api many``: one ``async for`` over ``client.upscale_many(..., ordered=False)``. A task's
  latency runs from its due time: with ``--rate``, ``i / rate`` s into the run (the input
  iterator waits for it); flat out, the moment the stream pulled its input (a window slot was
  free).
* ``--input-dir DIR --out-dir DIR`` (the bytes path, with ``--api many``): the inputs are the
  image files in DIR, cycled, passed as paths; every result's image is read with
  ``read_bytes()`` (decoded from base64, or fetched from its URL) and written to ``--out-dir``.
  The report adds the input and output bytes moved.
* ``--soak``: like ``--api many`` over a lazily generated input stream, sampling the process's
  resident set size every ``--rss-interval`` seconds; reports the samples, the growth from the
  first to the last sample and the trend (least-squares slope) over the second half.

``--transport picows`` builds the client with ``transport="picows"`` (the ``fast`` extra).
``--uvloop`` (common option) runs the whole thing on uvloop when it is installed;
``--delivery async`` asks for ``deliveryMethod:"async"`` (ACK, then the client polls).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import time
from pathlib import Path
from typing import Any

from _common import API_KEY, FACTOR, MODEL, Meter, input_image, run_main, run_pool

_PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def current_rss_mib() -> float:
    """The process's resident set size right now, in MiB (from /proc/self/statm)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_MIB


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(x, y)`` points, or ``None`` for fewer than two distinct x."""
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add this contender's own options to the common command line."""
    parser.add_argument("--defaults", action="store_true", help="no max_in_flight/max_batch")
    parser.add_argument("--api", choices=("upscale", "many"), default="upscale")
    parser.add_argument("--soak", action="store_true", help="upscale_many with RSS sampling")
    parser.add_argument("--rss-interval", type=float, default=10.0, help="soak sample period, s")
    parser.add_argument("--input-dir", type=Path, help="bytes path: image files sent as paths")
    parser.add_argument("--out-dir", type=Path, help="bytes path: where result images go")
    parser.add_argument("--output-type", default=None, help="outputType of every task")
    parser.add_argument("--transport", help="the client's transport= (websockets or picows)")


def _import_client() -> Any:
    try:
        from upscale_stream import UpscaleClient
    except ImportError as exc:
        raise SystemExit(
            f"cannot import upscale_stream.UpscaleClient ({exc}). Install the project into the "
            "interpreter running this script (`make venv`) or put src/ on PYTHONPATH."
        ) from exc
    return UpscaleClient


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Connect, warm up, run the tasks in the chosen mode, return the report line."""
    upscale_client = _import_client()
    task_options: dict[str, Any] = {"factor": FACTOR, "model": MODEL}
    if args.delivery == "async":  # ACK, then the client polls getResponse
        task_options["delivery_method"] = "async"
    if args.output_type:
        task_options["output_type"] = args.output_type
    image = input_image(args.input)
    options: dict[str, Any] = {}
    if not args.defaults:
        options = {"max_in_flight": args.window, "max_batch": args.batch}
    if args.transport:
        options["transport"] = args.transport
    mode = "soak" if args.soak else args.api
    settings = "defaults" if args.defaults else f"window={args.window},batch={args.batch}"
    async with upscale_client(api_key=API_KEY, url=args.url, **options) as client:
        await client.upscale(image, **task_options)  # warm-up: connects, authenticates
        meter = Meter(args.tasks)
        extra: dict[str, Any] = {}
        if mode == "upscale":
            # The call itself, not a coroutine of the harness's around it: a caller awaits
            # client.upscale(...) directly.
            call = functools.partial(client.upscale, image, **task_options)

            meter.start()
            await run_pool(meter, args.window, args.rate, call)
            meter.stop()
        else:
            extra = await stream(
                client,
                image,
                task_options,
                meter,
                args.rss_interval if args.soak else None,
                rate=args.rate,
                input_dir=args.input_dir,
                out_dir=args.out_dir,
            )
    return meter.report(
        contender="upscale_stream", mode=mode, settings=settings, delivery=args.delivery, **extra
    )


def bytes_inputs(input_dir: Path) -> list[Path]:
    """The image files of the bytes path, in name order."""
    files = sorted(p for p in input_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"no .png/.jpg files in {input_dir}")
    return files


async def stream(
    client: Any,
    image: str,
    task_options: dict[str, Any],
    meter: Meter,
    rss_interval: float | None,
    *,
    rate: float = 0.0,
    input_dir: Path | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Run ``meter.tasks`` tasks through ``upscale_many``; sample RSS if ``rss_interval`` is set.

    With ``input_dir``, the inputs are its files (cycled) and every result's bytes are written to
    ``out_dir``. Latency runs from each task's due time (see the module docstring).
    """
    samples: list[tuple[float, int, float]] = []  # (seconds into the run, tasks done, RSS MiB)
    sampler: asyncio.Task[None] | None = None
    clock = time.perf_counter
    total = meter.tasks
    measure = rss_interval is None  # the soak keeps no per-task times (1M floats of RSS)
    due: list[float] = [0.0] * (total if measure else 0)
    sources: list[Any] = [image]
    if input_dir is not None:
        sources = list(bytes_inputs(input_dir))
        assert out_dir is not None, "--input-dir needs --out-dir"
        out_dir.mkdir(parents=True, exist_ok=True)
    bytes_in = bytes_out = 0
    t0 = clock()

    async def sample_rss(interval: float) -> None:
        while True:
            samples.append((clock() - t0, meter.ok, current_rss_mib()))
            await asyncio.sleep(interval)

    def flat_out() -> Any:
        count = len(sources)
        for index in range(total):
            if measure:
                due[index] = clock()
            yield sources[index % count]

    async def paced() -> Any:
        count = len(sources)
        for index in range(total):
            due[index] = start = t0 + index / rate
            delay = start - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            yield sources[index % count]

    meter.start()
    t0 = clock()
    if rss_interval is not None:
        sampler = asyncio.create_task(sample_rss(rss_interval))
    images = paced() if rate > 0 else flat_out()
    latencies = meter.latencies_s
    try:
        async for outcome in client.upscale_many(images, ordered=False, **task_options):
            if outcome.error is not None:  # a failed task does not stop the stream
                meter.fail(outcome.error)
                continue
            if out_dir is not None:
                data = outcome.result.read_bytes()
                target = out_dir / f"{outcome.index % 64}.out"
                target.write_bytes(data)
                bytes_out += len(data)
                bytes_in += outcome.source.stat().st_size
            if measure:
                latencies.append(clock() - due[outcome.index])
            meter.ok += 1
    except Exception as exc:  # the stream itself broke off
        meter.fail(exc)
    meter.stop()
    meter.failed = max(meter.failed, meter.tasks - meter.ok)  # tasks never reported count too
    extra: dict[str, Any] = {}
    if out_dir is not None:
        extra = {"payload_bytes_in": bytes_in, "payload_bytes_out": bytes_out}
    if sampler is None:
        return extra
    sampler.cancel()
    samples.append((clock() - t0, meter.ok, current_rss_mib()))
    second_half = [(t, rss) for t, _, rss in samples if t >= samples[-1][0] / 2]
    trend = slope(second_half)
    return {
        "rss_interval_s": rss_interval,
        "rss_samples": [[round(t, 3), done, round(rss, 2)] for t, done, rss in samples],
        "rss_start_mib": round(samples[0][2], 2),
        "rss_end_mib": round(samples[-1][2], 2),
        "rss_growth_mib": round(samples[-1][2] - samples[0][2], 2),
        "rss_max_growth_mib": round(max(rss for _, _, rss in samples) - samples[0][2], 2),
        "rss_trend_mib_per_min": None if trend is None else round(trend * 60, 3),
    }


if __name__ == "__main__":
    run_main(run, __doc__.split("\n\n")[0], extend=add_options)
