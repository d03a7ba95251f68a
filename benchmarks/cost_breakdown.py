"""Where upscale_stream's client CPU goes per task, piece by piece, with no socket involved.

    python -m benchmarks.cost_breakdown [--tasks 50000] [--group 50]

Each step of one task's path through the client is timed on its own over ``--tasks`` tasks
(time.perf_counter, best of 3): building the task bytes, the core's bookkeeping for sending,
parsing result frames of ``--group`` items, dispatch to the waiter, and the typed result. The
rest of a task's cost in the end-to-end benchmark is the transport (websockets framing, the
event loop, syscalls), which the raw floor pays as well.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from upscale_stream.models import SWINIR, TaskTemplate, UpscaleResult, new_task_uuid
from upscale_stream.protocol import ClientSession, TaskResult
from upscale_stream.streaming import input_value_now

IMAGE = "11111111-2222-4333-8444-555555555555"


def best_of(
    runs: int, step: Callable[[Any], object], setup: Callable[[], Any] = lambda: None
) -> float:
    """Seconds of the fastest of ``runs`` runs of ``step(setup())``; the setup is not timed."""
    best = float("inf")
    for _ in range(runs):
        state = setup()
        start = time.perf_counter()
        step(state)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--group", type=int, default=50, help="result items per frame")
    args = parser.parse_args()
    n = args.tasks
    template = TaskTemplate(model=SWINIR, upscale_factor=2)
    uuids = [new_task_uuid() for _ in range(n)]
    results = [
        orjson.dumps(
            {
                "taskType": "upscale",
                "taskUUID": u,
                "imageUUID": IMAGE,
                "imageURL": "https://im.example/x.jpg",
            }
        )
        for u in uuids
    ]
    frames = [
        b'{"data":[' + b",".join(results[i : i + args.group]) + b"]}"
        for i in range(0, n, args.group)
    ]
    items = [orjson.loads(r) for r in results]

    def fresh_session() -> ClientSession:
        session = ClientSession()
        session.authenticate("k" * 16, 0.0)
        session.data_to_send(0.0)
        session.receive_text(
            b'{"data":[{"taskType":"authentication","connectionSessionUUID":"s"}]}', 0.0
        )
        session.events_received()
        return session

    def sent_session() -> ClientSession:
        session = fresh_session()
        for task_uuid, payload in zip(uuids, payloads, strict=True):
            session.submit(task_uuid, payload, 0.0)
        session.data_to_send(0.0)
        return session

    def receive(session: ClientSession) -> None:
        for frame in frames:
            session.receive_text(frame, 0.0)
            session.events_received()

    def dispatch(waiters: dict[str, Callable[..., None]]) -> None:
        for event in events:
            waiters.pop(event.task_uuid)(event.task_uuid, event.result, None)

    payloads = [template.encode(u, IMAGE) for u in uuids]
    decoded = [UpscaleResult.model_validate(i) for i in items]
    events = [TaskResult(u, r, 0.0) for u, r in zip(uuids, decoded, strict=True)]
    timings = {
        "taskUUID (new_task_uuid)": best_of(3, lambda _: [new_task_uuid() for _ in range(n)]),
        "input check (UUID fast path)": best_of(
            3, lambda _: [input_value_now(IMAGE) for _ in range(n)]
        ),
        "task bytes (TaskTemplate.encode)": best_of(
            3, lambda _: [template.encode(u, IMAGE) for u in uuids]
        ),
        "core: submit + pack into frames": best_of(
            3,
            lambda s: (
                [s.submit(u, p, 0.0) for u, p in zip(uuids, payloads, strict=True)]
                and s.data_to_send(0.0)
            ),
            fresh_session,
        ),
        "core: decode frames (typed) + match + events": best_of(3, receive, sent_session),
        "dispatch to waiter (dict pop + call)": best_of(
            3, dispatch, lambda: {u: (lambda *_: None) for u in uuids}
        ),
    }
    print(f"per task, {n:,} tasks, results in frames of {args.group}:")
    total = 0.0
    for name, seconds in timings.items():
        micro = seconds / n * 1e6
        total += micro
        print(f"  {name:<46} {micro:6.2f} us")
    print(f"  {'sum of the client-side steps':<46} {total:6.2f} us")


if __name__ == "__main__":
    main()
