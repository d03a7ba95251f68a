"""Where a contender's p99 goes: every cyclic-GC collection of one run, counted and timed.

Starts ``benchmarks/stub_server.py`` on 127.0.0.1 with the ``halfload`` scenario's knobs, sets the
offered rate (``--rate``, or ``--rate-fraction`` of ``us-tuned``'s flat-out peak, measured once
as the harness does), then runs each contender once per option and repeat, alternating, each in
a fresh process with the harness's exact command line. Inside that process
(``python -m benchmarks.gc_probe --child OPTION SCRIPT ARGS...``) the contender's own code runs
unchanged; ``gc.callbacks`` records every collection's generation and duration while the run is
measured, and every task's end time is kept beside its latency.

A task is in a collection's *shadow* when its interval (due time to result) overlaps the
collection or the time after it as long as the collection itself (at half load the backlog a
pause builds takes about as long again to drain). The report gives the p99 with and without
the tasks in gen2 shadows (and in any collection's shadow), and the share of the slowest 1 %
that sit in one.

Options (``--options``, comma-separated; ``NAME@SRC`` runs it against another ``src`` tree):
``baseline``; ``collect`` (``gc.collect()`` after connect and warm-up); ``freeze``
(``gc.collect(); gc.freeze()`` there);
``freeze-import`` (the same right after ``import upscale_stream``); ``lib-freeze`` (the
client's ``gc_freeze=True``, a prototype flag); ``threshold=A[:B[:C]]`` (``gc.set_threshold``);
``disable`` (``gc.disable()`` for the measured run: the GC's whole share). The contenders'
``Meter`` runs ``gc.collect()`` before every measured run by default (the ``collect`` option);
the probe turns that off, so ``baseline`` shows what a run without it meets. ``--census`` adds,
halfway through a run, the tracked objects alive per type beyond those at the start.

Example: ``python -m benchmarks.gc_probe --rate 11000 --options baseline,freeze --repeat 3``.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import importlib
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

_FLOORS = ("floor", "floor-uvloop")


class _Latencies(list[float]):
    """The meter's latency list, also keeping when each latency was appended (the task's end)."""

    def __init__(self, census_at: int, census: Any) -> None:
        super().__init__()
        self.ends: list[float] = []
        self._census_at, self._census = census_at, census

    def append(self, latency: float) -> None:
        self.ends.append(time.perf_counter())
        super().append(latency)
        if len(self) == self._census_at:
            self._census()


class _Probe:
    """The child's instrumentation: GC callbacks, the option, the census, the analysis."""

    def __init__(self, option: str, census: bool) -> None:
        self.option, self.want_census = option, census
        self.events: list[tuple[int, float, float]] = []  # (generation, start, end)
        self._began = 0.0
        self.window = (0.0, float("inf"))
        self.info: dict[str, Any] = {"option": option}
        self._base: Counter[str] = Counter()
        gc.callbacks.append(self._on_gc)
        if option.startswith("threshold="):
            gc.set_threshold(*(int(v) for v in option.split("=", 1)[1].split(":")))

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.events.append((info["generation"], self._began, time.perf_counter()))

    def _census(self) -> None:
        gc.collect()
        now = Counter(type(o).__qualname__ for o in gc.get_objects())
        grown = {k: n - self._base[k] for k, n in now.items() if n > self._base[k]}
        self.info["census_in_flight_tasks"] = grown.get("TaskRecord", 0)
        self.info["census"] = dict(sorted(grown.items(), key=lambda kv: -kv[1])[:20])

    def _snapshot(self, when: str) -> None:
        self.info[f"objects_{when}"] = [len(gc.get_objects(g)) for g in range(3)]
        self.info[f"frozen_{when}"] = gc.get_freeze_count()

    def on_start(self, meter: Any) -> None:
        if self.option in ("freeze", "collect"):
            gc.collect()
            if self.option == "freeze":
                gc.freeze()
        if self.want_census:
            gc.collect()
            self._base = Counter(type(o).__qualname__ for o in gc.get_objects())
        self._snapshot("start")
        self.info["threshold"] = gc.get_threshold()
        self.info["count_start"] = gc.get_count()
        meter.latencies_s = _Latencies(meter.tasks // 2 if self.want_census else -1, self._census)
        if self.option == "disable":
            gc.disable()
        self.info["nivcsw"] = -resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        self.window = (time.perf_counter(), float("inf"))

    def on_stop(self) -> None:
        self.window = (self.window[0], time.perf_counter())
        self.info["nivcsw"] += resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        gc.enable()
        self._snapshot("end")

    def analyse(self, meter: Any) -> dict[str, Any]:
        """Collections per generation, their pauses, and the p99 with and without their shadow."""
        lo, hi = self.window
        events = [e for e in self.events if lo <= e[1] <= hi]
        done = max(1, len(meter.latencies_s))
        info = self.info
        for gen in range(3):
            pauses = [(end - start) * 1000 for g, start, end in events if g == gen]
            info[f"gen{gen}"] = len(pauses)
            info[f"gen{gen}_per_1k"] = round(len(pauses) * 1000 / done, 2)
            info[f"gen{gen}_max_ms"] = round(max(pauses, default=0.0), 2)
            info[f"gen{gen}_total_ms"] = round(sum(pauses), 1)
        info["gen2_ms"] = [round((e - s) * 1000, 1) for g, s, e in events if g == 2]
        lats = list(meter.latencies_s)
        ends = getattr(meter.latencies_s, "ends", [])
        if len(ends) != len(lats):  # not measured through the probe's list: no attribution
            return info
        in_gen2 = _shadowed(lats, ends, [e for e in events if e[0] == 2])
        in_any = _shadowed(lats, ends, events)
        info["p99_ms"] = _p99(lats)
        info["p99_no_gen2_ms"] = _p99([x for x, hit in zip(lats, in_gen2, strict=True) if not hit])
        info["p99_no_gc_ms"] = _p99([x for x, hit in zip(lats, in_any, strict=True) if not hit])
        info["tasks_in_gen2_shadow"] = sum(in_gen2)
        slowest = sorted(range(len(lats)), key=lats.__getitem__)[-max(1, len(lats) // 100) :]
        info["slowest1pct_in_gen2"] = round(sum(in_gen2[i] for i in slowest) / len(slowest), 3)
        info["slowest1pct_in_any"] = round(sum(in_any[i] for i in slowest) / len(slowest), 3)
        gaps = [(b - a, a, b) for a, b in itertools.pairwise(ends)]  # no task finished
        spans = [(s, e) for _, s, e in events]
        calm = [g for g in gaps if not any(s < g[2] and e > g[1] for s, e in spans)]
        info["stall_max_ms"] = round(max(gaps, default=(0.0,))[0] * 1000, 1)
        info["stall_no_gc_ms"] = round(max(calm, default=(0.0,))[0] * 1000, 1)
        return info


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)  # nearest rank, as the contenders' Meter computes it
    return round(ordered[max(1, min(len(ordered), round(0.99 * len(ordered) + 0.5))) - 1] * 1000, 3)


def _shadowed(lats: list[float], ends: list[float], events: list[Any]) -> list[bool]:
    """Whether each task's interval overlaps a collection or the same span after it."""
    merged: list[list[float]] = []
    for _, start, end in sorted(events, key=lambda e: e[1]):
        stop = end + (end - start)
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    starts = [m[0] for m in merged]
    hits = []
    for latency, end in zip(lats, ends, strict=True):
        i = bisect.bisect_right(starts, end) - 1
        hits.append(i >= 0 and merged[i][1] >= end - latency)
    return hits


def child(option: str, script: Path, argv: list[str], census: bool) -> None:
    """Run one contender script in this process, instrumented (see the module docstring)."""
    probe = _Probe(option, census)
    sys.path.insert(0, str(script.parent))
    sys.argv = [str(script), *argv]
    common = importlib.import_module("_common")
    module = importlib.import_module(script.stem)
    if option in ("freeze-import", "lib-freeze"):
        library = importlib.import_module("upscale_stream")
        if option == "lib-freeze":
            original = library.UpscaleClient

            def with_freeze(*args: Any, **kwargs: Any) -> Any:
                return original(*args, gc_freeze=True, **kwargs)

            vars(library)["UpscaleClient"] = with_freeze
        else:
            gc.collect()
            gc.freeze()

    meter_class: type[Any] = common.Meter

    class ProbedMeter(meter_class):  # type: ignore[misc]
        pay_gc_debt = False  # the options decide (``collect`` does what Meter does by default)

        def start(self) -> None:
            probe.on_start(self)
            super().start()

        def stop(self) -> None:
            super().stop()
            probe.on_stop()

        def report(self, **extra: Any) -> dict[str, Any]:
            line: dict[str, Any] = super().report(**extra)
            line["gc"] = probe.analyse(self)
            return line

    vars(module)["Meter"] = ProbedMeter
    common.run_main(module.run, "probed", extend=getattr(module, "add_options", None))


def _run_child(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, timeout=300, check=False)
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"child failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    line: dict[str, Any] = json.loads(lines[-1])
    return line


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, start the stub, run every contender x option x repeat."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        census = argv[1] == "--census"
        rest = argv[2:] if census else argv[1:]
        child(rest[0], Path(rest[1]), rest[2:], census)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contenders", default="floor-uvloop,us-tuned", help="comma-separated")
    parser.add_argument("--options", default="baseline", help="comma-separated (see above)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender and option")
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per run (max 200k)")
    parser.add_argument("--rate", type=float, help="tasks/s offered (default: measure the peak)")
    parser.add_argument("--rate-fraction", type=float, default=0.5, help="of us-tuned's peak")
    parser.add_argument("--census", action="store_true", help="count live objects mid-run")
    parser.add_argument("--json", type=Path, help="also write every run's report line here")
    parser.add_argument(
        "--quiet-switches", type=int, default=300, help="summary: most preemptions of a quiet run"
    )
    args = parser.parse_args(argv)
    from benchmarks import harness
    from benchmarks.scenarios import CONTENDERS, SCENARIOS

    scenario = SCENARIOS["halfload"].with_tasks(min(args.tasks, 200_000))
    lines: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="gc-probe-") as tmp,
        harness.StubServer(scenario, Path(tmp)) as stub,
    ):

        def run(key: str, option: str, rate: float | None) -> dict[str, Any]:
            entry = harness.Entry(scenario, CONTENDERS[key], stub, Path(tmp), rate=rate)
            env = dict(entry.env)
            name, _, src = option.partition("@")
            if src:
                env["PYTHONPATH"] = env["PYTHONPATH"].replace(str(harness.REPO_ROOT / "src"), src)
            flag = ["--census"] if args.census else []
            command = [entry.command[0], "-m", "benchmarks.gc_probe", "--child", *flag, name]
            line = _run_child([*command, *entry.command[1:]], env, harness.REPO_ROOT)
            line.update(contender=key, option=option, rate=rate)
            return line

        rate = args.rate
        if rate is None:
            peak = run("us-tuned", "baseline", None)
            rate = args.rate_fraction * peak["ok"] / peak["wall_s"]
            print(f"us-tuned flat out: {peak['ok'] / peak['wall_s']:.0f} tasks/s -> {rate:.0f}")
        plan = [
            (key, option)
            for key in args.contenders.split(",")
            for option in (["baseline"] if key in _FLOORS else args.options.split(","))
        ]
        print(_ROW.format(*_HEAD.split()))
        for _ in range(args.repeat):
            for key, option in plan:
                line = run(key, option, rate)
                lines.append(line)
                print(_row(line), flush=True)
                if args.census and "census" in line["gc"]:
                    print(f"  census ({line['gc']['census_in_flight_tasks']} TaskRecords):")
                    print(f"  {line['gc']['census']}")
    if args.json is not None:
        args.json.write_text("".join(json.dumps(line) + "\n" for line in lines))
    print(_summary(lines, args.quiet_switches))
    return 0


