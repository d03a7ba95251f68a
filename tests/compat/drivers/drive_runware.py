"""Drive the official ``runware`` 0.5.24 SDK against a local server; print one JSON line.

Runs inside ``.venv-compat/runware-0.5.24`` (see ``benchmarks/compat.py``), never in our own
environment. It connects, runs one ``imageUpscale`` and reports what the SDK returned or raised::

    python drive_runware.py --url ws://127.0.0.1:PORT/v1 --api-key KEY --image in.png \
        --input-form path --output-type URL --output-format PNG

``--input-form`` picks what the SDK is handed: ``datauri`` and ``base64`` strings are passed
through untouched, ``path`` makes the SDK send an ``imageUpload`` task first and upscale the
returned image UUID (protocol.md section 7, PYL). With ``--delivery async`` the SDK returns the
ACK and the driver then calls ``getResponse``.

Every step is bounded by ``--step-timeout``, so a hang is reported as a ``StepTimeout`` error
instead of blocking the test. An audit hook refuses any connection (and any DNS lookup) to a
host that is not loopback and lists it under ``blocked``: the SDK must need nothing but the
server under test.

The report (one line on stdout) has the keys ``sdk``, ``version``, ``connected``,
``session_id``, ``results`` (the fields of each returned image), ``async_ack`` (the ACK when
``--delivery async``), ``error`` (``type``, ``message``, ``code``, ``step``, or ``null``),
``blocked`` and ``elapsed_s``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from _driver import bounded, describe_error, encoded_image, run_and_report


def input_value(path: Path, form: str) -> str:
    """What the SDK is handed as ``inputImage``."""
    if form == "path":
        return str(path)
    return encoded_image(path, form)


def fields_of(value: Any) -> dict[str, Any]:
    """The non-empty fields of an SDK dataclass (or a dict)."""
    raw = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value)
    return {key: item for key, item in raw.items() if item is not None}


async def scenario(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Connect, run one ``imageUpscale`` (then ``getResponse`` if async), fill ``report``."""
    from runware import IImageUpscale, Runware

    client = Runware(api_key=args.api_key, url=args.url)
    step = "connect"
    try:
        await bounded(step, client.connect(), args.step_timeout)
        report["connected"] = True
        report["session_id"] = getattr(client, "_connectionSessionUUID", None)
        request = IImageUpscale(
            inputImage=input_value(Path(args.image), args.input_form),
            upscaleFactor=args.factor,
            model=args.model,
            outputType=args.output_type,
            outputFormat=args.output_format,
            includeCost=args.include_cost,
            deliveryMethod=args.delivery,
        )
        step = "imageUpscale"
        answer = await bounded(step, client.imageUpscale(request), args.step_timeout)
        if not isinstance(answer, list):  # IAsyncTaskResponse: the ACK of an async task
            report["async_ack"] = fields_of(answer)
            step = "getResponse"
            answer = await bounded(
                step, client.getResponse(taskUUID=answer.taskUUID), args.step_timeout
            )
        report["results"] = [fields_of(image) for image in answer]
    except Exception as exc:
        report["error"] = describe_error(exc, step)
    finally:
        try:
            await bounded("disconnect", client.disconnect(), args.step_timeout)
        except Exception as exc:
            report.setdefault("disconnect_error", describe_error(exc, "disconnect"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="WebSocket URL of the server under test")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--image", required=True, help="a local PNG, JPEG or WEBP file")
    parser.add_argument("--input-form", choices=("datauri", "base64", "path"), default="datauri")
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--model", default=None, help="AIR id (default: none sent)")
    parser.add_argument("--output-type", choices=("URL", "base64Data", "dataURI"), default=None)
    parser.add_argument("--output-format", choices=("JPG", "PNG", "WEBP"), default=None)
    parser.add_argument("--include-cost", action="store_true")
    parser.add_argument("--delivery", choices=("sync", "async"), default="sync")
    parser.add_argument("--step-timeout", type=float, default=30.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the scenario with the network guarded, then print the one-line JSON report."""
    return run_and_report("runware", scenario, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
