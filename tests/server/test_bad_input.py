"""Bad input for the reference server, one named test per case (issue 7).

Every bad task is sent between two good ones in the same frame, from a raw websockets client.
Each case must get a Runware-format error item for its own task (``code``, ``message``,
``parameter``, ``taskType``, ``taskUUID`` when the task had a string one), while the good tasks
of the frame succeed and the connection goes on answering pings. The table in
``docs/reliability.md`` lists these cases and what happened.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import psutil
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed

from upscale_stream.server import ReferenceServer, ServerConfig

from .conftest import ClientFactory, WireClient, new_uuid, png_bytes, upscale

PING = {"taskType": "ping", "ping": True}
PONG = {"data": [{"taskType": "ping", "pong": True}]}
ERROR_FIELDS = {"code", "message", "parameter", "taskType", "taskUUID", "documentation"}
Servers = Callable[..., Awaitable[ReferenceServer]]
MiB = 1024 * 1024


def data_uri(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def encoded(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def assert_runware_error(item: dict[str, Any], code: str, task: Any) -> None:
    """A Runware-format error item for ``task`` with ``code``."""
    assert item["code"] == code, item
    assert isinstance(item["message"], str) and item["message"]
    assert set(item) <= ERROR_FIELDS, item
    if isinstance(task, dict):
        assert item.get("taskType") == (
            task.get("taskType") if isinstance(task.get("taskType"), str) else None
        )
        if _name_of(task) is not None:
            assert item["taskUUID"] == task["taskUUID"]
        else:
            assert "taskUUID" not in item


async def answers_for(client: WireClient, frame: list[Any], timeout: float = 20.0) -> list[Any]:
    """Send ``[good, *frame, good]``; return the answer of each item of ``frame``, in order.

    Items without a usable taskUUID are matched, in order, with the item errors quoted by the
    frame's notice (an ``errors`` item never comes without a taskUUID: protocol.md section 4).
    The good tasks must succeed and the connection must still answer a ping afterwards.
    """
    first, last = upscale(), upscale()
    await client.send([first, *frame, last])
    named = [_name_of(item) for item in frame]
    wanted = {u for u in named if u is not None} | {first["taskUUID"], last["taskUUID"]}
    anonymous_wanted = sum(1 for u in named if u is None)
    by_uuid: dict[str, dict[str, Any]] = {}
    anonymous: list[dict[str, Any]] = []
    while not (wanted <= by_uuid.keys() and len(anonymous) >= anonymous_wanted):
        received = await client.recv(timeout)
        for key in ("data", "errors"):
            for item in received.get(key, []):
                task_uuid = item.get("taskUUID")
                assert key == "data" or task_uuid is not None, f"an unroutable error: {item}"
                if key == "data" and item.get("taskType") == "frameError":
                    assert item["refused"] == len(item["errors"]) == anonymous_wanted
                    anonymous.extend(item["errors"])
                elif task_uuid in wanted and (key == "errors" or "imageUUID" in item):
                    assert task_uuid not in by_uuid, f"answered twice: {item}"
                    by_uuid[task_uuid] = item
    assert "imageURL" in by_uuid[first["taskUUID"]] and "imageURL" in by_uuid[last["taskUUID"]]
    await client.send([PING])
    assert await client.recv(timeout) == PONG
    unnamed = iter(anonymous)
    return [by_uuid[u] if u is not None else next(unnamed) for u in named]


def _name_of(item: Any) -> str | None:
    """The taskUUID an answer to ``item`` can carry: a non-empty string of at most 64."""
    task_uuid = item.get("taskUUID") if isinstance(item, dict) else None
    return task_uuid if isinstance(task_uuid, str) and 0 < len(task_uuid) <= 64 else None


async def answer_for(client: WireClient, item: Any) -> dict[str, Any]:
    answer: dict[str, Any] = (await answers_for(client, [item]))[0]
    return answer


# -- image data ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("data:image/png;base64,!!not*base64$$", id="data URI"),
        pytest.param("%%%% not base64 %%%%", id="bare"),
        pytest.param("data:image/png;base64", id="data URI without a comma"),
    ],
)
async def test_invalid_base64_fails_only_its_own_task(client: WireClient, value: str) -> None:
    task = upscale(inputImage=value)
    assert_runware_error(await answer_for(client, task), "invalidInputImage", task)


async def test_bytes_that_are_not_an_image_fail_only_their_own_task(client: WireClient) -> None:
    task = upscale(inputImage=data_uri(b"plain text, certainly not an image"))
    answer = await answer_for(client, task)
    assert_runware_error(answer, "unsupportedImageFormat", task)
    assert answer["parameter"] == "inputImage"


async def test_a_truncated_png_fails_only_its_own_task(client: WireClient) -> None:
    task = upscale(inputImage=data_uri(png_bytes(64, 64)[:80]))
    assert_runware_error(await answer_for(client, task), "corruptImage", task)


async def test_a_truncated_jpeg_fails_only_its_own_task(client: WireClient) -> None:
    jpeg = encoded(Image.effect_noise((64, 64), 80).convert("RGB"), "JPEG")
    task = upscale(inputImage=data_uri(jpeg[: len(jpeg) // 3], "image/jpeg"))
    assert_runware_error(await answer_for(client, task), "corruptImage", task)


@pytest.mark.parametrize(
    ("image_format", "mode", "name"),
    [("GIF", "P", "GIF"), ("BMP", "RGB", "BMP"), ("TIFF", "RGB", "TIFF"), ("ICO", "RGB", "ICO")],
)
async def test_unsupported_formats_are_refused_by_name(
    client: WireClient, image_format: str, mode: str, name: str
) -> None:
    task = upscale(inputImage=data_uri(encoded(Image.new(mode, (16, 16)), image_format)))
    answer = await answer_for(client, task)
    assert_runware_error(answer, "unsupportedImageFormat", task)
    assert name in answer["message"]


# -- decompression bombs and memory ------------------------------------------------------------


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


async def test_a_png_header_claiming_ten_gigapixels_is_refused_before_decoding(
    client: WireClient,
) -> None:
    before = rss()
    tasks = [upscale(inputImage=data_uri(png_claiming(100_000, 100_000))) for _ in range(5)]
    for answer, task in zip(await answers_for(client, tasks), tasks, strict=True):
        assert_runware_error(answer, "imageTooLarge", task)
    assert rss() - before < 100 * MiB  # 10 gigapixels were never allocated


async def test_an_image_over_the_pixel_limit_is_refused_and_memory_stays_bounded(
    servers: Servers, client_for: ClientFactory
) -> None:
    server = await servers(max_pixels=1_000_000)
    bomb = encoded(Image.new("1", (4_000, 4_000)), "PNG")  # 16 megapixels in a few KB
    assert len(bomb) < 64 * 1024
    before = rss()
    async with client_for(server) as client:
        await client.authenticate()
        tasks = [upscale(inputImage=data_uri(bomb)) for _ in range(10)]
        for answer, task in zip(await answers_for(client, tasks), tasks, strict=True):
            assert_runware_error(answer, "imageTooLarge", task)
            assert answer["parameter"] == "inputImage"
    assert rss() - before < 100 * MiB
    assert server.counts.executions_total == 12  # each ran and failed alone; no retry storm


async def test_an_upload_over_the_pixel_limit_is_refused(client: WireClient) -> None:
    upload = {
        "taskType": "imageUpload",
        "taskUUID": new_uuid(),
        "image": data_uri(png_claiming(50_000, 50_000)),
    }
    answer = await answer_for(client, upload)
    assert_runware_error(answer, "imageTooLarge", upload)
    assert answer["parameter"] == "image"


# -- volume and size ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_ten_thousand_tasks_in_one_frame_each_get_exactly_one_answer(
    server: ReferenceServer, client: WireClient
) -> None:
    upload = {"taskType": "imageUpload", "taskUUID": new_uuid(), "image": data_uri(png_bytes(2, 2))}
    await client.send([upload])
    image_uuid = (await client.collect([upload["taskUUID"]]))[upload["taskUUID"]]["imageUUID"]
    tasks = [upscale(inputImage=image_uuid) for _ in range(10_000)]
    await client.send(tasks)
    answers = await client.collect((task["taskUUID"] for task in tasks), timeout=50)
    done = [a for a in answers.values() if "imageURL" in a]
    refused = [a for a in answers.values() if a.get("code") == "tooManyTasks"]
    assert len(done) + len(refused) == 10_000
    assert len(done) == server.config.max_in_flight  # the per-connection limit, then refusals
    for item in refused:
        assert_runware_error(item, "tooManyTasks", {"taskType": "upscale", **item})
    await client.send([PING])
    assert await client.recv() == PONG


async def test_tasks_beyond_the_per_frame_limit_get_too_many_tasks_each(
    servers: Servers, client_for: ClientFactory
) -> None:
    server = await servers(max_tasks_per_frame=10)
    tasks = [upscale() for _ in range(15)]
    async with client_for(server) as client:
        await client.authenticate()
        await client.send(tasks)
        answers = await client.collect(task["taskUUID"] for task in tasks)
        await client.send([PING])
        assert await client.recv() == PONG
    assert all("imageURL" in answers[task["taskUUID"]] for task in tasks[:10])
    for task in tasks[10:]:
        assert_runware_error(answers[task["taskUUID"]], "tooManyTasks", task)
        assert server.executions[task["taskUUID"]] == 0


async def test_an_oversized_frame_closes_with_1009_and_the_sessions_other_tasks_survive(
    servers: Servers, client_for: ClientFactory
) -> None:
    server = await servers(max_size=MiB)
    server.faults.result_delay = 0.3  # the first task is still running when the socket goes
    first = upscale()
    async with client_for(server) as client:
        session_id = (await client.authenticate())["connectionSessionUUID"]
        async with client_for(server) as bystander:
            await bystander.authenticate()
            await client.send([first])
            await server.wait_executions(1)
            await client.send([upscale(inputImage="A" * (2 * MiB))])
            with pytest.raises(ConnectionClosed):
                while True:
                    await client.recv()
            assert client.ws.close_code == 1009
            await bystander.send([PING])  # other connections are unaffected
            assert await bystander.recv() == PONG
    server.faults.result_delay = 0.0
    async with client_for(server) as resumed:
        await resumed.authenticate(session_id=session_id)
        answers = await resumed.collect([first["taskUUID"]])
    assert "imageURL" in answers[first["taskUUID"]]  # held, then delivered on resume
    assert server.executions[first["taskUUID"]] == 1


async def test_a_frame_over_max_message_bytes_gets_frame_too_large_and_the_socket_goes_on(
    servers: Servers, client_for: ClientFactory
) -> None:
    server = await servers(max_message_bytes=MiB)
    big = upscale(inputImage="A" * (2 * MiB))
    ping_without_uuid = dict(PING)
    async with client_for(server) as client:
        await client.authenticate()
        await client.send([big, ping_without_uuid, 7])
        errors = (await client.recv())["errors"]  # scoped: only the item that names a task
        assert [item["code"] for item in errors] == ["frameTooLarge"]
        assert_runware_error(errors[0], "frameTooLarge", big)
        assert "parameter" not in errors[0]  # null: no parameter is at fault
        assert str(MiB) in errors[0]["message"] and "bytes" in errors[0]["message"]
        (notice,) = (await client.recv())["data"]  # and one notice for the frame
        assert notice["taskType"] == "frameError" and "taskUUID" not in notice
        assert notice["error"]["code"] == "frameTooLarge"

        await client.send_text("[" + " " * (2 * MiB) + "not JSON")
        (notice,) = (await client.recv())["data"]
        assert notice["error"]["code"] == "frameTooLarge" and "taskUUID" not in notice

        assert await answers_for(client, []) == []  # a normal frame on the same socket works
    assert server.received[big["taskUUID"]] == 0 and server.executions[big["taskUUID"]] == 0
    assert server.counts.executions_total == 2  # only the two good tasks of answers_for


def test_max_message_bytes_may_not_exceed_max_size() -> None:
    with pytest.raises(ValueError, match="max_message_bytes"):
        ServerConfig(api_keys=frozenset({"k"}), max_size=MiB, max_message_bytes=2 * MiB)
    assert ServerConfig(api_keys=frozenset({"k"})).message_limit == 16 * MiB
    assert ServerConfig(api_keys=frozenset({"k"}), max_size=MiB).message_limit == MiB
    assert ServerConfig(api_keys=frozenset({"k"}), max_size=None).message_limit == 16 * MiB


# -- identifiers, task types and fields ------------------------------------------------------


@pytest.mark.parametrize(
    ("task_uuid", "code"),
    [
        pytest.param("not-a-uuid", "invalidTaskUUID", id="not a UUID"),
        pytest.param("11111111-1111-1111-1111-111111111111", "invalidTaskUUID", id="not v4"),
        pytest.param("", "invalidTaskUUID", id="empty"),
        pytest.param(12345, "invalidTaskUUID", id="a number"),
        pytest.param(None, "invalidTaskUUID", id="null"),
        pytest.param(["a"], "invalidTaskUUID", id="a list"),
    ],
)
async def test_a_bad_task_uuid_gets_invalid_task_uuid(
    server: ReferenceServer, client: WireClient, task_uuid: Any, code: str
) -> None:
    task = upscale(taskUUID=task_uuid)
    assert_runware_error(await answer_for(client, task), code, task)
    assert server.counts.executions_total == 2  # the two good tasks only


async def test_a_missing_task_uuid_gets_missing_task_uuid(client: WireClient) -> None:
    task = upscale()
    del task["taskUUID"]
    assert_runware_error(await answer_for(client, task), "missingTaskUUID", task)


@pytest.mark.parametrize("task_type", ["imageInference", "UPSCALE", "", 7])
async def test_an_unknown_task_type_gets_unsupported_task_type(
    client: WireClient, task_type: Any
) -> None:
    task = upscale(taskType=task_type)
    answer = await answer_for(client, task)
    assert_runware_error(answer, "unsupportedTaskType", task)
    assert answer["parameter"] == "taskType"
    assert "'" not in answer["message"] and "supported: upscale" in answer["message"]


async def test_a_null_task_type_is_a_missing_task_type_not_a_python_none(
    client: WireClient,
) -> None:
    task = upscale(taskType=None)
    answer = await answer_for(client, task)
    assert_runware_error(answer, "missingTaskType", task)
    assert "None" not in answer["message"]


@pytest.mark.parametrize(
    ("field", "code"),
    [("inputImage", "missingInputImage"), ("taskType", "missingTaskType")],
)
async def test_a_missing_required_field_is_named_in_its_error(
    client: WireClient, field: str, code: str
) -> None:
    task = upscale()
    del task[field]
    answer = await answer_for(client, task)
    assert_runware_error(answer, code, task)
    assert answer["parameter"] == field


async def test_an_upload_without_its_image_gets_missing_image(client: WireClient) -> None:
    upload = {"taskType": "imageUpload", "taskUUID": new_uuid()}
    assert_runware_error(await answer_for(client, upload), "missingImage", upload)


WRONG_TYPES = [
    ("inputImage", 5, "invalidInputImage"),
    ("inputImage", "", "invalidInputImage"),
    ("inputImage", {"url": "x"}, "invalidInputImage"),
    ("upscaleFactor", "two", "invalidUpscaleFactor"),
    ("upscaleFactor", 3, "invalidUpscaleFactor"),
    ("upscaleFactor", None, "invalidUpscaleFactor"),
    ("outputQuality", "high", "invalidOutputQuality"),
    ("outputQuality", 100, "invalidOutputQuality"),
    ("outputFormat", 42, "invalidOutputFormat"),
    ("outputType", "file", "invalidOutputType"),
    ("deliveryMethod", "later", "invalidDeliveryMethod"),
    ("includeCost", "yes", "invalidIncludeCost"),
    ("settings", [1, 2], "invalidSettings"),
    ("inputs", "image.png", "invalidInputs"),
    ("ttl", 5, "invalidTtl"),
    ("model", {"id": 1}, "invalidModel"),
    ("webhookURL", "ftp://example.com/hook", "invalidWebhookURL"),
    ("uploadEndpoint", 17, "invalidUploadEndpoint"),
    ("noSuchField", 1, "unknownParameter"),
]


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [pytest.param(*case, id=f"{case[0]}={case[1]!r}") for case in WRONG_TYPES],
)
async def test_a_wrongly_typed_field_is_named_in_its_error(
    client: WireClient, field: str, value: Any, code: str
) -> None:
    task = upscale(**{field: value})
    answer = await answer_for(client, task)
    assert_runware_error(answer, code, task)
    assert answer["parameter"] == field


@pytest.mark.parametrize("item", [1, "upscale", None, [], True], ids=repr)
async def test_an_item_that_is_not_an_object_gets_invalid_request(
    client: WireClient, item: Any
) -> None:
    assert_runware_error(await answer_for(client, item), "invalidRequest", item)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not JSON at all", "invalidJSON"),
        ("\x00\x01", "invalidJSON"),
        ('[{"taskType": "upscale"', "invalidJSON"),
        ('{"taskType": "upscale"}', "invalidRequest"),
        ('"a string"', "invalidRequest"),
        ("42", "invalidRequest"),
        ("[]", "emptyRequest"),
    ],
)
async def test_a_frame_that_is_not_a_json_array_of_tasks_gets_one_notice(
    client: WireClient, text: str, code: str
) -> None:
    await client.send_text(text)
    frame = await client.recv()
    assert list(frame) == ["data"]  # no errors item without a taskUUID (protocol.md section 4)
    (notice,) = frame["data"]
    assert notice["taskType"] == "frameError" and notice["status"] == "error"
    assert notice["error"]["code"] == code and "taskUUID" not in notice
    assert notice["error"]["documentation"].startswith("https://runware.ai/docs")
    assert (await answer_for(client, upscale()))["imageURL"]


async def test_a_binary_frame_is_refused_without_being_parsed(client: WireClient) -> None:
    await client.ws.send(b'[{"taskType":"ping","ping":true}]')  # valid JSON, but binary
    (notice,) = (await client.recv())["data"]
    assert notice["error"]["code"] == "unsupportedFrame"
    assert (await answer_for(client, upscale()))["imageURL"]


@pytest.mark.timeout(60)
async def test_ten_thousand_invalid_tasks_leave_no_state_behind(
    server: ReferenceServer, client: WireClient
) -> None:
    tasks = [upscale(upscaleFactor=3) for _ in range(9_998)]  # 10,000 with the two good ones
    answers = await answers_for(client, tasks, timeout=50)
    assert {answer["code"] for answer in answers} == {"invalidUpscaleFactor"}
    assert len(server.registry.tasks) == 2  # the good tasks; refusals are never registered
    assert server.counts.executions_total == 2
    assert len(orjson.dumps(answers)) < 9_998 * 400  # one short error item each


# -- the one inline decoder, on the live path (issue 10) ------------------------------------------


@pytest.mark.parametrize(
    ("task_type", "field"),
    [("upscale", "inputImage"), ("imageUpload", "image"), ("mediaStorage", "media")],
)
@pytest.mark.parametrize("form", ["text/plain data URI", "line breaks"])
async def test_inline_images_follow_the_one_shared_decoder_on_every_task(
    client: WireClient, task_type: str, field: str, form: str
) -> None:
    text = base64.b64encode(png_bytes(40, 40)).decode()
    value = (
        f"data:text/plain;base64,{text}"
        if form == "text/plain data URI"
        else "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    )
    task: dict[str, Any] = {"taskType": task_type, "taskUUID": new_uuid(), field: value}
    if task_type == "upscale":
        task["upscaleFactor"] = 2
    if task_type == "mediaStorage":
        task["operation"] = "upload"
    answer = await answer_for(client, task)
    assert_runware_error(answer, "invalidInputImage", task)
    assert answer["parameter"] == field
