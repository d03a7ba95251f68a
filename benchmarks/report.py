"""Turn the harness's records into ``RESULTS.md`` and ``chart.png``.

Every figure is shown next to its ratio to the floor of the same scenario, on the same event
loop and doing the same work (``scenarios.FLOOR_OF``: the raw floor, the uvloop floor, or the
bytes floor), because absolute numbers on a shared 2-core machine drift from run to run while
ratios hold. The targets use *paired* ratios where both sides have several runs: the median, over
the rounds, of a contender's run divided by its floor's run of the same round (the harness
alternates contenders, so a round's runs share the machine's load). The issue's targets are
checked at the top of the report, each with its verdict.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks.scenarios import FLOOR, FLOOR_OF, Contender, Scenario

REPO_ROOT = Path(__file__).resolve().parent.parent

Record = dict[str, Any]
#: Stub CPU at or above this share of one core means the stub, not the client, set the pace.
SATURATED_PCT = 90.0
Metric = Callable[[Record], float | None]


# ---------------------------------------------------------------------------------------------
# figures of one record


def tasks_per_s(line: dict[str, Any]) -> float:
    """Completed tasks per second of wall time in a report line."""
    wall = line.get("wall_s") or 0.0
    return (line.get("ok") or 0) / wall if wall > 0 else 0.0


def _line(record: Record) -> dict[str, Any] | None:
    return record.get("report") if record.get("status") in ("ok", "incomplete") else None


def throughput(record: Record) -> float | None:
    """Tasks per second."""
    line = _line(record)
    return None if line is None else tasks_per_s(line)


def cpu_us_per_task(record: Record) -> float | None:
    """The contender's own CPU time during the run, per completed task, in microseconds."""
    line = _line(record)
    if line is None or not line.get("ok"):
        return None
    return float(line["cpu_s"]) / float(line["ok"]) * 1e6


def p50_ms(record: Record) -> float | None:
    """Median task latency, ms."""
    line = _line(record)
    return None if line is None else line.get("lat_p50_ms")


def p99_ms(record: Record) -> float | None:
    """99th percentile task latency, ms."""
    line = _line(record)
    return None if line is None else line.get("lat_p99_ms")


def peak_rss(record: Record) -> float | None:
    """Peak RSS the contender reported (MiB), else the harness's sampled peak."""
    line = _line(record)
    if line is None:
        return None
    value = line.get("peak_rss_mib") or record.get("sampled_peak_rss_mib")
    return None if value is None else float(value)


def stub_cpu_pct(record: Record) -> float | None:
    """How busy the stub was while serving this contender (100 = one core saturated)."""
    stub = record.get("stub") or {}
    wall = stub.get("wall_s")
    return None if not wall else 100.0 * stub.get("stub_cpu_s", 0.0) / wall


def wire_mb_s(record: Record, direction: str) -> float | None:
    """MB/s on the wire, ``"up"`` (client to server) or ``"down"``, counted by the stub."""
    line, stub = _line(record), record.get("stub") or {}
    if line is None or not line.get("wall_s") or not stub:
        return None
    octets = stub.get("bytes_in" if direction == "up" else "bytes_out", 0)
    return float(octets) / float(line["wall_s"]) / 1e6


def payload_mb_s(record: Record, direction: str = "out") -> float | None:
    """Image MB/s end to end on the bytes path: ``"in"`` (files read) or ``"out"`` (written)."""
    line = _line(record)
    if line is None or not line.get("wall_s"):
        return None
    octets = line.get("payload_bytes_in" if direction == "in" else "payload_bytes_out")
    return None if octets is None else float(octets) / float(line["wall_s"]) / 1e6


def floor_key(contender: str) -> str:
    """The contender a contender's ratios are taken against."""
    return FLOOR_OF.get(contender.removesuffix("-peak"), FLOOR)


def floor_of(records: list[Record], record: Record) -> Record | None:
    """The floor record of ``record``'s scenario (its own floor for a floor)."""
    key = floor_key(record["contender"])
    return next(
        (r for r in records if r["scenario"] == record["scenario"] and r["contender"] == key),
        None,
    )


