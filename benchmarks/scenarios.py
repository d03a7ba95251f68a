"""What the harness runs: the contenders and the scenarios, as data.

A scenario fixes the stub server's knobs (latency, results per frame, result size) and the
workload (task count, window, batch, input). Every contender of a scenario runs against the same
stub process, one after the other, and every figure is divided by the raw floor's figure from
that same scenario.

``--quick`` scales every scenario down (see ``Scenario.quick``) so the whole run takes about a
minute; contenders too slow to finish a full scenario in reasonable time get a task cap
(``caps``), reported as the N column of the results table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

SdkPackage = Literal["runware", "runware-sdk"]


@dataclass(frozen=True, slots=True)
class Contender:
    """One client under test: a script under ``benchmarks/contenders/`` and its fixed options.

    Attributes:
        key: short name used on the command line (``--contenders``) and in the results.
        label: what the tables and the chart call it.
        script: file name under ``benchmarks/contenders/``.
        options: extra command-line options of the script.
        venv: which official SDK's environment runs it (``benchmarks.compat``); ``None`` means the
            harness's own interpreter, with ``<repo>/src`` on ``PYTHONPATH``.
        delivery: ``deliveryMethod`` the contender asks for.
    """

    key: str
    label: str
    script: str
    options: tuple[str, ...] = ()
    venv: SdkPackage | None = None
    delivery: Literal["sync", "async"] = "sync"


CONTENDERS: dict[str, Contender] = {
    c.key: c
    for c in (
        Contender("floor", "raw floor", "raw_floor.py"),
        Contender("floor-uvloop", "raw floor + uvloop", "raw_floor.py", ("--uvloop",)),
        Contender(
            "us-default", "upscale_stream (defaults)", "upscale_stream_client.py", ("--defaults",)
        ),
        Contender("us-upscale", "upscale_stream upscale()", "upscale_stream_client.py"),
        Contender(
            "us-tuned",
            "upscale_stream upscale() + uvloop",
            "upscale_stream_client.py",
            ("--uvloop",),
        ),
        Contender(
            "us-many", "upscale_stream upscale_many", "upscale_stream_client.py", ("--api", "many")
        ),
        Contender(
            "us-many-uvloop",
            "upscale_stream upscale_many + uvloop",
            "upscale_stream_client.py",
            ("--api", "many", "--uvloop"),
        ),
        Contender(
            "us-picows",
            "upscale_stream upscale() + uvloop + picows",
            "upscale_stream_client.py",
            ("--uvloop", "--transport", "picows"),
        ),
        Contender(
            "us-many-picows",
            "upscale_stream upscale_many + uvloop + picows",
            "upscale_stream_client.py",
            ("--api", "many", "--uvloop", "--transport", "picows"),
        ),
        Contender(
            "us-soak",
            "upscale_stream upscale_many soak",
            "upscale_stream_client.py",
            ("--uvloop", "--soak"),
        ),
        Contender(
            "us-async",
            "upscale_stream async",
            "upscale_stream_client.py",
            ("--uvloop",),
            delivery="async",
        ),
        Contender("lean", "lean per-caller yardstick", "lean_callers.py"),
        Contender(
            "lean-uvloop", "lean per-caller yardstick + uvloop", "lean_callers.py", ("--uvloop",)
        ),
        Contender("pyl", "runware 0.5.24", "runware_pyl.py", venv="runware"),
        Contender("pyn-sync", "runware-sdk 1.8.0 sync", "runware_pyn.py", venv="runware-sdk"),
        Contender(
            "pyn-async",
            "runware-sdk 1.8.0 async",
            "runware_pyn.py",
            venv="runware-sdk",
            delivery="async",
        ),
        Contender("bytes-floor", "bytes floor", "raw_bytes_floor.py"),
        Contender(
            "bytes-floor-uvloop", "bytes floor + uvloop", "raw_bytes_floor.py", ("--uvloop",)
        ),
        Contender(
            "us-bytes",
            "upscale_stream upscale_many + read_bytes",
            "upscale_stream_client.py",
            ("--api", "many"),
        ),
        Contender(
            "us-bytes-uvloop",
            "upscale_stream upscale_many + read_bytes + uvloop",
            "upscale_stream_client.py",
            ("--api", "many", "--uvloop"),
        ),
    )
}

#: Which floor each contender is divided by: the one on the same event loop, doing the same work.
FLOOR_OF: dict[str, str] = {
    "floor-uvloop": "floor",
    "us-tuned": "floor-uvloop",
    "lean-uvloop": "floor-uvloop",
    "us-many-uvloop": "floor-uvloop",
    "us-picows": "floor-uvloop",
    "us-many-picows": "floor-uvloop",
    "us-async": "floor-uvloop",
    "bytes-floor": "bytes-floor",
    "bytes-floor-uvloop": "bytes-floor",
    "us-bytes": "bytes-floor",
    "us-bytes-uvloop": "bytes-floor-uvloop",
}
"""Contenders not listed are divided by the asyncio raw floor (``FLOOR``)."""

#: The contender every ratio is taken against.
FLOOR = "floor"

#: The upscale() and upscale_many contenders on both loops, each beside its floor.
_OURS = ("us-upscale", "us-tuned", "us-many", "us-many-uvloop", "us-picows", "us-many-picows")
_ALL_ONE_SHOT = ("floor", "floor-uvloop", *_OURS, "us-default", "pyl", "pyn-sync", "pyn-async")
#: No clients: yardsticks of what a shape costs by itself (`contenders/lean_callers.py`: the
#: per-caller shape of `upscale()` with nothing of a library in it), no targets of their own.
_YARDSTICKS = ("lean", "lean-uvloop")
_BYTES = ("bytes-floor", "bytes-floor-uvloop", "us-bytes", "us-bytes-uvloop")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One stub configuration and workload.

    Attributes:
        key: short name (``--only``).
        title: one line for the report.
        tasks: tasks per contender run.
        window: most tasks in flight (``--window``).
        batch: most tasks per client frame (``--batch``).
        latency_ms: stub ``--latency-ms``.
        group: stub ``--group`` (most result items per frame).
        result_bytes: stub ``--result-bytes`` (0 = plain URL items, about 270 bytes).
        contenders: keys of the contenders to run, in order; the floor first.
        caps: per-contender task cap for contenders that would take minutes otherwise.
        png_input: send a 256x256 noise PNG as a data URI in every task.
        bytes_path: the bytes-path scenario: real PNG/JPEG inputs (``noise_png.write_bytes_inputs``)
            sent as files, every result carrying a ``result_image_px`` square noise PNG, as
            ``"base64Data"`` or as a ``"URL"`` the stub serves over HTTP; ``None`` otherwise.
        result_image_px: side of the bytes-path result PNG (512: 768 KiB, 1 MiB in base64).
        rate_fraction: offer this fraction of ``rate_basis``'s peak rate (measured first, flat
            out, against the same stub) to every contender instead of running flat out.
        rate_basis: the contender whose peak sets the offered rate (the raw floor if its
            calibration run fails).
        quick_divisor: ``--quick`` divides ``tasks`` and ``caps`` by this.
        rss_interval_s: soak RSS sampling period.
        timeout_s: wall-clock limit of one contender run.
    """

    key: str
    title: str
    tasks: int
    window: int = 500
    batch: int = 50
    latency_ms: float = 0.0
    group: int = 1
    result_bytes: int = 0
    contenders: tuple[str, ...] = _ALL_ONE_SHOT
    caps: dict[str, int] = field(default_factory=dict)
    png_input: bool = False
    bytes_path: Literal["base64Data", "URL"] | None = None
    result_image_px: int = 512
    rate_fraction: float | None = None
    rate_basis: str = "us-tuned"
    quick_divisor: int = 10
    rss_interval_s: float = 10.0
    timeout_s: float = 300.0

    def tasks_for(self, contender: str) -> int:
        """The task count of one contender in this scenario (N, or its cap if lower)."""
        return min(self.tasks, self.caps.get(contender, self.tasks))

    def quick(self) -> Scenario:
        """The about-a-minute version: fewer tasks, smaller caps, shorter limits."""
        return replace(
            self,
            tasks=max(1, self.tasks // self.quick_divisor),
            caps={k: max(1, v // self.quick_divisor) for k, v in self.caps.items()},
            rss_interval_s=min(self.rss_interval_s, 1.0),
            timeout_s=min(self.timeout_s, 120.0),
        )

    def with_timeout(self, timeout_s: float) -> Scenario:
        """This scenario with another limit on one contender run."""
        return replace(self, timeout_s=timeout_s)

    def with_tasks(self, tasks: int) -> Scenario:
        """This scenario with every task count (caps and soak included) at most ``tasks``."""
        return replace(
            self,
            tasks=tasks,
            caps={k: min(v, tasks) for k, v in self.caps.items()},
        )


SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in (
        Scenario(
            "zero-g1",
            "20k tasks, 0 ms latency, 1 result per frame",
            tasks=20_000,
            contenders=(*_ALL_ONE_SHOT, *_YARDSTICKS, "us-async"),
            caps={"pyn-async": 5_000, "us-async": 5_000},
        ),
        Scenario(
            "zero-g50",
            "20k tasks, 0 ms latency, up to 50 results per frame",
            tasks=20_000,
            group=50,
            contenders=(*_ALL_ONE_SHOT, *_YARDSTICKS),
            caps={"pyn-async": 5_000},
        ),
        Scenario(
            "lat200",
            "20k tasks, 200 ms latency, window 2000, 1 result per frame",
            tasks=20_000,
            window=2_000,
            latency_ms=200.0,
            contenders=(
                "floor",
                "floor-uvloop",
                "us-default",
                "us-tuned",
                "pyl",
                "pyn-sync",
                "pyn-async",
                "us-async",
            ),
            caps={"pyl": 1_500},  # 15 in flight / 0.2 s = 75 tasks/s
        ),
        Scenario(
            "datauri",
            "2k tasks with a 256x256 PNG sent as a data URI, window 100, arrays of 10",
            tasks=2_000,
            window=100,
            batch=10,
            png_input=True,
            contenders=(
                "floor",
                "floor-uvloop",
                "us-default",
                "us-tuned",
                "pyl",
                "pyn-sync",
                "pyn-async",
            ),
            caps={"pyn-async": 500},
        ),
        Scenario(
            "halfload",
            "20k tasks offered at half of upscale_stream's peak rate, 0 ms latency, 1 result/frame",
            tasks=20_000,
            rate_fraction=0.5,
            contenders=(
                "floor",
                "floor-uvloop",
                "us-default",
                "us-upscale",
                "us-tuned",
                "us-many-uvloop",
            ),
        ),
        Scenario(
            "bytes-b64",
            "the bytes path: 400 PNG/JPEG files of 0.1-0.9 MB in, 1 MB of base64Data per result",
            tasks=400,
            window=32,
            batch=1,  # MB-sized tasks: an array would only delay the first of them
            bytes_path="base64Data",
            contenders=_BYTES,
            quick_divisor=4,
        ),
        Scenario(
            "bytes-url",
            "the bytes path: 400 PNG/JPEG files in, results as URLs fetched over kept-alive HTTP",
            tasks=400,
            window=32,
            batch=1,  # MB-sized tasks: an array would only delay the first of them
            bytes_path="URL",
            contenders=_BYTES,
            quick_divisor=4,
        ),
        Scenario(
            "soak",
            "1M tasks through upscale_many, RSS sampled every 10 s (floor: same N, for the ratio)",
            tasks=1_000_000,
            quick_divisor=50,
            contenders=("floor", "us-soak"),
            timeout_s=1_800.0,
        ),
    )
}
