"""Run the benchmark: every scenario's stub server, every contender against it, then the report.

Usage (from the repository root)::

    python -m benchmarks.harness            # full run, about 6 minutes; writes benchmarks/
    python -m benchmarks.harness --quick    # about a minute; writes benchmarks/out/quick/
    python -m benchmarks.harness --only zero-g1,lat200 --contenders floor,us-tuned
    python -m benchmarks.harness --list     # scenarios and contenders

For each scenario the harness starts ``stub_server.py`` as its own process, then runs each
contender script (``benchmarks/contenders/``) as a subprocess against it, one at a time, and
reads the contender's one JSON report line. The official SDK contenders run from their own
virtual environments, created on first use by ``benchmarks.compat``. A contender that fails,
times out or cannot be set up is recorded with the tail of its stderr; the harness goes on.

Fast runs are repeated (``--repeat``, while one contender's runs add up to less than 15 s), in
rounds that alternate the contenders (floor, A, B, floor, A, B, ...), each run a fresh process;
the run with the median throughput is kept, and the report's paired ratios compare runs of the
same round. Before the bytes-path scenarios the harness also measures this machine's memcpy and
base64 speed on one core (``report.bytes_speed``), the ceiling the bytes path is read against.
A full run (no ``--quick``, ``--tasks``, ``--only`` or ``--contenders``) ends with the
instructions per task of the main shapes under callgrind (``benchmarks.icount``, about two
minutes; skipped without valgrind or with ``--no-icount``): the figure the machine's load does
not move. The output directory receives ``results.json`` (every record), ``RESULTS.md`` and
``chart.png`` (see ``benchmarks.report``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from benchmarks import icount, report
from benchmarks.noise_png import write_bytes_inputs, write_noise_png
from benchmarks.scenarios import CONTENDERS, FLOOR, SCENARIOS, Contender, Scenario

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CONTENDER_DIR = BENCH_DIR / "contenders"
STUB_SCRIPT = BENCH_DIR / "stub_server.py"
REPEAT_BUDGET_S = 15.0
STDERR_TAIL_LINES = 25


class StubServer:
    """The stub server process of one scenario (a context manager)."""

    def __init__(self, scenario: Scenario, workdir: Path) -> None:
        self.scenario = scenario
        self.ready_file = workdir / f"{scenario.key}.port"
        self.stats_file = workdir / f"{scenario.key}.stats.jsonl"
        self.log_file = workdir / f"{scenario.key}.stub.log"
        self.command = [
            sys.executable,
            str(STUB_SCRIPT),
            "--port", "0",
            "--latency-ms", f"{scenario.latency_ms:g}",
            "--group", str(scenario.group),
            "--result-bytes", str(scenario.result_bytes),
            "--ready-file", str(self.ready_file),
            "--stats-file", str(self.stats_file),
        ]  # fmt: skip
        if scenario.bytes_path is not None:
            result_png = write_noise_png(
                workdir / "result.png", size=scenario.result_image_px, seed=7
            )
            self.command += ["--result-file", str(result_png), "--result-as", scenario.bytes_path]
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> StubServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the process and wait until it listens.

        Raises:
            RuntimeError: it exited or did not write its port within 20 s (the message carries
                its log).
        """
        self.stats_file.touch()
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20.0
        while not self.ready_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"stub server did not start:\n{tail(self.log_file)}")
            time.sleep(0.05)
        self.url = f"ws://127.0.0.1:{int(self.ready_file.read_text())}"

    def stop(self) -> None:
        """SIGTERM the process and reap it (SIGKILL after 10 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def stats_lines(self) -> int:
        """How many connection records the stub has written so far."""
        return len(self.stats_file.read_bytes().splitlines())

    def stats_since(self, start: int, settle_s: float = 2.0) -> dict[str, Any]:
        """Sum the connection records written after line ``start``.

        The stub writes a record when a connection closes, a moment after the client process
        may already have exited, so wait (at most ``settle_s``) for at least one new record.
        """
        deadline = time.monotonic() + settle_s
        lines = self.stats_file.read_bytes().splitlines()[start:]
        while not lines and time.monotonic() < deadline:
            time.sleep(0.02)
            lines = self.stats_file.read_bytes().splitlines()[start:]
        time.sleep(0.05)  # a second connection (after a reconnect) closes at about the same time
        lines = self.stats_file.read_bytes().splitlines()[start:]
        total: dict[str, Any] = {"connections": len(lines)}
        for line in lines:
            for name, value in orjson.loads(line).items():
                total[name] = total.get(name, 0) + value
        return total


def tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file ('' if it is missing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def interpreter_for(contender: Contender) -> Path:
    """The Python that runs ``contender`` (creating an SDK environment if needed)."""
    if contender.venv is None:
        return Path(sys.executable)
    from benchmarks.compat import ensure_venv

    return ensure_venv(contender.venv)


def contender_env(contender: Contender) -> dict[str, str]:
    """Environment of a contender process: no RUNWARE_* overrides; our src/ for our client."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNWARE_")}
    if contender.venv is None:
        src = str(REPO_ROOT / "src")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return env