def paired_ratio(record: Record, floor: Record | None, runs_key: str) -> float | None:
    """Median over rounds of ``record``'s run / ``floor``'s run of the same round.

    ``runs_key`` is ``"runs_tasks_per_s"`` or ``"runs_cpu_us"``. Falls back to the ratio of
    the kept (median) runs when either side has a single run or the lists cannot be paired.
    """
    if floor is None:
        return None
    mine, theirs = record.get(runs_key) or [], floor.get(runs_key) or []
    pairs: list[float] = [float(a) / b for a, b in zip(mine, theirs, strict=False) if b]
    if len(pairs) >= 2 and record.get("rate") == floor.get("rate"):
        pairs.sort()
        middle = len(pairs) // 2
        return pairs[middle] if len(pairs) % 2 else (pairs[middle - 1] + pairs[middle]) / 2
    metric = throughput if runs_key == "runs_tasks_per_s" else cpu_us_per_task
    value, base = metric(record), metric(floor)
    return None if value is None or not base else value / base


def bytes_speed(megabytes: int = 32) -> dict[str, float]:
    """This machine's single-core memcpy, base64 encode and base64 decode speed, MB/s.

    The bytes path cannot beat these: every image byte is base64-encoded once (the data URI),
    decoded once (``imageBase64Data``), and copied a few times between the file, the frame and
    the socket. Best of 3 on ``megabytes`` MB of random bytes.
    """
    import base64
    import random as _random

    block = _random.Random(0).randbytes(megabytes * 1_000_000)
    encoded = base64.b64encode(block)

    def best(work: Callable[[], object], octets: int) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return round(octets / min(times) / 1e6, 1)

    return {
        "memcpy": best(lambda: bytearray(block), len(block)),
        "b64encode": best(lambda: base64.b64encode(block), len(block)),
        "b64decode": best(lambda: base64.b64decode(encoded), len(block)),
    }


def frames_per_task(record: Record, direction: str) -> float | None:
    """WebSocket messages per task in one direction, counted by the stub."""
    stub = record.get("stub") or {}
    if not stub.get("tasks"):
        return None
    frames = stub.get("frames_in" if direction == "up" else "frames_out", 0)
    return float(frames) / float(stub["tasks"])


# ---------------------------------------------------------------------------------------------
# formatting


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def progress_line(record: Record) -> str:
    """One line for the harness's stderr progress log."""
    name = f"  {record['contender']:<13}"
    if record.get("status") not in ("ok", "incomplete"):
        return f"{name}{record.get('status')}: {record.get('error', '')}"
    return (
        f"{name}{_fmt(throughput(record), 0):>9} tasks/s"
        f"  {_fmt(cpu_us_per_task(record)):>7} us/task"
        f"  p99 {_fmt(p99_ms(record), 2):>8} ms  rss {_fmt(peak_rss(record))} MiB"
        f"  (stub {_fmt(stub_cpu_pct(record), 0)}% CPU)"
        + ("" if record["status"] == "ok" else " INCOMPLETE")
    )


# ---------------------------------------------------------------------------------------------
# machine and versions


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def _git_revision() -> str:
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no commit yet?)"
    return head + (" with uncommitted changes" if dirty else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _sdk_versions(package: str) -> dict[str, str]:
    from benchmarks.compat import venv_dir

    python = venv_dir(package) / "bin" / "python"  # type: ignore[arg-type]
    if not python.exists():
        return {"status": "not created"}
    probe = (
        "import importlib.metadata as m, sys, json;"
        f"print(json.dumps({{'package': m.version({package!r}), "
        "'websockets': m.version('websockets'), 'python': sys.version.split()[0]}))"
    )
    try:
        out = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return {"status": f"probe failed: {exc}"}
    import json

    return dict(json.loads(out))


def machine_info(contenders: Iterable[Contender]) -> dict[str, Any]:
    """Where and with what the run happened."""
    venvs = sorted({c.venv for c in contenders if c.venv is not None})
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": None if (m := _memory_gib()) is None else round(m, 1),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "packages": {
            name: _version(name)
            for name in ("upscale-stream", "websockets", "orjson", "uvloop", "matplotlib")
        },
        "git": _git_revision(),
        "sdk_venvs": {package: _sdk_versions(package) for package in venvs},
    }


