"""Drive the official ``runware-sdk`` 1.8.0 SDK against a local server; print one JSON line.

Runs inside ``.venv-compat/runware-sdk-1.8.0`` (see ``benchmarks/compat.py``), never in our own
environment. It connects, runs one ``upscale`` task through ``client.run()`` and reports what
the SDK returned or raised::

    python drive_runware_sdk.py --url ws://127.0.0.1:PORT/v1 --api-key KEY --image in.png \
        --delivery async --output-type dataURI --task-uuid UUID

The task always carries ``taskType: "upscale"`` and an AIR ``model``, so the SDK never fetches
its model registry over HTTP (protocol.md section 9). ``--delivery async`` (the SDK's default)
makes it wait for the ACK and then poll ``getResponse``; ``sync`` waits for the pushed result.

Every step is bounded by ``--step-timeout``, so a hang is reported as a ``StepTimeout`` error
instead of blocking the test. An audit hook refuses any connection (and any DNS lookup) to a
host that is not loopback and lists it under ``blocked``: the SDK must need nothing but the
server under test.

``--scenario`` picks what runs after connecting:

* ``upscale`` (default): the one task above;
* ``stray``: ``--tasks`` sync upscales at once; once they are all pending, a frame-level
  error is provoked on the same socket (an invalid-JSON frame sent through the SDK's own
  connection). Every task must still finish (issue 10: the SDK used to fail them all);
* ``media``: ``media_storage`` uploads the image (``operation: "upload"``), then the upscale
  runs on the returned ``mediaUUID``; the upload's answer is reported under ``media``.

The report (one line on stdout) has the keys ``sdk``, ``version``, ``connected``,
``session_id``, ``results`` (the result dicts), ``error`` (``type``, ``message``, ``code``,
``parameter``, ``task_uuid``, ``step``, or ``null``), ``blocked`` and ``elapsed_s``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from _driver import bounded, describe_error, encoded_image, run_and_report


def input_value(path: Path, form: str) -> str:
    """What the SDK is handed as ``inputs.image`` (it sends strings through untouched)."""
    return encoded_image(path, form)


def task_params(args: argparse.Namespace) -> dict[str, Any]:
    """The ``run()`` params: only what the command line asked for, plus the fixed basics."""
    params: dict[str, Any] = {
        "taskType": "upscale",
        "model": args.model,
        "upscaleFactor": args.factor,
        "inputs": {"image": input_value(Path(args.image), args.input_form)},
        "deliveryMethod": args.delivery,
    }
    optional = {
        "taskUUID": args.task_uuid,
        "outputType": args.output_type,
        "outputFormat": args.output_format,
        "includeCost": True if args.include_cost else None,
    }
    params.update({key: value for key, value in optional.items() if value is not None})
    return params


async def scenario(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Connect, run the ``--scenario`` through the SDK's public calls, fill ``report``."""
    import asyncio

    from runware import RunOptions, Runware

    client = Runware(api_key=args.api_key, ws_base_url=args.url)
    step = "connect"
    try:
        await bounded(step, client.connect(), args.step_timeout)
        report["connected"] = True
        transport = getattr(client, "_ws_transport", None)
        report["session_id"] = getattr(transport, "session_id", None)
        step = "run"
        options = RunOptions(timeout=int(args.step_timeout * 1000))
        params = task_params(args)
        if args.scenario == "media":
            step = "media_storage"
            upload = {"operation": "upload", "media": params["inputs"]["image"]}
            stored = await bounded(step, client.media_storage(upload, options), args.step_timeout)
            report["media"] = [dict(item) for item in stored]
            params["inputs"] = {"image": stored[0]["mediaUUID"]}
            step = "run"
        if args.scenario == "stray":
            runs = [
                asyncio.ensure_future(client.run({**params, "deliveryMethod": "sync"}, options))
                for _ in range(args.tasks)
            ]
            step = "stray"
            # The tasks are pending (the server delays them); provoke a frame-level error on
            # the SDK's own socket, as a stray frame would.
            await asyncio.sleep(args.stray_after)
            await bounded(step, transport._ws.send("this is not JSON"), args.step_timeout)  # type: ignore[union-attr]
            step = "run"
            batches = await bounded(step, asyncio.gather(*runs), args.step_timeout)
            report["results"] = [dict(item) for batch in batches for item in batch]
            return
        results = await bounded(step, client.run(params, options), args.step_timeout)
        report["results"] = [dict(item) for item in results]
    except Exception as exc:
        report["error"] = describe_error(exc, step)
    finally:
        try:
            await bounded("close", client.close(), args.step_timeout)
        except Exception as exc:
            report.setdefault("close_error", describe_error(exc, "close"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="WebSocket URL of the server under test")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--image", required=True, help="a local PNG, JPEG or WEBP file")
    parser.add_argument("--input-form", choices=("datauri", "base64"), default="datauri")
    parser.add_argument("--model", default="runware:503@1", help="an AIR id (default SwinIR)")
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--task-uuid", default=None)
    parser.add_argument("--output-type", choices=("URL", "base64Data", "dataURI"), default=None)
    parser.add_argument("--output-format", choices=("JPG", "PNG", "WEBP"), default=None)
    parser.add_argument("--include-cost", action="store_true")
    parser.add_argument("--delivery", choices=("sync", "async"), default="async")
    parser.add_argument("--step-timeout", type=float, default=30.0)
    parser.add_argument("--scenario", choices=("upscale", "stray", "media"), default="upscale")
    parser.add_argument("--tasks", type=int, default=3, help="tasks of the stray scenario")
    parser.add_argument(
        "--stray-after", type=float, default=0.3, help="seconds before the stray frame"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the scenario with the network guarded, then print the one-line JSON report."""
    return run_and_report("runware-sdk", scenario, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
