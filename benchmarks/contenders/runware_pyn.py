"""Contender: the official ``runware-sdk`` 1.8.0 SDK (github Runware/runware-python).

Runs in its own virtual environment (``benchmarks.compat.ensure_venv("runware-sdk")``). Each call
is ``client.run({...})`` with ``taskType:"upscale"`` and an AIR model, so the SDK makes no HTTP
fetch of its model registry. ``--delivery sync`` waits for the result frame; ``--delivery async``
(the SDK's default) takes the ACK and then polls ``getResponse`` on the SDK's own schedule (first
poll after 1 s). The SDK has no concurrency limit of its own: ``--window`` worker coroutines keep
that many calls open. It sends one task per frame, so ``--batch`` is accepted and ignored.
One warm-up task runs before the measurement starts.
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import API_KEY, FACTOR, MODEL, Meter, input_image, run_main, run_pool


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Connect, warm up, run the tasks, return the report line."""
    try:
        from runware import Runware
    except ImportError as exc:
        raise SystemExit(
            f"runware-sdk 1.8.0 is not importable here ({exc}); see benchmarks/compat.py"
        ) from exc
    image = input_image(args.input)
    delivery = args.delivery

    async with Runware(api_key=API_KEY, ws_base_url=args.url) as client:

        def call() -> Any:  # the SDK's own coroutine, not one of the harness's around it
            return client.run(
                {
                    "taskType": "upscale",
                    "model": MODEL,
                    "upscaleFactor": FACTOR,
                    "inputs": {"image": image},
                    "deliveryMethod": delivery,
                }
            )

        await call()
        meter = Meter(args.tasks)
        meter.start()
        await run_pool(meter, args.window, args.rate, call)
        meter.stop()
    return meter.report(contender="runware_pyn", delivery=delivery, window=args.window)


if __name__ == "__main__":
    run_main(run, __doc__.split("\n\n")[0])