def child_cpu_s() -> float:
    """User + system CPU of all waited-for children of the harness so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int) -> int:
    """Resident set size of a live process from /proc (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def run_once(
    command: list[str], env: dict[str, str], timeout_s: float, workdir: Path
) -> dict[str, Any]:
    """Run one contender process; return its report line or why there is none.

    The process gets its own session so a timeout kills it and anything it started. Its RSS is
    sampled from /proc every 0.1 s as a cross-check of the peak it reports itself.
    """
    out_path, err_path = workdir / "contender.out", workdir / "contender.err"
    cpu_before = child_cpu_s()
    sampled_peak = 0
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        timed_out = False
        while True:
            try:
                proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            sampled_peak = max(sampled_peak, rss_bytes(proc.pid))
            if time.monotonic() - started > timeout_s:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                break
    result: dict[str, Any] = {
        "returncode": proc.returncode,
        "elapsed_s": round(time.monotonic() - started, 3),
        "cpu_total_s": round(child_cpu_s() - cpu_before, 4),
        "sampled_peak_rss_mib": round(sampled_peak / 2**20, 2),
        "stderr_tail": tail(err_path),
    }
    if timed_out:
        result["status"] = "timeout"
        result["error"] = f"no report within {timeout_s:g} s; killed"
        return result
    lines = [line for line in out_path.read_bytes().splitlines() if line.strip()]
    try:
        line = orjson.loads(lines[-1]) if lines else None
    except orjson.JSONDecodeError:
        line = None
    if proc.returncode != 0 or not isinstance(line, dict):
        result["status"] = "failed"
        result["error"] = f"exit status {proc.returncode}" + ("" if line else ", no JSON report")
        return result
    result["report"] = line
    result["status"] = "ok" if line.get("ok") == line.get("tasks") else "incomplete"
    return result


def display_command(command: list[str]) -> str:
    """A command line with paths relative to the repository, $TMP and the port as $PORT."""
    shown = []
    for part in command:
        part = part.replace(str(REPO_ROOT) + "/", "").replace(tempfile.gettempdir(), "$TMP")
        if part.startswith("ws://127.0.0.1:"):
            part = "ws://127.0.0.1:$PORT"
        shown.append(part)
    return " ".join(shown)


class Entry:
    """One contender of one scenario: its command line, and its runs so far."""

    def __init__(
        self,
        scenario: Scenario,
        contender: Contender,
        stub: StubServer,
        workdir: Path,
        *,
        rate: float | None = None,
        input_file: Path | None = None,
    ) -> None:
        self.scenario = scenario
        self.stub = stub
        self.workdir = workdir
        tasks = scenario.tasks_for(contender.key)
        self.record: dict[str, Any] = {
            "scenario": scenario.key,
            "contender": contender.key,
            "label": contender.label,
            "tasks": tasks,
            "rate": rate,
        }
        self.runs: list[dict[str, Any]] = []
        self.spent = 0.0
        self.command: list[str] = []
        self.env: dict[str, str] = {}
        try:
            python = interpreter_for(contender)
        except Exception as exc:  # the SDK environment could not be built (offline, pip failure)
            self.record.update(status="unavailable", error=f"{type(exc).__name__}: {exc}")
            return
        command = [
            str(python),
            str(CONTENDER_DIR / contender.script),
            "--url", stub.url,
            "--tasks", str(tasks),
            "--window", str(scenario.window),
            "--batch", str(scenario.batch),
            "--delivery", contender.delivery,
            *contender.options,
        ]  # fmt: skip
        if input_file is not None:
            command += ["--input", str(input_file)]
        if scenario.bytes_path is not None:
            command += [
                "--input-dir", str(workdir / "inputs"),
                "--out-dir", str(workdir / f"out-{contender.key}"),
                "--output-type", scenario.bytes_path,
            ]  # fmt: skip
        if rate:
            command += ["--rate", f"{rate:.1f}"]
        if contender.key == "us-soak":
            command += ["--rss-interval", f"{scenario.rss_interval_s:g}"]
        self.record["command"] = display_command(command)
        self.command = command
        self.env = contender_env(contender)

    def wants_run(self, repeat: int) -> bool:
        """Whether another run is due: fewer than ``repeat``, cheap so far, none failed."""
        if not self.command or len(self.runs) >= repeat:
            return False
        if not self.runs:
            return True
        return self.spent < REPEAT_BUDGET_S and self.runs[-1]["status"] == "ok"

    def run(self) -> dict[str, Any]:
        """Run the contender once against the stub; return the run."""
        start_line = self.stub.stats_lines()
        run = run_once(self.command, self.env, self.scenario.timeout_s, self.workdir)
        run["stub"] = self.stub.stats_since(start_line)
        self.runs.append(run)
        self.spent += run["elapsed_s"]
        return run

    def finish(self) -> dict[str, Any]:
        """The record: the median-throughput run if all were ok, else the last one."""
        record, runs = self.record, self.runs
        if not runs:
            return record
        good = [r for r in runs if r["status"] == "ok"]
        if good and len(good) == len(runs):
            chosen = sorted(good, key=lambda r: report.tasks_per_s(r["report"]))[len(good) // 2]
        else:
            chosen = runs[-1]
        record.update(chosen)
        record["runs_tasks_per_s"] = [
            round(report.tasks_per_s(r["report"]), 1) for r in runs if "report" in r
        ]
        record["runs_cpu_us"] = [
            round(r["report"]["cpu_s"] / r["report"]["ok"] * 1e6, 3)
            for r in runs
            if "report" in r and r["report"].get("ok")
        ]
        return record


def run_contender(
    scenario: Scenario,
    contender: Contender,
    stub: StubServer,
    workdir: Path,
    *,
    repeat: int,
    rate: float | None = None,
    input_file: Path | None = None,
) -> dict[str, Any]:
    """Run one contender of one scenario (repeated while cheap); return its record."""
    entry = Entry(scenario, contender, stub, workdir, rate=rate, input_file=input_file)
    while entry.wants_run(repeat):
        entry.run()
    return entry.finish()


def run_alternating(entries: list[Entry], repeat: int, log: Any) -> list[dict[str, Any]]:
    """Run the contenders in rounds (A, B, C, A, B, C, ...), each run in a fresh process.

    On a shared machine the load drifts over seconds: alternating puts every contender's runs
    next to the floor's, so the paired ratios (``runs_*`` lists, round by round) see the same
    weather, where back-to-back repeats of one contender would not.
    """
    for _ in range(repeat):
        due = [entry for entry in entries if entry.wants_run(repeat)]
        if not due:
            break
        for entry in due:
            entry.run()
    records = [entry.finish() for entry in entries]
    for record in records:
        log(report.progress_line(record))
    return records


def run_scenario(
    scenario: Scenario, contenders: list[str], workdir: Path, repeat: int, log: Any
) -> list[dict[str, Any]]:
    """Run one scenario's contenders against one stub server; return their records."""
    records: list[dict[str, Any]] = []
    input_file = write_noise_png(workdir / "input.png") if scenario.png_input else None
    if scenario.bytes_path is not None:
        write_bytes_inputs(workdir / "inputs")
    stub = StubServer(scenario, workdir)
    try:
        stub.start()
    except RuntimeError as exc:
        return [
            {
                "scenario": scenario.key,
                "contender": key,
                "label": CONTENDERS[key].label,
                "status": "failed",
                "error": str(exc),
            }
            for key in contenders
        ]
    try:
        rate = None
        if scenario.rate_fraction is not None:
            for basis in dict.fromkeys((scenario.rate_basis, FLOOR)):
                calibration = run_contender(
                    scenario, CONTENDERS[basis], stub, workdir, repeat=repeat, input_file=input_file
                )
                calibration.update(
                    contender=f"{basis}-peak",
                    label=f"{CONTENDERS[basis].label}, flat out (sets the rate)",
                )
                records.append(calibration)
                log(report.progress_line(calibration))
                if calibration["status"] == "ok":
                    rate = scenario.rate_fraction * report.tasks_per_s(calibration["report"])
                    break
            else:
                log("  calibration failed: running the others flat out")
        entries = [
            Entry(scenario, CONTENDERS[key], stub, workdir, rate=rate, input_file=input_file)
            for key in contenders
        ]
        records += run_alternating(entries, repeat, log)
    finally:
        stub.stop()
    for record in records:
        record["stub_command"] = display_command(stub.command)
    return records


def select(names: str | None, known: dict[str, Any], what: str) -> list[str] | None:
    """Parse a comma-separated filter, rejecting unknown names."""
    if not names:
        return None
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)}; known: {', '.join(known)}")
    return chosen