def _summary(lines: list[dict[str, Any]], quiet: int) -> str:
    """Per contender and option: ranges over the runs, and the p99 of the quiet runs only."""
    out = [f"summary (quiet run: at most {quiet} involuntary context switches of the contender)"]
    keys = dict.fromkeys((line["contender"], line["option"]) for line in lines)
    for key in keys:
        runs = [line for line in lines if (line["contender"], line["option"]) == key]
        gcs = [line["gc"] for line in runs]
        calm = [r["lat_p99_ms"] for r in runs if r["gc"]["nivcsw"] <= quiet]
        pauses = [ms for g in gcs for ms in g["gen2_ms"]]

        def span(values: list[Any]) -> str:
            return f"{min(values):.4g}-{max(values):.4g}" if values else "-"

        out.append(
            f"{key[0]:13} {_label(key[1]):24} runs {len(runs)}"
            f"  gen0 {span([g['gen0'] for g in gcs])}"
            f"  gen1 {span([g['gen1'] for g in gcs])}  gen2 {span([g['gen2'] for g in gcs])}"
            f" ({span([round(ms) for ms in pauses])} ms)"
            f"  p99 {span([r['lat_p99_ms'] for r in runs])}"
            f"  quiet p99 {span(calm)} ({len(calm)} runs)"
        )
    return "\n".join(out)


