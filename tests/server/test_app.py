"""The reference server over real sockets: authentication, tasks, delivery, HTTP and limits."""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from upscale_stream.server import ReferenceServer, ServerConfig
from upscale_stream.server.client_socket import pack_frames
from upscale_stream.server.sessions import Outgoing

from .conftest import (
    KEY,
    FakeClock,
    decode_image,
    new_uuid,
    png_bytes,
    png_data_uri,
    upscale,
)

PING = {"taskType": "ping", "ping": True}
PONG = {"data": [{"taskType": "ping", "pong": True}]}


async def http_get(url: str, path: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` (or ``path`` on its host) with http.client, off the event loop."""

    def get() -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        try:
            conn.request("GET", path if path is not None else parts.path)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    return await asyncio.to_thread(get)


@asynccontextmanager
async def http_receiver() -> AsyncIterator[tuple[str, asyncio.Queue[tuple[str, str, bytes]]]]:
    """A tiny HTTP server that records (method, path, body) of each request and answers 200."""
    requests: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, path, _ = (await reader.readline()).decode().split(" ", 2)
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        requests.put_nowait((method, path, body))  # last: the test goes on once we are done

    receiver = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = receiver.sockets[0].getsockname()[1]
    async with receiver:
        yield f"http://127.0.0.1:{port}", requests


# -- authentication (protocol.md section 2) ----------------------------------------------------


async def test_authentication_answers_a_new_session_id_without_task_uuid(server, client_for):
    async with client_for(server) as client:
        answer = await client.authenticate()
    assert set(answer) == {"taskType", "connectionSessionUUID"}
    assert server.counts.authentications == 1


@pytest.mark.parametrize(
    ("auth", "code"),
    [
        ({"taskType": "authentication", "apiKey": "wrong-key"}, "invalidApiKey"),
        ({"taskType": "authentication"}, "missingApiKey"),
    ],
)
async def test_bad_key_gets_an_errors_item_and_the_socket_stays_unauthenticated(
    servers, client_for, auth, code
):
    server = await servers(auth_timeout=0.5)
    async with client_for(server) as client:
        await client.send([auth])
        frame = await client.recv()
        assert frame == {
            "errors": [
                {
                    "code": code,
                    "message": frame["errors"][0]["message"],
                    "parameter": "apiKey",
                    "taskType": "authentication",
                    "documentation": "https://runware.ai/docs/models-api/authentication",
                }
            ]
        }
        task = upscale()
        await client.send([task])
        refused = await client.recv()
        assert refused["errors"][0]["code"] == "authenticationRequired"
        assert refused["errors"][0]["taskUUID"] == task["taskUUID"]
        # Open until the authentication timeout (runware 0.5.24 hangs on an immediate close).
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert client.ws.close_code == 1008
    assert server.counts.executions_total == 0


async def test_a_rejected_socket_may_authenticate_again_with_a_good_key(server, client_for):
    async with client_for(server) as client:
        await client.send([{"taskType": "authentication", "apiKey": "wrong-key"}])
        assert (await client.recv())["errors"][0]["code"] == "invalidApiKey"
        answer = await client.authenticate()
    assert answer["connectionSessionUUID"]


async def test_the_third_rejected_key_closes_the_socket_with_1008(server, client_for):
    async with client_for(server) as client:
        for attempt in range(3):
            await client.send([{"taskType": "authentication", "apiKey": f"wrong-{attempt}"}])
            assert (await client.recv())["errors"][0]["code"] == "invalidApiKey"
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert client.ws.close_code == 1008


async def test_accept_any_key_mode_takes_any_key(servers, client_for):
    server = await servers(api_keys=frozenset(), accept_any_key=True)
    async with client_for(server) as client:
        answer = await client.authenticate(key="anything-at-all")
    assert answer["connectionSessionUUID"]


async def test_config_refuses_to_start_without_keys_unless_any_key_mode():
    with pytest.raises(ValueError, match="api_keys"):
        ServerConfig()


async def test_the_api_key_never_reaches_the_log(servers, client_for, caplog):
    caplog.set_level(logging.DEBUG)
    server = await servers()
    async with client_for(server) as client:
        await client.authenticate()
        await client.send([upscale(outputQuality=5)])
        await client.recv()
    async with client_for(server) as client:
        await client.send([{"taskType": "authentication", "apiKey": "wrong-secret-key-42"}])
        await client.recv()
    await server.stop()
    # Our test client's own websockets logger shows what it sent; everything else is the server.
    server_log = "\n".join(
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith("websockets.client")
    )
    assert "auth.rejected" in server_log
    assert "connection open" in server_log  # the server's websockets logger is captured too
    assert KEY not in server_log
    assert "wrong-secret-key-42" not in server_log


async def test_resume_with_a_known_session_echoes_it_and_replays_held_results_once(
    servers, client_for
):
    server = await servers(task_delay=0.2)
    tasks = [upscale() for _ in range(3)]
    async with client_for(server) as client:
        session_id = (await client.authenticate())["connectionSessionUUID"]
        await client.send(tasks)
        await server.wait_executions(3)
        await server.drop_connections()
    session = server.registry.sessions[session_id]
    await server.wait_until(lambda: len(session.outbox) == 3, what="3 held results")

    async with client_for(server) as client:
        answer = await client.authenticate(session_id=session_id)
        assert answer["connectionSessionUUID"] == session_id
        results = await client.collect(task["taskUUID"] for task in tasks)
        assert all("imageURL" in item for item in results.values())
        await server.drop_connections()

    async with client_for(server) as client:
        await client.authenticate(session_id=session_id)
        await client.send([PING])
        assert await client.recv() == PONG  # nothing was replayed a second time
    assert all(server.executions[task["taskUUID"]] == 1 for task in tasks)


async def test_results_finishing_after_a_resume_are_pushed_on_the_new_socket(servers, client_for):
    server = await servers(task_delay=0.3)
    task = upscale()
    async with client_for(server) as client:
        session_id = (await client.authenticate())["connectionSessionUUID"]
        await client.send([task])
        await server.wait_executions(1)
        await server.drop_connections()
    async with client_for(server) as client:
        await client.authenticate(session_id=session_id)
        results = await client.collect([task["taskUUID"]])
    assert results[task["taskUUID"]]["imageUUID"]


async def test_a_resume_while_the_old_socket_is_open_moves_the_session_to_the_new_one(
    servers, client_for
):
    server = await servers(task_delay=1.0)
    task = upscale()
    async with client_for(server) as old, client_for(server) as new:
        session_id = (await old.authenticate())["connectionSessionUUID"]
        await old.send([task])
        await server.wait_executions(1)
        assert (await new.authenticate(session_id=session_id))[
            "connectionSessionUUID"
        ] == session_id
        results = await new.collect([task["taskUUID"]])
        assert "imageURL" in results[task["taskUUID"]]
        await old.send([PING])
        assert await old.recv() == PONG  # the old socket still works, but got no result


async def test_tasks_after_the_auth_item_in_the_same_frame_run_and_a_second_auth_echoes_the_session(
    server, client_for
):
    task = upscale()
    async with client_for(server) as client:
        await client.send([{"taskType": "authentication", "apiKey": KEY}, task])
        session_id = (await client.recv())["data"][0]["connectionSessionUUID"]
        assert "imageURL" in (await client.collect([task["taskUUID"]]))[task["taskUUID"]]
        await client.send([{"taskType": "authentication", "apiKey": KEY}])
        assert (await client.recv())["data"][0]["connectionSessionUUID"] == session_id


async def test_unknown_session_id_gets_a_new_session_id(server, client_for):
    unknown = new_uuid()
    async with client_for(server) as client:
        answer = await client.authenticate(session_id=unknown)
    assert answer["connectionSessionUUID"] != unknown


async def test_tasks_before_authentication_get_errors_and_are_not_run(server, client_for):
    task = upscale()
    async with client_for(server) as client:
        await client.send([task, PING])
        frame = await client.recv()
        (error,) = frame["errors"]  # one error for the frame, naming its first task
        assert error["code"] == "authenticationRequired"
        assert (error["taskUUID"], error["taskType"]) == (task["taskUUID"], "upscale")
        await client.authenticate()
    assert server.executions[task["taskUUID"]] == 0


async def test_unauthenticated_socket_is_closed_after_auth_timeout(servers, client_for):
    server = await servers(auth_timeout=0.2)
    async with client_for(server) as client:
        with pytest.raises(ConnectionClosed):
            await client.recv(timeout=5)
        assert client.ws.close_code == 1008


async def test_silent_socket_is_closed_after_idle_timeout(servers, client_for):
    server = await servers(idle_timeout=0.3)
    async with client_for(server) as client:
        await client.authenticate()
        with pytest.raises(ConnectionClosed):
            await client.recv(timeout=5)
        assert client.ws.close_code == 1000


# -- ping (section 3) --------------------------------------------------------------------------


async def test_ping_is_answered_at_once_while_fifty_slow_tasks_run(servers, client_for):
    server = await servers(task_delay=1.0)
    tasks = [upscale() for _ in range(50)]
    async with client_for(server) as client:
        await client.authenticate()
        await client.send(tasks)
        await server.wait_executions(50)
        await client.send([PING])
        assert await client.recv() == PONG
        assert all(record.finished_at is None for record in server.registry.tasks.values())
        results = await client.collect(task["taskUUID"] for task in tasks)
    assert len(results) == 50


# -- upscale (section 5) -----------------------------------------------------------------------


async def test_twenty_tasks_in_one_frame_give_twenty_results_of_the_right_size(client):
    tasks = [upscale(outputType="base64Data", outputFormat="PNG") for _ in range(18)]
    tasks += [upscale(upscaleFactor=4, model="runware:503@1", outputType="dataURI") for _ in (1, 2)]
    await client.send(tasks)
    results = await client.collect(task["taskUUID"] for task in tasks)
    assert len(results) == 20
    for task in tasks:
        item = results[task["taskUUID"]]
        assert item["taskType"] == "upscale"
        assert item["imageUUID"] != item["inputImageUUID"]
        factor = task["upscaleFactor"]
        assert decode_image(item).size == (8 * factor, 8 * factor)
    assert all("data" in frame for frame in client.frames[1:])
    assert len(client.frames) < 21  # results share frames when ready together


async def test_invalid_tasks_get_their_own_errors_while_the_others_succeed(client):
    good = [upscale(), upscale()]
    bad = {
        "invalidOutputQuality": upscale(outputQuality=100),
        "invalidUpscaleFactor": upscale(model="runware:501@1", upscaleFactor=4),
        "unsupportedParameter": upscale(model="runware:501@1", settings={"strength": 0.5}),
        "unknownParameter": upscale(colour="blue"),
        "missingInputImage": {"taskType": "upscale", "taskUUID": new_uuid()},
        "invalidInputImage": upscale(inputImage="%%% not an image %%%"),
    }
    await client.send([good[0], *bad.values(), good[1]])
    answers = await client.collect(
        [t["taskUUID"] for t in good] + [t["taskUUID"] for t in bad.values()]
    )
    for code, task in bad.items():
        error = answers[task["taskUUID"]]
        assert error["code"] == code
        assert error["taskType"] == "upscale"
        assert error["message"]
    assert answers[bad["invalidOutputQuality"]["taskUUID"]]["parameter"] == "outputQuality"
    assert answers[bad["unsupportedParameter"]["taskUUID"]]["parameter"] == "settings.strength"
    assert all("imageURL" in answers[task["taskUUID"]] for task in good)
    for frame in client.frames:
        assert len(frame) == 1 and set(frame) <= {"data", "errors"}


async def test_a_task_without_task_uuid_is_refused(client):
    task = upscale()
    del task["taskUUID"]
    await client.send([task])
    (notice,) = (await client.recv())["data"]  # nothing to route an errors item to
    assert notice["taskType"] == "frameError" and notice["refused"] == 1
    assert notice["errors"][0]["code"] == "missingTaskUUID"
    assert notice["errors"][0]["taskType"] == "upscale"


async def test_duplicate_task_uuid_gets_conflict_and_runs_once(server, client):
    task = upscale()
    await client.send([task, task])
    answers = []
    while len(answers) < 2:
        frame = await client.recv()
        answers += frame.get("data", []) + frame.get("errors", [])
    await client.send([task])  # again, after it finished
    conflict = (await client.recv())["errors"][0]
    assert conflict == {
        "code": "conflictTaskUUID",
        "message": conflict["message"],
        "parameter": "taskUUID",
        "taskType": "upscale",
        "taskUUID": task["taskUUID"],
        "documentation": "https://runware.ai/docs/en/tools/upscale",
    }
    assert sorted("code" in item for item in answers) == [False, True]
    assert server.executions[task["taskUUID"]] == 1
    assert server.received[task["taskUUID"]] == 3


async def test_duplicate_task_uuid_is_refused_across_sessions(server, client, client_for):
    task = upscale()
    await client.send([task])
    await client.collect([task["taskUUID"]])
    async with client_for(server) as other:
        await other.authenticate()
        await other.send([task])
        assert (await other.recv())["errors"][0]["code"] == "conflictTaskUUID"


async def test_legacy_image_upscale_with_inputs_image_and_pass_through_fields_is_accepted(
    client,
):
    task = {
        "taskType": "imageUpscale",
        "taskUUID": new_uuid(),
        "inputs": {"image": png_data_uri()},
        "upscaleFactor": 2.0,
        "deliveryMethod": "sync",
        "routing": {"region": "eu"},
        "providerSettings": {},
        "safety": {"checkContent": False},
        "targetMegapixels": 1,
        "numberResults": 1,
        "outputType": "base64Data",
    }
    await client.send([task])
    item = (await client.collect([task["taskUUID"]]))[task["taskUUID"]]
    assert item["taskType"] == "imageUpscale"
    assert decode_image(item).size == (16, 16)


async def test_output_types_and_include_cost(client):
    tasks = {
        "imageBase64Data": upscale(outputType="base64Data", includeCost=True),
        "imageDataURI": upscale(outputType="dataURI", outputFormat="WEBP"),
        "imageURL": upscale(),
    }
    await client.send(list(tasks.values()))
    answers = await client.collect(task["taskUUID"] for task in tasks.values())
    for key, task in tasks.items():
        item = answers[task["taskUUID"]]
        outputs = {"imageURL", "imageBase64Data", "imageDataURI"} & item.keys()
        assert outputs == {key}
    assert isinstance(answers[tasks["imageBase64Data"]["taskUUID"]]["cost"], float)
    assert "cost" not in answers[tasks["imageURL"]["taskUUID"]]
    uri = answers[tasks["imageDataURI"]["taskUUID"]]["imageDataURI"]
    assert uri.startswith("data:image/webp;base64,")


async def test_an_undecodable_input_fails_the_task_with_an_error_item(server, client):
    garbage = "data:image/png;base64," + base64.b64encode(b"not a png at all").decode()
    task = upscale(inputImage=garbage)
    await client.send([task])
    error = (await client.collect([task["taskUUID"]]))[task["taskUUID"]]
    assert error["code"] == "unsupportedImageFormat"
    assert error["parameter"] == "inputImage"
    assert server.executions[task["taskUUID"]] == 1


async def test_an_unknown_task_type_gets_unsupported_task_type(client):
    task = {"taskType": "imageInference", "taskUUID": new_uuid()}
    await client.send([task])
    error = (await client.recv())["errors"][0]
    assert error["code"] == "unsupportedTaskType"
    assert error["taskUUID"] == task["taskUUID"]


# -- imageUpload and image inputs by UUID and URL (section 6) ----------------------------------


async def test_image_upload_then_upscale_by_uuid_and_by_an_earlier_result(client):
    upload = {"taskType": "imageUpload", "taskUUID": new_uuid(), "image": png_data_uri(4, 6)}
    await client.send([upload])
    uploaded = (await client.collect([upload["taskUUID"]]))[upload["taskUUID"]]
    assert uploaded["taskType"] == "imageUpload"
    assert uploaded["imageURL"].endswith(f"/image/{uploaded['imageUUID']}.png")

    first = upscale(inputImage=uploaded["imageUUID"])
    await client.send([first])
    result = (await client.collect([first["taskUUID"]]))[first["taskUUID"]]
    assert result["inputImageUUID"] == uploaded["imageUUID"]

    second = upscale(inputImage=result["imageUUID"], outputType="base64Data")
    await client.send([second])
    final = (await client.collect([second["taskUUID"]]))[second["taskUUID"]]
    assert decode_image(final).size == (16, 24)


async def test_image_upload_without_an_image_or_with_a_bad_one_gets_an_error(client):
    missing = {"taskType": "imageUpload", "taskUUID": new_uuid()}
    bad = {"taskType": "imageUpload", "taskUUID": new_uuid(), "image": "bm90IGFuIGltYWdl"}
    await client.send([missing, bad])
    errors = await client.collect([missing["taskUUID"], bad["taskUUID"]])
    assert (errors[missing["taskUUID"]]["code"], errors[missing["taskUUID"]]["parameter"]) == (
        "missingImage",
        "image",
    )
    assert errors[bad["taskUUID"]]["code"] == "unsupportedImageFormat"
    assert errors[bad["taskUUID"]]["parameter"] == "image"


async def test_an_unknown_image_uuid_input_fails_the_task(client):
    task = upscale(inputImage=new_uuid())
    await client.send([task])
    error = (await client.collect([task["taskUUID"]]))[task["taskUUID"]]
    assert error["code"] == "invalidInputImage"


async def test_a_url_input_is_downloaded(servers, client_for):
    server = await servers(allow_private_urls=True)
    async with client_for(server) as client:
        await client.authenticate()
        upload = {"taskType": "imageUpload", "taskUUID": new_uuid(), "image": png_data_uri()}
        await client.send([upload])
        url = (await client.collect([upload["taskUUID"]]))[upload["taskUUID"]]["imageURL"]
        task = upscale(inputImage=url, outputType="base64Data")
        await client.send([task])
        item = (await client.collect([task["taskUUID"]]))[task["taskUUID"]]
    assert decode_image(item).size == (16, 16)


async def test_this_servers_own_image_url_is_read_from_the_store_without_a_fetch(client):
    upload = {"taskType": "imageUpload", "taskUUID": new_uuid(), "image": png_data_uri(3, 5)}
    await client.send([upload])
    uploaded = (await client.collect([upload["taskUUID"]]))[upload["taskUUID"]]
    task = upscale(inputImage=uploaded["imageURL"], outputType="base64Data")
    await client.send([task])  # allow_private_urls is off: a real fetch would be refused
    item = (await client.collect([task["taskUUID"]]))[task["taskUUID"]]
    assert item["inputImageUUID"] == uploaded["imageUUID"]
    assert decode_image(item).size == (6, 10)


async def test_a_private_url_input_is_refused_by_default(client):
    task = upscale(inputImage="http://127.0.0.1:9/in.png")
    await client.send([task])
    error = (await client.collect([task["taskUUID"]]))[task["taskUUID"]]
    assert error["parameter"] == "inputImage"
    assert error["code"] != "internalServerError"


async def test_webhook_gets_one_post_per_result_and_upload_endpoint_gets_the_bytes(
    servers, client_for
):
    server = await servers(allow_private_urls=True)
    async with http_receiver() as (base, requests), client_for(server) as client:
        await client.authenticate()
        task = upscale(webhookURL=f"{base}/hook?token=x", uploadEndpoint=f"{base}/put/out.jpg")
        await client.send([task])
        result = (await client.collect([task["taskUUID"]]))[task["taskUUID"]]
        seen = {}
        for _ in range(2):
            method, path, body = await asyncio.wait_for(requests.get(), 10)
            seen[method] = (path, body)
    put_path, put_body = seen["PUT"]
    assert put_path == "/put/out.jpg"
    assert Image.open(io.BytesIO(put_body)).size == (16, 16)
    post_path, post_body = seen["POST"]
    assert post_path == "/hook?token=x"
    assert orjson.loads(post_body) == {"data": [result]}


# -- async delivery and getResponse (section 6) ------------------------------------------------


async def test_async_task_is_acked_then_polled_from_processing_to_success(servers, client_for):
    server = await servers(task_delay=0.5)
    task = upscale(deliveryMethod="async")
    poll = {"taskType": "getResponse", "taskUUID": task["taskUUID"]}
    async with client_for(server) as client:
        await client.authenticate()
        await client.send([task])
        ack = await client.recv()
        assert ack == {"data": [{"taskType": "upscale", "taskUUID": task["taskUUID"]}]}
        await client.send([poll])
        processing = (await client.recv())["data"][0]
        assert processing == {
            "taskType": "upscale",
            "taskUUID": task["taskUUID"],
            "status": "processing",
        }
        record = server.registry.tasks[task["taskUUID"]]
        await server.wait_until(lambda: record.finished_at is not None, what="the task to finish")
        await client.send([poll, poll])
        frame = await client.recv()
    assert len(frame["data"]) == 2
    success = frame["data"][0]
    assert success["status"] == "success"
    assert success["imageURL"] and success["imageUUID"]


async def test_get_response_for_an_unknown_task_is_task_failed_or_not_found(client):
    unknown = new_uuid()
    await client.send([{"taskType": "getResponse", "taskUUID": unknown}])
    error = (await client.recv())["errors"][0]
    assert error["code"] == "taskFailedOrNotFound"
    assert error["taskUUID"] == unknown


async def test_get_response_works_for_sync_and_failed_tasks(server, client):
    good, bad = upscale(), upscale(inputImage=new_uuid())
    await client.send([good, bad])
    await client.collect([good["taskUUID"], bad["taskUUID"]])
    await client.send(
        [{"taskType": "getResponse", "taskUUID": u} for u in (good["taskUUID"], bad["taskUUID"])]
    )
    items = (await client.recv())["data"]
    assert items[0]["status"] == "success" and items[0]["imageUUID"]
    assert items[1]["status"] == "error"
    assert items[1]["error"]["code"] == "invalidInputImage"
    assert items[1]["taskType"] == "upscale"


async def test_get_response_polls_are_counted_by_the_task_they_ask_about(server, client):
    task, unknown = upscale(), new_uuid()
    await client.send([task])
    await client.collect([task["taskUUID"]])
    asked = (task["taskUUID"], task["taskUUID"], unknown)
    await client.send([{"taskType": "getResponse", "taskUUID": u} for u in asked])
    assert len((await client.recv())["data"]) == 2
    assert (await client.recv())["errors"][0]["code"] == "taskFailedOrNotFound"
    assert server.counts.polls == {task["taskUUID"]: 2, unknown: 1}
    assert server.counts.received_total == 1  # polls are not tasks


async def test_finished_tasks_are_forgotten_after_retention(servers, client_for):
    clock = FakeClock()
    server = await servers(clock=clock, retention=600.0)
    task = upscale()
    async with client_for(server) as client:
        await client.authenticate()
        await client.send([task])
        await client.collect([task["taskUUID"]])
        clock.advance(601)
        await client.send([{"taskType": "getResponse", "taskUUID": task["taskUUID"]}])
        assert (await client.recv())["errors"][0]["code"] == "taskFailedOrNotFound"
        await client.send([task])  # no longer a conflict: it runs again
        assert "imageURL" in (await client.collect([task["taskUUID"]]))[task["taskUUID"]]
    assert server.executions[task["taskUUID"]] == 2


# -- HTTP on the same port ---------------------------------------------------------------------


async def test_url_output_is_served_over_http_and_expires_after_its_ttl(servers, client_for):
    clock = FakeClock()
    server = await servers(clock=clock)
    task = upscale(ttl=60, outputFormat="PNG")
    async with client_for(server) as client:
        await client.authenticate()
        await client.send([task])
        url = (await client.collect([task["taskUUID"]]))[task["taskUUID"]]["imageURL"]
    assert url.startswith(server.http_url + "/image/") and url.endswith(".png")
    status, headers, body = await http_get(url)
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(body)).size == (16, 16)
    clock.advance(61)
    assert (await http_get(url))[0] == 410


@pytest.mark.parametrize(
    "path",
    [
        "/image/00000000-0000-4000-8000-000000000000.png",
        "/image/../../etc/passwd",
        "/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/image/",
    ],
)
async def test_unknown_or_malformed_image_paths_are_404(server, path):
    status, _, body = await http_get(server.http_url, path)
    assert status == 404
    assert b"root:" not in body


async def test_health_answers_ok_and_plain_get_elsewhere_is_not_upgraded(server):
    assert (await http_get(server.http_url, "/health"))[:3:2] == (200, b"ok\n")
    assert (await http_get(server.http_url, "/v1"))[0] == 426


# -- framing, malformed input and limits (section 4) -------------------------------------------


async def test_malformed_frames_get_one_notice_and_the_connection_stays_up(client):
    for text, code in (
        ("this is not JSON", "invalidJSON"),
        ('{"taskType":"ping"}', "invalidRequest"),
        ("[1, 2]", "invalidRequest"),
    ):
        await client.send_text(text)
        (notice,) = (await client.recv())["data"]
        assert notice["taskType"] == "frameError" and notice["error"]["code"] == code
        assert "taskUUID" not in notice
    await client.send([PING])
    assert await client.recv() == PONG


async def test_tasks_beyond_the_frame_limit_get_too_many_tasks(servers, client_for):
    server = await servers(max_tasks_per_frame=2)
    tasks = [upscale() for _ in range(3)]
    async with client_for(server) as client:
        await client.authenticate()
        await client.send(tasks)
        answers = await client.collect(task["taskUUID"] for task in tasks)
    assert answers[tasks[2]["taskUUID"]]["code"] == "tooManyTasks"
    assert "imageURL" in answers[tasks[0]["taskUUID"]]
    assert server.executions[tasks[2]["taskUUID"]] == 0


async def test_tasks_beyond_the_in_flight_limit_get_too_many_tasks(servers, client_for):
    server = await servers(max_in_flight=2)
    tasks = [upscale() for _ in range(3)]
    async with client_for(server) as client:
        await client.authenticate()
        await client.send(tasks)
        answers = await client.collect(task["taskUUID"] for task in tasks)
    assert answers[tasks[2]["taskUUID"]]["code"] == "tooManyTasks"
    assert sum("imageURL" in item for item in answers.values()) == 2


async def test_a_message_over_max_size_closes_with_1009(servers, client_for):
    server = await servers(max_size=1024)
    async with client_for(server) as client:
        await client.authenticate()
        await client.send([upscale(inputImage="A" * 4096)])
        with pytest.raises(ConnectionClosed):
            await client.recv()
    assert client.ws.close_code == 1009


def test_pack_frames_keeps_order_splits_kinds_and_caps_items_and_bytes():
    def out(kind: Any, size: int = 10) -> Outgoing:
        return Outgoing(kind, b"x" * size, 0.0)

    items = [out("data"), out("data"), out("errors"), out("data"), out("data"), out("data")]
    frames = pack_frames(items, max_items=2, max_bytes=None)
    assert [[o.kind for o in f] for f in frames] == [
        ["data", "data"],
        ["errors"],
        ["data", "data"],
        ["data"],
    ]
    big = [out("data", 100), out("data", 100), out("data", 500)]
    assert [len(f) for f in pack_frames(big, max_items=10, max_bytes=250)] == [2, 1]


# -- embedding ---------------------------------------------------------------------------------


def test_run_in_thread_serves_synchronous_clients():
    server = ReferenceServer(ServerConfig(api_keys=frozenset({KEY}), port=0))
    with server.run_in_thread() as url, sync_connect(url) as ws:
        ws.send(orjson.dumps([{"taskType": "authentication", "apiKey": KEY}]).decode())
        assert "connectionSessionUUID" in orjson.loads(ws.recv(timeout=10))["data"][0]
        raw = base64.b64encode(png_bytes()).decode()  # bare base64 input
        task = upscale(inputImage=raw, outputType="base64Data")
        ws.send(orjson.dumps([task]).decode())
        item = orjson.loads(ws.recv(timeout=20))["data"][0]
    assert decode_image(item).size == (16, 16)
    assert server.connection_count == 0