def plan(args: argparse.Namespace) -> Iterator[tuple[Scenario, list[str]]]:
    """The scenarios to run, each with the contenders to run in it."""
    only = select(args.only, SCENARIOS, "scenario")
    wanted = select(args.contenders, CONTENDERS, "contender")
    for key, scenario in SCENARIOS.items():
        if only is not None and key not in only:
            continue
        if args.quick:
            scenario = scenario.quick()
        if args.tasks is not None:
            scenario = scenario.with_tasks(args.tasks)
        if args.timeout is not None:
            scenario = scenario.with_timeout(args.timeout)
        contenders = [c for c in scenario.contenders if wanted is None or c in wanted]
        if contenders:
            yield scenario, contenders


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the harness's command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N: about a minute in all")
    parser.add_argument("--only", help="comma-separated scenario keys")
    parser.add_argument("--contenders", help="comma-separated contender keys")
    parser.add_argument("--tasks", type=int, help="cap every scenario's task count at N")
    parser.add_argument("--repeat", type=int, help="runs per contender (default 3, quick 1)")
    parser.add_argument("--timeout", type=float, help="seconds allowed for one contender run")
    parser.add_argument(
        "--out-dir", type=Path, help="default benchmarks/ (quick: benchmarks/out/quick)"
    )
    parser.add_argument("--no-chart", action="store_true", help="skip chart.png")
    parser.add_argument(
        "--no-icount",
        action="store_true",
        help="skip the instruction counts (callgrind; only in a full run, where valgrind is)",
    )
    parser.add_argument("--list", action="store_true", help="list scenarios and contenders, exit")
    parser.add_argument(
        "--report-only", type=Path, metavar="RESULTS_JSON", help="rewrite the report from a run"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the selected scenarios and write the report; exit status 0 unless nothing ran."""
    args = parse_args(argv)
    if args.list:
        for key, scenario in SCENARIOS.items():
            print(f"{key:10} {scenario.title}  [{', '.join(scenario.contenders)}]")
        for key, contender in CONTENDERS.items():
            print(f"{key:12} {contender.label}")
        return 0
    out_dir = args.out_dir or (BENCH_DIR / "out" / "quick" if args.quick else BENCH_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.report_only is not None:
        write_outputs(out_dir, orjson.loads(args.report_only.read_bytes()), chart=not args.no_chart)
        return 0
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    argv_shown = ["python", "-m", "benchmarks.harness", *(sys.argv[1:] if argv is None else argv)]

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.time()
    records: list[dict[str, Any]] = []
    scenarios: list[Scenario] = []
    with tempfile.TemporaryDirectory(prefix="upscale-bench-") as tmp:
        for scenario, contenders in plan(args):
            log(f"== {scenario.key}: {scenario.title} (N={scenario.tasks})")
            scenarios.append(scenario)
            workdir = Path(tmp) / scenario.key
            workdir.mkdir()
            records += run_scenario(scenario, contenders, workdir, repeat, log)
    if not scenarios:
        log("nothing selected")
        return 2
    run = {
        "command": " ".join(argv_shown),
        "started": started,
        "duration_s": round(time.time() - started, 1),
        "quick": args.quick,
        "repeat": repeat,
        "machine": report.machine_info(
            [CONTENDERS[r["contender"]] for r in records if r["contender"] in CONTENDERS]
        ),
        "scenarios": [report.scenario_info(s) for s in scenarios],
        "records": records,
    }
    if any(s.bytes_path is not None for s in scenarios):
        run["machine"]["bytes_speed"] = report.bytes_speed()
    partial = args.quick or args.tasks or args.only or args.contenders
    if not partial and not args.no_icount and icount.available():
        log("== instructions per task (callgrind, over a real socket)")
        run["instructions"] = icount.count_shapes()
    (out_dir / "results.json").write_bytes(orjson.dumps(run, option=orjson.OPT_INDENT_2))
    write_outputs(out_dir, run, chart=not args.no_chart)
    return 0


def write_outputs(out_dir: Path, run: dict[str, Any], *, chart: bool) -> None:
    """Write RESULTS.md and (unless ``chart`` is false) chart.png for one run."""
    chart_path = report.write_chart(out_dir / "chart.png", run) if chart else None
    report.write_results_md(out_dir / "RESULTS.md", run, chart_path)
    print(
        f"wrote {out_dir / 'RESULTS.md'}" + (f" and {chart_path}" if chart_path else " (no chart)"),
        file=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