def scenario_info(scenario: Scenario) -> dict[str, Any]:
    """The knobs of a scenario as run (after --quick/--tasks)."""
    return {
        "key": scenario.key,
        "title": scenario.title,
        "tasks": scenario.tasks,
        "window": scenario.window,
        "batch": scenario.batch,
        "latency_ms": scenario.latency_ms,
        "group": scenario.group,
        "result_bytes": scenario.result_bytes,
        "png_input": scenario.png_input,
        "bytes_path": scenario.bytes_path,
        "result_image_px": scenario.result_image_px,
        "rate_fraction": scenario.rate_fraction,
        "rate_basis": scenario.rate_basis,
        "rss_interval_s": scenario.rss_interval_s,
    }


# ---------------------------------------------------------------------------------------------
# targets from the issue


def _find(records: list[Record], scenario: str, contender: str) -> Record | None:
    for record in records:
        if record["scenario"] == scenario and record["contender"] == contender:
            return record
    return None


def _verdict(
    what: str, measured: float | None, limit: float | None, *, at_least: bool, unit: str = ""
) -> tuple[str, str, str, str]:
    """One target row: (what, measured, limit, pass/FAIL/not measured)."""

    def show(value: float) -> str:
        if unit == "x":
            return f"{value:.2f}x"
        return _fmt(value, 0 if not unit else 2) + unit

    if measured is None or limit is None:
        return what, "-" if measured is None else show(measured), "-", "not measured"
    passed = measured >= limit if at_least else measured <= limit
    return what, show(measured), show(limit), "pass" if passed else "FAIL"


#: The contenders the throughput and CPU targets apply to: (key, what the row calls it).
OURS = (
    ("us-upscale", "upscale(), asyncio"),
    ("us-tuned", "upscale(), uvloop"),
    ("us-many", "upscale_many, asyncio"),
    ("us-many-uvloop", "upscale_many, uvloop"),
)