_HEAD = "contender option p99 no-gen2 no-gc g0/k g1/k g0/g1max gen2 gen2_ms objs@start frozen"
_HEAD += " slow1%:g2/any"
_HEAD += " stall:all/no-gc invol.cs task/s"
_ROW = "{:13} {:22} {:>6} {:>7} {:>6} {:>5} {:>5} {:>9} {:>4} {:12} {:>10} {:>6} {:>13} {:>16}"
_ROW += " {:>8} {:>6}"


def _label(option: str) -> str:
    name, _, src = option.partition("@")  # NAME@DIR/src shows as NAME@DIR
    return name + (f"@{Path(src).parent.name}" if src else "")


def _row(line: dict[str, Any]) -> str:
    g = line["gc"]
    return _ROW.format(
        line["contender"],
        _label(line["option"])[:22],
        f"{line['lat_p99_ms']:.1f}",
        f"{g.get('p99_no_gen2_ms') or 0:.1f}",
        f"{g.get('p99_no_gc_ms') or 0:.1f}",
        g["gen0_per_1k"],
        g["gen1_per_1k"],
        f"{g['gen0_max_ms']:.1f}/{g['gen1_max_ms']:.1f}",
        g["gen2"],
        ",".join(f"{ms:.0f}" for ms in g["gen2_ms"][:6]),
        sum(g["objects_start"]),
        g["frozen_start"],
        f"{g.get('slowest1pct_in_gen2', '-')}/{g.get('slowest1pct_in_any', '-')}",
        f"{g.get('stall_max_ms', '-')}/{g.get('stall_no_gc_ms', '-')}",
        g["nivcsw"],
        f"{line['ok'] / line['wall_s']:.0f}",
    )


if __name__ == "__main__":
    raise SystemExit(main())
