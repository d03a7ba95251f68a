"""Answers the server keeps (outboxes, task records) hold their own size, not orjson's buffer.

``orjson.dumps`` writes into a 4 KiB buffer and shrinks it in place, so each small ``bytes``
it returns keeps that allocation while it lives (issue 10: the server's RSS stayed at its peak
while answers waited for a resume). ``compact_json`` copies into a right-sized object.
"""

from __future__ import annotations

import subprocess
import sys

import orjson

from upscale_stream.server.sessions import SessionRegistry, compact_json

ITEM = {
    "taskType": "upscale",
    "taskUUID": "7f1c9e3a-3c1e-4f7b-9a52-1d0f3e2b6a41",
    "imageUUID": "0b9c2d4e-5f60-4a71-8b92-a3b4c5d6e7f8",
    "imageURL": "http://127.0.0.1:8765/image/0b9c2d4e-5f60-4a71-8b92-a3b4c5d6e7f8.jpg",
}
COUNT = 20_000
_CHILD = """
import gc, sys, orjson, psutil
from upscale_stream.server.sessions import compact_json
encode = compact_json if sys.argv[1] == "compact" else orjson.dumps
item = orjson.loads(sys.argv[2])
process = psutil.Process()
gc.collect()
before = process.memory_info().rss
kept = [encode(dict(item, n=n)) for n in range(int(sys.argv[3]))]
print((process.memory_info().rss - before) / 2**20)
"""


def _rss_growth_mib(encoder: str) -> float:
    """RSS growth of a fresh interpreter holding COUNT answers (no freed pages to reuse)."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, encoder, orjson.dumps(ITEM).decode(), str(COUNT)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return float(done.stdout.strip())


def test_twenty_thousand_held_answers_cost_their_size_not_a_page_each() -> None:
    held = _rss_growth_mib("compact")
    # 20,000 answers of ~200 bytes: about 4 MiB held; orjson's own bytes take about 78 MiB
    # (4 KiB each). The bound sits far from both, so allocator noise cannot flip it.
    assert held < 25, f"{held:.1f} MiB for {COUNT} held answers"
    assert orjson.loads(compact_json(ITEM)) == ITEM


def test_the_bound_would_catch_orjsons_own_buffers() -> None:
    # The same measure on plain orjson.dumps: shows the test above can fail.
    assert _rss_growth_mib("orjson") > 40


def test_the_registry_gives_back_its_tables_once_most_entries_expired() -> None:
    # A dict keeps the table of its largest size after deletions (5 MiB for 100,000 tasks).
    registry = SessionRegistry(hold_time=10.0, retention=20.0)
    for n in range(2_000):
        session, _ = registry.authenticate(None, 0.0, f"session-{n}")
        for k in range(5):
            record = registry.register(f"task-{n}-{k}", "upscale", session.session_id, "sync", 0.0)
            assert record is not None
            registry.finish(record, dict(ITEM, taskUUID=record.task_uuid), failed=False, now=0.0)
        registry.detach(session.session_id, 0.0)
    full = sys.getsizeof(registry._tasks), sys.getsizeof(registry.sessions)
    registry.expire(100.0)
    assert registry.tasks == {} and registry.sessions == {}
    emptied = sys.getsizeof(registry._tasks), sys.getsizeof(registry.sessions)
    assert emptied[0] < full[0] / 50 and emptied[1] < full[1] / 50, (full, emptied)
