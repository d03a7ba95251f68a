"""Job-scoped taskUUIDs over real sockets (issue 15, section 1, the client core's part).

A job rerun from a fresh client (as after a killed process) runs nothing twice: the server
answers ``conflictTaskUUID`` for what the earlier run sent and the client recovers the results
with ``getTaskDetails``; a mismatched echo is an error; a task the server forgot goes again
under the next attempt's taskUUID.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from PIL import Image
from websockets.asyncio.server import ServerConnection, serve

from upscale_stream import Client, JobMismatch, Polling, Retry, TaskRetry, UpscaleClient
from upscale_stream.jobs import JobTask, input_key, options_digest
from upscale_stream.models import TaskTemplate
from upscale_stream.server import ReferenceServer, ServerConfig

KEY = "test-key-SECRET-jobs-0123456"
FAST_POLLING = Polling(initial=0.05, factor=1.5, max_delay=0.2)


def png_data_uri(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (width * 9 % 256, height * 5 % 256, 1)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


INPUTS = [png_data_uri(1 + n % 8, 1 + n // 8) for n in range(40)]


def size_of(result: Any) -> tuple[int, int]:
    with Image.open(io.BytesIO(result.read_bytes())) as image:
        return image.size


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    config = ServerConfig(api_keys=frozenset({KEY}), port=0)
    async with ReferenceServer(config) as running:
        yield running


def client_for(server: ReferenceServer, **options: Any) -> UpscaleClient:
    options.setdefault("retry", Retry(initial=0.01, max_delay=0.05, resume_grace=0.2))
    options.setdefault("polling", FAST_POLLING)
    return UpscaleClient(api_key=KEY, url=server.url, **options)


async def test_a_job_rerun_from_a_fresh_client_runs_nothing_twice_and_gets_every_result(
    server: ReferenceServer,
) -> None:
    job = "job-rerun-1"
    server.faults.result_delay = 0.3  # some are still running when the first client dies
    killed = client_for(server)
    await killed.connect()
    first = [
        asyncio.ensure_future(killed.upscale(image, job_id=job, output_type="base64Data"))
        for image in INPUTS
    ]
    await server.wait_received(len(INPUTS))
    await server.wait_executions(len(INPUTS) // 2)
    await killed.close(cancel=True)  # the process dies; the server finishes what it got
    await asyncio.gather(*first, return_exceptions=True)

    async with client_for(server) as rerun:
        outcomes = [
            o async for o in rerun.upscale_many(INPUTS, job_id=job, output_type="base64Data")
        ]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:3]
    for outcome in outcomes:
        width, height = 1 + outcome.index % 8, 1 + outcome.index // 8
        assert size_of(outcome.result) == (2 * width, 2 * height)  # its own result
    assert len(server.executions) == len(INPUTS)
    assert all(count == 1 for count in server.executions.values())  # nothing ran twice
    assert {o.task_uuid for o in outcomes} == set(server.executions)
    # Every task reached the server twice under the same taskUUID (the rerun was refused).
    assert all(server.received[o.task_uuid] == 2 for o in outcomes)


async def test_the_task_uuid_is_the_derived_one_in_upscale_build_task_and_the_sync_facade(
    server: ReferenceServer,
) -> None:
    template = TaskTemplate(model="runware:503@1", upscale_factor=2)
    expected = JobTask("job-2", input_key(INPUTS[0]), options_digest(template.wire_options))
    async with client_for(server) as client:
        task = await client.build_task(INPUTS[0], job_id="job-2")
        result = await client.upscale(INPUTS[0], job_id="job-2")
        keyed = await client.upscale(INPUTS[1], job_id="job-2", job_key="photos/b.png")
    assert task.task_uuid == result.task_uuid == expected.task_uuid(0)
    assert keyed.task_uuid == JobTask("job-2", "photos/b.png", expected.digest).task_uuid(0)

    def run_sync() -> list[str]:
        with Client(api_key=KEY, url=server.url, polling=FAST_POLLING) as sync:
            again = sync.upscale(INPUTS[0], job_id="job-2")  # recovered, not run again
            mapped = list(sync.map(INPUTS[1:2], job_id="job-2", key=lambda _: "photos/b.png"))
        return [again.task_uuid, mapped[0].unwrap().task_uuid]

    assert await asyncio.to_thread(run_sync) == [result.task_uuid, keyed.task_uuid]
    assert all(count == 1 for count in server.executions.values())


async def test_a_job_rerun_with_another_input_under_the_same_key_is_a_job_mismatch(
    server: ReferenceServer,
) -> None:
    async with client_for(server) as client:
        await client.upscale(INPUTS[0], job_id="job-3", job_key="same-key")
    async with client_for(server) as rerun:
        with pytest.raises(JobMismatch) as info:
            await rerun.upscale(INPUTS[1], job_id="job-3", job_key="same-key")
    assert info.value.field == "inputImage"
    assert len(server.executions) == 1


async def test_a_task_the_server_forgot_goes_again_under_the_next_attempts_task_uuid() -> None:
    # A server that still refuses attempt 0 (conflictTaskUUID) but no longer has its details.
    seen: list[dict[str, Any]] = []

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            for item in orjson.loads(message):
                seen.append(item)
                kind, uuid = item["taskType"], item.get("taskUUID")
                if kind == "authentication":
                    answer = {"taskType": kind, "connectionSessionUUID": "session-1"}
                    await ws.send(orjson.dumps({"data": [answer]}).decode())
                elif kind == "upscale" and len([i for i in seen if i["taskType"] == kind]) == 1:
                    error = {"taskType": kind, "taskUUID": uuid, "code": "conflictTaskUUID"}
                    await ws.send(orjson.dumps({"errors": [error]}).decode())
                elif kind == "getTaskDetails":
                    error = {"taskType": kind, "taskUUID": uuid, "code": "taskFailedOrNotFound"}
                    await ws.send(orjson.dumps({"errors": [error]}).decode())
                elif kind == "upscale":
                    done = {
                        "taskType": kind,
                        "taskUUID": uuid,
                        "imageUUID": uuid,
                        "imageURL": "https://example.invalid/x.jpg",
                    }
                    await ws.send(orjson.dumps({"data": [done]}).decode())

    template = TaskTemplate(model="runware:503@1", upscale_factor=2)
    job = JobTask("job-4", input_key(INPUTS[0]), options_digest(template.wire_options))
    async with serve(handler, "127.0.0.1", 0) as stub:
        port = stub.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}"
        async with UpscaleClient(api_key=KEY, url=url, polling=FAST_POLLING) as client:
            result = await asyncio.wait_for(client.upscale(INPUTS[0], job_id="job-4"), 10)
    sent = [(i["taskType"], i["taskUUID"]) for i in seen if i["taskType"] != "authentication"]
    assert sent == [
        ("upscale", job.task_uuid(0)),
        ("getTaskDetails", job.task_uuid(0)),
        ("upscale", job.task_uuid(1)),
    ]
    assert result.task_uuid == job.task_uuid(1)


async def test_a_rerun_after_a_transient_retry_runs_the_input_once_across_attempts(
    server: ReferenceServer,
) -> None:
    # The first attempt of every input draws a transient error; its retry goes through. The
    # reference server, like a real one that refuses before it runs, keeps no record of the
    # refused taskUUID. A process that retried under attempt 1 and then died left attempt 0
    # unknown to the server: its rerun would send attempt 0 again, unrefused, and the input
    # would run a second time (under another taskUUID). Retrying under the same taskUUID
    # keeps one taskUUID per input, whatever the server remembers of refusals.
    server.faults.transient_error_every = 1
    fast = TaskRetry(initial=0.01, max_delay=0.02, jitter=0.0)
    async with client_for(server, task_retry=fast) as first:
        done = await first.upscale(INPUTS[0], job_id="job-5")
    assert server.faults.fired["transient_error"] >= 1
    async with client_for(server, task_retry=fast) as rerun:
        again = await rerun.upscale(INPUTS[0], job_id="job-5")
    assert again.task_uuid == done.task_uuid
    assert sum(server.executions.values()) == 1  # one run of the input, under any taskUUID
