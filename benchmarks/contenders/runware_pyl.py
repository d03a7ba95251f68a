"""Contender: the official ``runware`` 0.5.24 SDK (github Runware/sdk-python), sync delivery.

Runs in its own virtual environment (``benchmarks.compat.ensure_venv("runware")``). The SDK sends
one ``imageUpscale`` task per frame and caps itself at 15 calls in flight
(``RUNWARE_MAX_CONCURRENT_REQUESTS``), so ``--window`` workers mostly queue on that semaphore and
their latency includes the wait, as a caller's would. ``--batch`` is accepted and ignored.

``connect()`` is awaited once before fanning out: concurrent first calls on an unconnected client
race and hang (official-sdks.md, W1). One warm-up task runs before the measurement starts.
``deliveryMethod:"async"`` is not offered: this SDK returns the ACK and leaves polling to the user,
with a fixed 3 s first poll delay (official-sdks.md, W10).
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import API_KEY, FACTOR, MODEL, Meter, input_image, run_main, run_pool


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Connect, warm up, run the tasks, return the report line."""
    if args.delivery != "sync":
        raise SystemExit("runware 0.5.24 only returns the ACK for async delivery; use sync")
    try:
        from runware import IImageUpscale, Runware
    except ImportError as exc:
        raise SystemExit(
            f"runware 0.5.24 is not importable here ({exc}); see benchmarks/compat.py"
        ) from exc
    image = input_image(args.input)
    client = Runware(api_key=API_KEY, url=args.url)
    await client.connect()

    def call() -> Any:  # the SDK's own coroutine, not one of the harness's around it
        return client.imageUpscale(
            IImageUpscale(inputImage=image, upscaleFactor=FACTOR, model=MODEL)
        )

    await call()
    meter = Meter(args.tasks)
    meter.start()
    await run_pool(meter, args.window, args.rate, call)
    meter.stop()
    await client.disconnect()
    return meter.report(contender="runware_pyl", window=args.window, sdk_cap=15)


if __name__ == "__main__":
    run_main(run, __doc__.split("\n\n")[0])
