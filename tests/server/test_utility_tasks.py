"""getTaskDetails and mediaStorage over a real socket (protocol.md section 6)."""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image

from upscale_stream.server import ReferenceServer

from .conftest import ClientFactory, WireClient, new_uuid, png_bytes, png_data_uri, upscale


def details(task_uuid: str) -> dict[str, Any]:
    return {"taskType": "getTaskDetails", "taskUUID": task_uuid}


def media_upload(media: str, **fields: Any) -> dict[str, Any]:
    item = {"taskType": "mediaStorage", "taskUUID": new_uuid(), "operation": "upload"}
    return {**item, "media": media, **fields}


async def http_get(url: str) -> tuple[int, bytes]:
    """GET on the server's HTTP route, in a thread (the server runs on this event loop)."""
    return await asyncio.to_thread(_get, url)


def _get(url: str) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("GET", parts.path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


async def one_answer(client: WireClient, task_uuid: str) -> dict[str, Any]:
    """The first data or errors item for ``task_uuid`` (media answers carry no imageUUID)."""
    while True:
        frame = await client.recv()
        for key in ("data", "errors"):
            for item in frame.get(key, []):
                if item.get("taskUUID") == task_uuid:
                    return dict(item)


async def details_of(client: WireClient, task_uuid: str) -> dict[str, Any]:
    await client.send([details(task_uuid)])
    while True:
        frame = await client.recv()
        for key in ("data", "errors"):
            for item in frame.get(key, []):
                if item.get("taskUUID") == task_uuid and (
                    key == "errors" or item.get("taskType") == "getTaskDetails"
                ):
                    return {key: item}


# -- getTaskDetails ----------------------------------------------------------------------------


async def test_get_task_details_returns_the_request_as_sent_and_the_data_envelope(
    client: WireClient,
) -> None:
    task = upscale(outputFormat="PNG", includeCost=True)
    await client.send([task])
    result = await one_answer(client, task["taskUUID"])
    reply = (await details_of(client, task["taskUUID"]))["data"]
    assert reply["taskType"] == "getTaskDetails" and reply["taskUUID"] == task["taskUUID"]
    assert reply["request"] == [task]  # the array of task objects, exactly as sent
    assert reply["response"] == {"data": [result]}
    assert reply["status"] == "success"


async def test_get_task_details_of_a_failed_task_returns_its_errors_envelope(
    client: WireClient,
) -> None:
    task = upscale(inputImage=new_uuid())  # a well-formed UUID of no stored image
    await client.send([task])
    error = await one_answer(client, task["taskUUID"])
    assert error["code"] == "invalidInputImage"
    reply = (await details_of(client, task["taskUUID"]))["data"]
    assert reply["response"] == {"errors": [error]} and reply["status"] == "error"


async def test_get_task_details_recovers_a_sync_result_from_another_socket(
    server: ReferenceServer, client_for: ClientFactory
) -> None:
    task = upscale()
    async with client_for(server) as first:
        await first.authenticate()
        await first.send([task])
        result = await one_answer(first, task["taskUUID"])
    async with client_for(server) as second:
        await second.authenticate()  # a new session of the same key
        reply = (await details_of(second, task["taskUUID"]))["data"]
    assert reply["response"] == {"data": [result]}


async def test_get_task_details_of_a_running_task_has_its_request_and_no_response(
    servers: Any, client_for: ClientFactory
) -> None:
    server: ReferenceServer = await servers(task_delay=30.0)
    task = upscale()
    async with client_for(server) as client:
        await client.authenticate()
        await client.send([task])
        await server.wait_executions(1)
        reply = (await details_of(client, task["taskUUID"]))["data"]
    assert reply["status"] == "processing" and reply["request"] == [task]
    assert "response" not in reply


async def test_get_task_details_of_an_unknown_task_is_a_scoped_not_found_error(
    client: WireClient,
) -> None:
    task_uuid = new_uuid()
    error = (await details_of(client, task_uuid))["errors"]
    assert error["code"] == "taskFailedOrNotFound"
    assert error["taskType"] == "getTaskDetails" and error["taskUUID"] == task_uuid


async def test_get_task_details_does_not_keep_megabytes_of_inline_input(
    client: WireClient,
) -> None:
    noise = io.BytesIO()
    Image.effect_noise((64, 64), 90).save(noise, "PNG")  # noise does not compress
    task = upscale(
        inputImage="data:image/png;base64," + base64.b64encode(noise.getvalue()).decode()
    )
    assert len(task["inputImage"]) > 4096
    await client.send([task])
    await one_answer(client, task["taskUUID"])
    request = (await details_of(client, task["taskUUID"]))["data"]["request"][0]
    assert request["inputImage"] == f"<{len(task['inputImage'])} characters not kept>"
    assert {k: v for k, v in request.items() if k != "inputImage"} == {
        k: v for k, v in task.items() if k != "inputImage"
    }


# -- mediaStorage ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["dataURI", "base64"])
async def test_media_storage_upload_answers_media_uuid_and_a_url_that_serves_the_bytes(
    client: WireClient, form: str
) -> None:
    raw = png_bytes(12, 10)
    text = base64.b64encode(raw).decode()
    task = media_upload(f"data:image/png;base64,{text}" if form == "dataURI" else text)
    await client.send([task])
    answer = await one_answer(client, task["taskUUID"])
    assert answer["taskType"] == "mediaStorage" and answer["operation"] == "upload"
    assert answer["mediaURL"].endswith(f"/image/{answer['mediaUUID']}.png")
    assert await http_get(answer["mediaURL"]) == (200, raw)


async def test_an_uploaded_media_uuid_is_an_upscale_input(client: WireClient) -> None:
    upload = media_upload(png_data_uri(6, 4))
    await client.send([upload])
    media_uuid = (await one_answer(client, upload["taskUUID"]))["mediaUUID"]
    task = upscale(inputImage=media_uuid)
    await client.send([task])
    result = await one_answer(client, task["taskUUID"])
    assert result["inputImageUUID"] == media_uuid and "imageURL" in result


async def test_media_storage_delete_forgets_the_media(client: WireClient) -> None:
    upload = media_upload(png_data_uri())
    await client.send([upload])
    uploaded = await one_answer(client, upload["taskUUID"])
    delete = {
        "taskType": "mediaStorage",
        "taskUUID": new_uuid(),
        "operation": "delete",
        "mediaUUID": uploaded["mediaUUID"],
    }
    await client.send([delete])
    answer = await one_answer(client, delete["taskUUID"])
    assert answer == {
        "taskType": "mediaStorage",
        "taskUUID": delete["taskUUID"],
        "operation": "delete",
        "mediaUUID": uploaded["mediaUUID"],
    }
    assert (await http_get(uploaded["mediaURL"]))[0] == 410
    again = {**delete, "taskUUID": new_uuid()}
    await client.send([again])
    assert (await one_answer(client, again["taskUUID"]))["code"] == "mediaNotFound"


@pytest.mark.parametrize(
    ("fields", "code", "parameter"),
    [
        ({"operation": "upload"}, "missingMedia", "media"),
        ({"operation": "delete"}, "missingMediaUUID", "mediaUUID"),
        ({"operation": "rename", "media": "x"}, "invalidOperation", "operation"),
        ({"media": "x"}, "invalidOperation", "operation"),
    ],
)
async def test_media_storage_refuses_a_malformed_request_with_a_scoped_error(
    client: WireClient, fields: dict[str, Any], code: str, parameter: str
) -> None:
    task = {"taskType": "mediaStorage", "taskUUID": new_uuid(), **fields}
    await client.send([task])
    error = await one_answer(client, task["taskUUID"])
    assert (error["code"], error["parameter"]) == (code, parameter)
    assert error["taskType"] == "mediaStorage" and error["taskUUID"] == task["taskUUID"]


async def test_media_storage_refuses_bytes_that_are_not_an_image(client: WireClient) -> None:
    task = media_upload(base64.b64encode(b"just some text, not an image at all" * 4).decode())
    await client.send([task])
    error = await one_answer(client, task["taskUUID"])
    assert error["parameter"] == "media" and error["code"].startswith(("invalid", "unsupported"))
