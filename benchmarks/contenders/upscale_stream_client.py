"""Contender: our client, ``upscale_stream.UpscaleClient``.

Modes (on top of the common contender command line, see ``_common``):

* default: ``--window`` worker coroutines each call ``client.upscale()`` in turn, so every task's
  latency is measured from the call to its result. The client gets
  ``max_in_flight=--window, max_batch=--batch``.
* ``--defaults``: the same workload on a client built with no tuning arguments at all.
* ``--api many``: one ``async for`` over ``client.upscale_many(..., ordered=False)``; throughput
  and CPU only (the stream does not expose per-task send times).
* ``--soak``: like ``--api many`` over a lazily generated input stream, sampling the process's
  resident set size every ``--rss-interval`` seconds; reports the samples, the growth from the
  first to the last sample and the trend (least-squares slope) over the second half.

``--uvloop`` (common option) runs the whole thing on uvloop when it is installed;
``--delivery async`` asks for ``deliveryMethod:"async"`` (ACK, then the client polls).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
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
    image = input_image(args.input)
    options: dict[str, Any] = {}
    if not args.defaults:
        options = {"max_in_flight": args.window, "max_batch": args.batch}
    mode = "soak" if args.soak else args.api
    settings = "defaults" if args.defaults else f"window={args.window},batch={args.batch}"
    async with upscale_client(api_key=API_KEY, url=args.url, **options) as client:
        await client.upscale(image, **task_options)  # warm-up: connects, authenticates
        meter = Meter(args.tasks)
        extra: dict[str, Any] = {}
        if mode == "upscale":

            async def call() -> None:
                await client.upscale(image, **task_options)

            meter.start()
            await run_pool(meter, args.window, args.rate, call)
            meter.stop()
        else:
            if args.rate > 0:
                raise SystemExit("--rate needs --api upscale")
            extra = await stream(
                client, image, task_options, meter, args.rss_interval if args.soak else None
            )
    return meter.report(
        contender="upscale_stream", mode=mode, settings=settings, delivery=args.delivery, **extra
    )


async def stream(
    client: Any,
    image: str,
    task_options: dict[str, Any],
    meter: Meter,
    rss_interval: float | None,
) -> dict[str, Any]:
    """Run ``meter.tasks`` tasks through ``upscale_many``; sample RSS if ``rss_interval`` is set."""
    samples: list[tuple[float, int, float]] = []  # (seconds into the run, tasks done, RSS MiB)
    sampler: asyncio.Task[None] | None = None
    t0 = time.perf_counter()

    async def sample_rss(interval: float) -> None:
        while True:
            samples.append((time.perf_counter() - t0, meter.ok, current_rss_mib()))
            await asyncio.sleep(interval)

    meter.start()
    if rss_interval is not None:
        sampler = asyncio.create_task(sample_rss(rss_interval))
    images = itertools.repeat(image, meter.tasks)
    try:
        async for outcome in client.upscale_many(images, ordered=False, **task_options):
            if getattr(outcome, "ok", True):  # an Outcome; a failed task does not stop the stream
                meter.ok += 1
            else:
                meter.fail(getattr(outcome, "error", None) or RuntimeError("task failed"))
    except Exception as exc:  # the stream itself broke off
        meter.fail(exc)
    meter.stop()
    meter.failed = max(meter.failed, meter.tasks - meter.ok)  # tasks never reported count too
    if sampler is None:
        return {}
    sampler.cancel()
    samples.append((time.perf_counter() - t0, meter.ok, current_rss_mib()))
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