def targets(run: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The issue's targets: (what, measured, limit, verdict), one row per contender and loop."""
    records = run["records"]
    scenarios = {s["key"]: s for s in run["scenarios"]}

    def get(scenario: str, contender: str, metric: Metric) -> float | None:
        record = _find(records, scenario, contender)
        return None if record is None else metric(record)

    def paired(scenario: str, contender: str, runs_key: str) -> float | None:
        record = _find(records, scenario, contender)
        return None if record is None else paired_ratio(record, floor_of(records, record), runs_key)

    def scaled(value: float | None, factor: float, offset: float = 0.0) -> float | None:
        return None if value is None else value * factor + offset

    rows = []
    for key in ("zero-g1", "zero-g50"):
        for contender, what in OURS:
            rows.append(
                _verdict(
                    f"{key}: {what}: tasks/s >= 0.9 x floor ({floor_key(contender)})",
                    paired(key, contender, "runs_tasks_per_s"),
                    0.9,
                    at_least=True,
                    unit="x",
                )
            )
    for contender, what in OURS:
        rows.append(
            _verdict(
                f"zero-g50: {what}: CPU/task <= 1.3 x floor's ({floor_key(contender)})",
                paired("zero-g50", contender, "runs_cpu_us"),
                1.3,
                at_least=False,
                unit="x",
            )
        )
    for key in ("zero-g50",):
        for contender, what in OURS:
            rows.append(
                _verdict(
                    f"{key}: {what}: CPU/task <= 1/10 of runware-sdk 1.8.0 sync",
                    get(key, contender, cpu_us_per_task),
                    scaled(get(key, "pyn-sync", cpu_us_per_task), 0.1),
                    at_least=False,
                    unit=" us",
                )
            )
    for contender, what in (
        ("us-upscale", "upscale(), asyncio"),
        ("us-tuned", "upscale(), uvloop"),
        ("us-many-uvloop", "upscale_many, uvloop"),
    ):
        rows.append(
            _verdict(
                f"halfload: {what}: p99 <= floor p99 + 1 ms ({floor_key(contender)}, "
                "both from the due time)",
                get("halfload", contender, p99_ms),
                scaled(get("halfload", floor_key(contender), p99_ms), 1.0, 1.0),
                at_least=False,
                unit=" ms",
            )
        )
    for key in ("bytes-b64", "bytes-url"):
        for contender, what in (("us-bytes", "asyncio"), ("us-bytes-uvloop", "uvloop")):
            rows.append(
                _verdict(
                    f"{key}: {what}: MB/s >= 0.95 x bytes floor ({floor_key(contender)})",
                    paired(key, contender, "runs_tasks_per_s"),
                    0.95,
                    at_least=True,
                    unit="x",
                )
            )
            rows.append(
                _verdict(
                    f"{key}: {what}: CPU/task <= 1.1 x bytes floor's",
                    paired(key, contender, "runs_cpu_us"),
                    1.1,
                    at_least=False,
                    unit="x",
                )
            )
    lat200 = scenarios.get("lat200")
    rows.append(
        _verdict(
            "lat200: tasks/s >= 0.9 x window/latency",
            get("lat200", "us-tuned", throughput),
            None if lat200 is None else 0.9 * lat200["window"] / (lat200["latency_ms"] / 1000.0),
            at_least=True,
        )
    )
    rows.append(
        _verdict(
            "lat200: tasks/s >= 20 x runware 0.5.24",
            get("lat200", "us-tuned", throughput),
            scaled(get("lat200", "pyl", throughput), 20.0),
            at_least=True,
        )
    )
    soak = _find(records, "soak", "us-soak")
    soak_line = None if soak is None else _line(soak)
    rows.append(
        _verdict(
            "soak: RSS growth <= 50 MiB",
            None if soak_line is None else soak_line.get("rss_growth_mib"),
            50.0,
            at_least=False,
            unit=" MiB",
        )
    )
    return rows


def bytes_ceiling_lines(run: dict[str, Any]) -> list[str]:
    """What this machine's memcpy and base64 allow, beside the bytes path's measured MB/s."""
    speed = run["machine"].get("bytes_speed")
    if not speed:
        return []
    lines = [
        "",
        f"This machine, one core: memcpy {speed['memcpy']:,.0f} MB/s, base64 encode "
        f"{speed['b64encode']:,.0f} MB/s, base64 decode {speed['b64decode']:,.0f} MB/s "
        "(`report.bytes_speed`, best of 3 on 32 MB).",
    ]
    # The unavoidable per-byte work of the base64 path on one core: encode each input byte,
    # decode each output byte (the output is the larger side); copies come on top.
    for record in run["records"]:
        if record["contender"] not in ("bytes-floor", "bytes-floor-uvloop", "us-bytes-uvloop"):
            continue
        out, into = payload_mb_s(record, "out"), payload_mb_s(record, "in")
        if not out or not into:
            continue
        # The floor's unavoidable per-byte work on one core: b64-encode every input byte, and
        # on the base64Data path b64-decode every output byte. What share of a second is that?
        busy = into / speed["b64encode"]
        if record["scenario"] == "bytes-b64":
            busy += out / speed["b64decode"]
        lines.append(
            f"- {record['scenario']}, {record['label']}: {into:,.0f} MB/s in, {out:,.0f} MB/s "
            f"out; the stdlib's base64 alone would keep one core {busy:.0%} busy at that rate."
        )
    return lines


# ---------------------------------------------------------------------------------------------
# RESULTS.md


_COLUMNS: list[tuple[str, Metric, int]] = [
    ("tasks/s", throughput, 0),
    ("CPU µs/task", cpu_us_per_task, 1),
    ("p50 ms", p50_ms, 2),
    ("p99 ms", p99_ms, 2),
    ("peak RSS MiB", peak_rss, 1),
]


def _table(records: list[Record]) -> list[str]:
    """The scenario's table; each ratio is to the row's own floor (``FLOOR_OF``)."""
    payload = any(payload_mb_s(r) is not None for r in records)
    head = ["contender", "N", "status"]
    if payload:
        head += ["image MB/s in / out", "xfloor"]
    for title, _, _ in _COLUMNS:
        head += [title, "xfloor"]
    head += [
        "paired xfloor tasks/s, CPU",
        "wire MB/s up / down",
        "frames/task up / down",
        "stub CPU",
        "runs (tasks/s)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for record in records:
        floor = floor_of(records, record)
        cells = [record["label"], f"{record.get('tasks', '-'):,}", record.get("status", "?")]
        if payload:
            out = payload_mb_s(record)
            cells.append(f"{_fmt(payload_mb_s(record, 'in'))} / {_fmt(out)}")
            cells.append(_ratio(out, None if floor is None else payload_mb_s(floor)))
        for _, metric, digits in _COLUMNS:
            value = metric(record)
            cells += [_fmt(value, digits), _ratio(value, None if floor is None else metric(floor))]
        pairs = [paired_ratio(record, floor, key) for key in ("runs_tasks_per_s", "runs_cpu_us")]
        cells.append(" / ".join("-" if v is None else f"{v:.2f}x" for v in pairs))
        cells.append(f"{_fmt(wire_mb_s(record, 'up'))} / {_fmt(wire_mb_s(record, 'down'))}")
        up, down = frames_per_task(record, "up"), frames_per_task(record, "down")
        cells.append(f"{_fmt(up, 3)} / {_fmt(down, 3)}")
        busy = stub_cpu_pct(record)
        if busy is None:
            cells.append("-")
        else:
            cells.append(f"{busy:.0f}%" + (" (saturated)" if busy >= SATURATED_PCT else ""))
        cells.append(", ".join(_fmt(v, 0) for v in record.get("runs_tasks_per_s", [])) or "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _soak_lines(records: list[Record]) -> list[str]:
    lines = []
    for record in records:
        line = _line(record)
        if line is None or "rss_samples" not in line:
            continue
        lines += [
            "",
            f"RSS of {record['label']} (sampled every {line['rss_interval_s']:g} s): start "
            f"{line['rss_start_mib']:.1f} MiB, end {line['rss_end_mib']:.1f} MiB, growth "
            f"{line['rss_growth_mib']:.1f} MiB (max {line['rss_max_growth_mib']:.1f} MiB), "
            f"second-half trend {_fmt(line['rss_trend_mib_per_min'], 2)} MiB/min.",
            "",
            "| s into run | tasks done | RSS MiB |",
            "|---|---|---|",
        ]
        lines += [f"| {t:.1f} | {done:,} | {rss:.1f} |" for t, done, rss in line["rss_samples"]]
    return lines


def headline(run: dict[str, Any]) -> list[str]:
    """The few ratios the README quotes (paired with the floor on the same loop)."""
    records = run["records"]
    out = []

    def paired(scenario: str, contender: str, runs_key: str) -> str:
        record = _find(records, scenario, contender)
        value = (
            None if record is None else paired_ratio(record, floor_of(records, record), runs_key)
        )
        return "-" if value is None else f"{value:.2f}x"

    def ratio(scenario: str, a: str, b: str, metric: Metric) -> str | None:
        ra, rb = _find(records, scenario, a), _find(records, scenario, b)
        va = None if ra is None else metric(ra)
        vb = None if rb is None else metric(rb)
        return None if va is None or not vb else f"{va / vb:.2f}x"

    for key, what in (("zero-g1", "1 result per frame"), ("zero-g50", "50 results per frame")):
        if not any(r["scenario"] == key for r in records):
            continue
        shown = ", ".join(
            f"{label} {paired(key, contender, 'runs_tasks_per_s')} "
            f"(CPU {paired(key, contender, 'runs_cpu_us')})"
            for contender, label in OURS
        )
        out.append(f"- Throughput vs the floor on the same loop, {what}: {shown}.")
    for key in ("bytes-b64", "bytes-url"):
        if any(r["scenario"] == key for r in records):
            out.append(
                f"- Bytes path ({key}), image MB/s vs the bytes floor: asyncio "
                f"{paired(key, 'us-bytes', 'runs_tasks_per_s')}, uvloop "
                f"{paired(key, 'us-bytes-uvloop', 'runs_tasks_per_s')} (CPU "
                f"{paired(key, 'us-bytes', 'runs_cpu_us')}, "
                f"{paired(key, 'us-bytes-uvloop', 'runs_cpu_us')})."
            )
    for sdk, label in (("pyn-sync", "runware-sdk 1.8.0 (sync)"), ("pyl", "runware 0.5.24")):
        value = ratio("zero-g50", "us-tuned", sdk, cpu_us_per_task)
        if value:
            out.append(f"- Client CPU per task vs {label}, 50 per frame: {value}.")
        value = ratio("zero-g1", "us-tuned", sdk, throughput)
        if value:
            out.append(f"- Throughput vs {label} (0 ms latency): {value}.")
    value = ratio("lat200", "us-tuned", "pyl", throughput)
    if value:
        out.append(f"- Throughput vs runware 0.5.24 at 200 ms latency: {value}.")
    return out


def instruction_lines(run: dict[str, Any]) -> list[str]:
    """The instruction counts of the run (``benchmarks.icount``), each shape against the
    floor on the same loop and frame size; nothing when the run has none."""
    rows = run.get("instructions")
    if not rows:
        return []
    floors = {(r["group"], r["uvloop"]): r for r in rows if r["label"].startswith("raw floor")}
    lines = [
        "",
        "## Instructions per task (callgrind)",
        "",
        "The client process's user-space instructions per task over a real socket, counted by "
        "`python -m benchmarks.icount` (4,000 tasks, window 500, arrays of 50, the stub "
        "native): a figure this machine's load does not move (repeats agree to ~0.5 %), "
        "where the wall-clock rows above swing by tens of per cent between runs. System calls "
        "are not in it. The targets stay the wall clock's; at 50 results per frame a client "
        "that is CPU-bound on its core, as these are, reaches 0.9x the floor's throughput at "
        "about 1.11x its instructions. The lean per-caller yardstick "
        "(`contenders/lean_callers.py`) is no client: W callers each awaiting a future, a "
        "writer and a msgspec reader, nothing else; it is what the shape of `upscale()` costs "
        "by itself on each loop. Instructions are not cycles: the yardstick's run ~25 % "
        "faster than the floor's and upscale_stream's (its wall-clock rows, in the zero-g "
        "scenarios above), so the yardstick's xfloor here overstates what its shape costs.",
        "",
        "| shape | results per frame | instructions per task | xfloor |",
        "|---|---|---|---|",
    ]
    for row in rows:
        floor = floors.get((row["group"], row["uvloop"]))
        ratio = (
            f"{row['instructions_per_task'] / floor['instructions_per_task']:.2f}x"
            if floor is not None
            else "-"
        )
        lines.append(
            f"| {row['label']} | {row['group']} | {row['instructions_per_task']:,} | {ratio} |"
        )
    return lines


def write_results_md(path: Path, run: dict[str, Any], chart: Path | None) -> None:
    """Write the report."""
    machine = run["machine"]
    records = run["records"]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(run["started"]))
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `{run['command']}` on {started} in {run['duration_s']:.0f} s"
        + (" (**quick mode: small N, indicative only**)" if run["quick"] else "")
        + f"; up to {run['repeat']} runs per contender, the median kept. Regenerate with "
        "`make bench` (full) or `make bench-quick`.",
        "",
        "Every contender is a separate process driving the same stub server process "
        "(`benchmarks/stub_server.py`: correct protocol, no image work), one contender at a "
        "time, in rounds that alternate them (floor, A, B, floor, A, B, ...). *xfloor* divides "
        "each figure by its floor's in the same scenario: the raw floor (the simplest websockets "
        "+ orjson client) on the same event loop, or on the bytes path the bytes floor (file "
        "read, base64, JSON, socket, base64 decode, file write, nothing else). *paired xfloor* "
        "is the median over rounds of run / floor's run of the same round, the figure the "
        "targets use. CPU is the contender process's own user + system time during the run "
        "(imports, connect and one warm-up task excluded). Latency runs from each task's **due "
        "time** to its result, for every contender: with an offered rate, task i is due at i/rate "
        "s; flat out, when its window slot opened. *stub CPU* is the stub's share of one core "
        "while it served that contender; marked *saturated*, the stub rather than the client set "
        "the pace, so that row's throughput is a lower bound.",
        "",
        "Where upscale_stream's time goes, what was removed from its hot path (before and "
        "after) and what would close the remaining gaps: [PROFILE.md](PROFILE.md).",
        "",
        "## Headline",
        "",
        *(headline(run) or ["- (the scenarios the headline needs were not run)"]),
    ]
    if chart is not None:
        lines += ["", f"![throughput and CPU per task as ratios to the floor]({chart.name})"]
    lines += ["", "## Targets (issue 14), with their verdicts", ""]
    lines += ["| target | measured | limit | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets(run)]
    lines += bytes_ceiling_lines(run)
    lines += instruction_lines(run)
    lines += ["", "## Machine", ""]
    lines += [
        f"- CPU: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
        f"{machine['memory_gib']} GiB RAM",
        f"- OS: {machine['os']}",
        f"- Python: {machine['python']}",
        "- Packages (harness, stub, floor, upscale_stream): "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
        f"- Repository: {machine['git']}",
    ]
    for package, info in machine["sdk_venvs"].items():
        shown = ", ".join(f"{k} {v}" for k, v in info.items())
        lines.append(f"- `.venv-compat` for {package}: {shown}")
    for scenario in run["scenarios"]:
        rows = [r for r in records if r["scenario"] == scenario["key"]]
        knobs = (
            f"N={scenario['tasks']:,}, window {scenario['window']}, arrays of {scenario['batch']}, "
            f"stub latency {scenario['latency_ms']:g} ms, "
            f"results per frame: up to {scenario['group']}"
        )
        if scenario["png_input"]:
            knobs += ", input: 256x256 noise PNG as a data URI"
        if scenario.get("bytes_path"):
            knobs += (
                ", inputs: 24 PNG/JPEG files of 0.1-0.9 MB (cycled), passed as files; results: a "
                f"{scenario['result_image_px']}px noise PNG as {scenario['bytes_path']}"
            )
        if scenario["rate_fraction"]:
            rates = {r.get("rate") for r in rows if r.get("rate")}
            shown_rate = ", ".join(f"{v:,.0f}" for v in rates) or "-"
            knobs += (
                f", offered rate {scenario['rate_fraction']:g} x the peak of the first row"
                f" = {shown_rate} tasks/s"
            )
        lines += ["", f"## {scenario['key']}: {scenario['title']}", "", knobs + ".", ""]
        lines += _table(rows)
        lines += _soak_lines(rows)
        failed = [r for r in rows if r.get("status") not in ("ok",)]
        for record in failed:
            lines += [
                "",
                f"**{record['label']}: {record.get('status')}** — {record.get('error', '')}",
            ]
            if record.get("report", {}).get("first_error"):
                lines.append(f"First task error: `{record['report']['first_error']}`")
            if record.get("stderr_tail"):
                lines += ["", "```", record["stderr_tail"], "```"]
        commands = [r for r in rows if r.get("command")]
        if commands:
            lines += ["", "<details><summary>commands</summary>", "", "```"]
            lines.append(commands[0].get("stub_command", ""))
            lines += [r["command"] for r in commands]
            lines += ["```", "", "</details>"]
    lines += _companion_sections(path.parent)
    lines.append("")
    path.write_text("\n".join(lines))


COMPANIONS = (
    (
        "ray_scaling.md",
        "Ray Data scaling (issue 15)",
        "`python -m benchmarks.ray_scaling --markdown benchmarks/ray_scaling.md` "
        "(run by `make bench`); what limits it on 2 cores: docs/ray.md.",
    ),
    (
        "sr_bench.md",
        "The reference server's engines: Pillow and neural (issue 11)",
        "`python -m benchmarks.sr_bench --markdown benchmarks/sr_bench.md` "
        "(run by `make bench`); the model table: docs/engines.md.",
    ),
)
"""Tables written by the other benchmarks of ``make bench``, included when present."""


def _companion_sections(folder: Path) -> list[str]:
    lines: list[str] = []
    for name, title, command in COMPANIONS:
        table = folder / name
        if table.exists():
            lines += ["", f"## {title}", "", command, "", table.read_text().rstrip()]
    return lines


# ---------------------------------------------------------------------------------------------
# chart


def write_chart(path: Path, run: dict[str, Any]) -> Path | None:
    """The chart: throughput and CPU per task as ratios to the floor, then tasks/s (log).

    The first two panels answer what a reader asks first (how close to the simplest possible
    client, per scenario, on the same loop); floors themselves are left out of them (they are
    1.0 by definition). ``None`` without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install '.[bench]')", file=sys.stderr)
        return None
    all_records = run["records"]
    records = [r for r in all_records if not r["contender"].endswith("-peak")]
    scenarios = [s["key"] for s in run["scenarios"]]
    contenders: list[str] = []
    for record in records:
        if record["contender"] not in contenders:
            contenders.append(record["contender"])
    not_floors = [c for c in contenders if floor_key(c) != c]
    labels = {r["contender"]: r["label"] for r in records}
    colours = plt.get_cmap("tab20")
    colour_of = {c: colours(i % 20) for i, c in enumerate(contenders)}
    figure, axes = plt.subplots(3, 1, figsize=(16, 12.5), constrained_layout=True)

    def ratio_of(runs_key: str) -> Metric:
        def metric(record: Record) -> float | None:
            return paired_ratio(record, floor_of(all_records, record), runs_key)

        return metric

    panels: list[tuple[Any, list[str], Metric, str, bool]] = [
        (axes[0], not_floors, ratio_of("runs_tasks_per_s"), "throughput / floor's (log)", True),
        (axes[1], not_floors, ratio_of("runs_cpu_us"), "CPU per task / floor's (log)", True),
        (axes[2], contenders, throughput, "tasks/s (log)", False),
    ]
    for axis, shown, metric, title, ratio in panels:
        # Each scenario's bars sit side by side: only the contenders it ran take a slot.
        bars: dict[str, tuple[list[float], list[float], list[float]]] = {
            c: ([], [], []) for c in shown
        }
        for position, scenario in enumerate(scenarios):
            present = []
            for contender in shown:
                record = _find(records, scenario, contender)
                value = None if record is None else metric(record)
                if value:
                    present.append((contender, value))
            width = 0.8 / max(1, len(present))
            for index, (contender, value) in enumerate(present):
                xs, ys, widths = bars[contender]
                xs.append(position + (index - (len(present) - 1) / 2) * width)
                ys.append(value)
                widths.append(width)
        for contender in shown:
            xs, ys, widths = bars[contender]
            axis.bar(xs, ys, widths, label=labels[contender], color=colour_of[contender])
        axis.set_yscale("log")
        axis.set_ylabel(title)
        axis.set_xticks(range(len(scenarios)), scenarios)
        axis.grid(axis="y", which="both", alpha=0.3)
        if ratio:
            axis.axhline(1.0, color="black", linewidth=1)
    axes[0].axhline(0.9, color="green", linestyle="--", linewidth=1, label="target 0.9x")
    axes[1].axhline(1.3, color="green", linestyle="--", linewidth=1, label="target 1.3x")
    for axis in axes:
        axis.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    mode = "quick run, " if run["quick"] else ""
    axes[0].set_title(
        "upscale clients against the stub server, as ratios to the floor on the same loop "
        f"({mode}{run['machine']['cpu']})"
    )
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


if __name__ == "__main__":
    print(
        "run `python -m benchmarks.harness`; this module only formats its output", file=sys.stderr
    )
    sys.exit(2)
