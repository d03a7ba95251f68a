"""Every option of the seed (``upscale-api.txt``), end to end: our client against the server.

Issue 4's acceptance, checked on real sockets and on the decoded output image:

* :class:`~upscale_stream.UpscaleClient` sends every seed option to the reference server and the
  output honours it: size (factor, model, the 4096 cap), format, quality, output type, cost,
  ``ttl`` (the URL answers 410 once it expires; the server's clock is a fake one, advanced by
  hand), webhooks, upload endpoints, async delivery and per-model ``settings``. Settings a model
  does not take are refused by the client before anything is sent.
* Invalid requests, sent as raw frames (websockets + orjson, bypassing our client's checks), get
  a Runware-format ``errors`` item for that task only, one rule of the seed at a time, while the
  valid task in the same frame succeeds; no frame mixes ``data`` and ``errors``.
* A session dropped mid-run and resumed within the hold window receives every result exactly
  once, on the raw wire and through our client.
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from upscale_stream import UpscaleClient
from upscale_stream.config import Polling
from upscale_stream.errors import APIError, InvalidTask, UpscaleError
from upscale_stream.models import CCSR, CLARITY, SD_LATENT_UPSCALER, SWINIR, UpscaleResult
from upscale_stream.server import ReferenceServer, ServerConfig

KEY = "test-key-options-0123456789"
MODELS = [SWINIR, CLARITY, CCSR, SD_LATENT_UPSCALER]
PIL_FORMAT = {"JPG": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}
MIME = {"JPG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
EXTENSION = {"JPG": "jpg", "PNG": "png", "WEBP": "webp"}


class FakeClock:
    """The server's monotonic clock, advanced by the test instead of waiting."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def noisy_png(width: int = 24, height: int = 16, seed: int = 1) -> bytes:
    """A PNG of random pixels: noise makes quality and model differences show in the output."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (width, height), rng.randbytes(3 * width * height))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(png).decode()}"


async def decoded(result: UpscaleResult) -> tuple[Image.Image, bytes]:
    """The result's image (through the client's own download or decoding) and its bytes."""
    raw = await result.aread_bytes(timeout=30)
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image, raw


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def server(clock: FakeClock) -> AsyncIterator[ReferenceServer]:
    """A reference server on a free port with a fake clock; private URLs allowed (receivers)."""
    config = ServerConfig(
        api_keys=frozenset({KEY}), port=0, allow_private_urls=True, clock=clock, workers=2
    )
    async with ReferenceServer(config) as running:
        yield running


@pytest.fixture
async def client(server: ReferenceServer) -> AsyncIterator[UpscaleClient]:
    """Our client, connected; async tasks are polled quickly."""
    polling = Polling(initial=0.02, factor=1.5, max_delay=0.2)
    async with UpscaleClient(api_key=KEY, url=server.url, polling=polling, seed=7) as connected:
        yield connected


# -- size: factor, model, the 4096 cap ---------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 4])
async def test_swinir_multiplies_width_and_height_by_the_factor(client, server, factor):
    result = await client.upscale(noisy_png(24, 16), factor=factor, model=SWINIR)

    image, _ = await decoded(result)
    assert image.size == (24 * factor, 16 * factor)
    assert server.executions[result.task_uuid] == 1


async def test_each_seed_model_doubles_the_size_and_renders_its_own_pixels(client):
    source = noisy_png(20, 12)
    outputs = {}
    for model in MODELS:
        result = await client.upscale(source, model=model, output_format="PNG")
        image, raw = await decoded(result)
        assert image.size == (40, 24), model
        assert image.format == "PNG"
        outputs[model] = raw
    assert len(set(outputs.values())) == len(MODELS)  # four pipelines, four different images


async def test_an_input_whose_output_would_pass_4096_is_shrunk_to_fit_exactly(client):
    # Seed: "a 2048x2048 image with an upscaleFactor of 4 will first be reduced to 1024x1024".
    buffer = io.BytesIO()
    Image.new("RGB", (2048, 2048), (40, 120, 200)).save(buffer, "PNG")

    result = await client.upscale(buffer.getvalue(), factor=4, model=SWINIR, timeout=60)

    raw = await result.aread_bytes(timeout=60)
    with Image.open(io.BytesIO(raw)) as image:
        assert image.size == (4096, 4096)


# -- inputImage ---------------------------------------------------------------------------------


async def test_every_input_form_of_the_seed_is_upscaled(client, server):
    # Seed: a data URI, bare base64, the UUID of a generated image, or a URL to an image.
    png = noisy_png(10, 6)
    first = await client.upscale(data_uri(png), output_format="PNG")
    bare = await client.upscale(base64.b64encode(png).decode(), output_format="PNG")
    by_uuid = await client.upscale(first.image_uuid, output_format="PNG")
    by_url = await client.upscale(first.image_url, output_format="PNG")

    assert (await decoded(first))[0].size == (20, 12)
    assert (await decoded(bare))[1] == (await decoded(first))[1]  # same pixels in, same out
    for chained in (by_uuid, by_url):
        assert chained.input_image_uuid == first.image_uuid
        assert (await decoded(chained))[0].size == (40, 24)


# -- output type, format, quality --------------------------------------------------------------


@pytest.mark.parametrize(
    ("output_type", "field_name"),
    [("URL", "image_url"), ("base64Data", "image_base64_data"), ("dataURI", "image_data_uri")],
)
async def test_each_output_type_carries_the_image_in_its_own_field(
    client, server, output_type, field_name
):
    result = await client.upscale(noisy_png(), output_type=output_type, output_format="PNG")

    fields = {"image_url", "image_base64_data", "image_data_uri"}
    assert getattr(result, field_name)
    assert all(getattr(result, other) is None for other in fields - {field_name})
    if output_type == "URL":
        assert result.image_url.startswith(f"{server.http_url}/image/{result.image_uuid}.png")
    if output_type == "dataURI":
        assert result.image_data_uri.startswith("data:image/png;base64,")
    image, raw = await decoded(result)
    assert (image.format, image.size) == ("PNG", (48, 32))
    # The blocking read gives the same bytes (in a thread: this loop also runs the server).
    assert await asyncio.to_thread(result.read_bytes, timeout=30) == raw


@pytest.mark.parametrize("output_format", ["JPG", "PNG", "WEBP"])
@pytest.mark.parametrize("output_type", ["URL", "dataURI"])
async def test_each_output_format_is_really_encoded_in_that_format(
    client, output_format, output_type
):
    result = await client.upscale(noisy_png(), output_format=output_format, output_type=output_type)

    image, _ = await decoded(result)
    assert image.format == PIL_FORMAT[output_format]
    if output_type == "URL":
        assert result.image_url.endswith("." + EXTENSION[output_format])
    else:
        assert result.image_data_uri.startswith(f"data:{MIME[output_format]};base64,")


async def test_the_default_output_is_a_jpeg_url(client):
    result = await client.upscale(noisy_png())

    assert result.image_url is not None and result.image_url.endswith(".jpg")
    image, _ = await decoded(result)
    assert image.format == "JPEG"


@pytest.mark.parametrize("output_format", ["JPG", "WEBP"])
async def test_a_lower_output_quality_gives_a_smaller_file(client, output_format):
    source = noisy_png(64, 48, seed=3)
    sizes = {}
    for quality in (30, 95):
        result = await client.upscale(
            source, output_format=output_format, output_quality=quality, output_type="base64Data"
        )
        image, raw = await decoded(result)
        assert image.size == (128, 96)
        sizes[quality] = len(raw)
    assert sizes[30] < sizes[95]


# -- includeCost -------------------------------------------------------------------------------


async def test_include_cost_adds_a_cost_that_is_the_same_for_the_same_work(client):
    source = noisy_png()
    first = await client.upscale(source, model=CLARITY, include_cost=True)
    second = await client.upscale(source, model=CLARITY, include_cost=True)
    bigger = await client.upscale(source, model=SWINIR, factor=4, include_cost=True)
    without = await client.upscale(source, model=CLARITY)

    assert isinstance(first.cost, float) and first.cost > 0
    assert first.cost == second.cost
    assert bigger.cost is not None and bigger.cost != first.cost
    assert without.cost is None


# -- ttl ---------------------------------------------------------------------------------------


async def test_a_url_is_served_until_its_ttl_passes_then_answers_410(client, clock):
    source = noisy_png()
    short = await client.upscale(source, output_type="URL", ttl=60)
    default = await client.upscale(source, output_type="URL")

    image, _ = await decoded(short)  # served before expiry
    assert image.size == (48, 32)
    clock.advance(59)
    await short.aread_bytes(timeout=10)
    clock.advance(2)  # 61 s after the result: past its ttl

    with pytest.raises(UpscaleError, match="410"):
        await short.aread_bytes(timeout=10)
    image, _ = await decoded(default)  # without a ttl the server's default (an hour) applies
    assert image.size == (48, 32)


async def test_ttl_below_60_or_with_inline_output_is_refused_before_sending(client, server):
    with pytest.raises(InvalidTask) as too_short:
        await client.upscale(noisy_png(), ttl=30)
    with pytest.raises(InvalidTask) as not_url:
        await client.upscale(noisy_png(), ttl=120, output_type="base64Data")

    assert too_short.value.parameter == "ttl"
    assert (not_url.value.parameter, not_url.value.code) == ("ttl", "incompatibleParameters")
    assert server.counts.received_total == 0


# -- webhookURL and uploadEndpoint -------------------------------------------------------------


@dataclass
class ReceivedRequest:
    """One HTTP request a :func:`http_receiver` got."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@asynccontextmanager
async def http_receiver() -> AsyncIterator[tuple[str, asyncio.Queue[ReceivedRequest]]]:
    """A tiny HTTP server on 127.0.0.1 that records each request and answers 200 OK."""
    received: asyncio.Queue[ReceivedRequest] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, target, _ = (await reader.readline()).decode().split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        received.put_nowait(ReceivedRequest(method, target, headers, body))

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield f"http://127.0.0.1:{port}", received


async def next_requests(queue: asyncio.Queue[ReceivedRequest], count: int) -> list[ReceivedRequest]:
    async with asyncio.timeout(20):
        return [await queue.get() for _ in range(count)]


async def test_the_webhook_gets_one_post_per_result_with_the_result_as_json(client):
    async with http_receiver() as (base, received):
        webhook = f"{base}/hooks/runware?token=abc"
        results = await asyncio.gather(
            *(client.upscale(noisy_png(seed=seed), webhook_url=webhook) for seed in range(3))
        )
        posts = await next_requests(received, 3)

    assert all(post.method == "POST" for post in posts)
    assert all(post.target == "/hooks/runware?token=abc" for post in posts)
    assert all(post.headers["content-type"].startswith("application/json") for post in posts)
    bodies = [orjson.loads(post.body) for post in posts]
    by_uuid = {body["data"][0]["taskUUID"]: body["data"][0] for body in bodies}
    assert sorted(by_uuid) == sorted(result.task_uuid for result in results)
    for result in results:
        assert by_uuid[result.task_uuid]["imageUUID"] == result.image_uuid
        assert by_uuid[result.task_uuid]["imageURL"] == result.image_url
    assert received.empty()


@pytest.mark.parametrize("output_format", ["PNG", "WEBP"])
async def test_the_upload_endpoint_gets_a_put_of_the_raw_output_bytes(client, output_format):
    async with http_receiver() as (base, received):
        result = await client.upscale(
            noisy_png(),
            output_format=output_format,
            output_type="base64Data",
            upload_endpoint=f"{base}/bucket/out.bin?X-Signature=s1",
        )
        (put,) = await next_requests(received, 1)

    assert (put.method, put.target) == ("PUT", "/bucket/out.bin?X-Signature=s1")
    assert put.headers["content-type"] == MIME[output_format]
    assert put.body == base64.b64decode(result.image_base64_data or "")
    with Image.open(io.BytesIO(put.body)) as image:
        assert (image.format, image.size) == (PIL_FORMAT[output_format], (48, 32))


# -- deliveryMethod ----------------------------------------------------------------------------


async def test_async_delivery_is_acked_then_polled_to_the_same_image(client, server):
    result = await client.upscale(noisy_png(), delivery_method="async", output_format="PNG")

    assert result.status == "success"
    assert server.counts.polls[result.task_uuid] >= 1
    assert server.received[result.task_uuid] == server.executions[result.task_uuid] == 1
    image, _ = await decoded(result)
    assert image.size == (48, 32)


# -- settings per model ------------------------------------------------------------------------

ACCEPTED_SETTINGS = [
    pytest.param(
        CLARITY,
        {
            "positivePrompt": "sharp",
            "negativePrompt": "blur",
            "strength": 0.6,
            "controlNetWeight": 0.5,
            "steps": 20,
            "scheduler": "Euler",
            "seed": 42,
            "CFGScale": 6.5,
        },
        id="Clarity",
    ),
    pytest.param(
        CCSR,
        {
            "positivePrompt": "sharp",
            "negativePrompt": "blur",
            "controlNetWeight": 0.3,
            "steps": 10,
            "seed": 1,
            "CFGScale": 4,
        },
        id="CCSR",
    ),
    pytest.param(
        SD_LATENT_UPSCALER,
        {
            "positivePrompt": "sharp",
            "negativePrompt": "blur",
            "steps": 15,
            "seed": 3,
            "CFGScale": 9,
            "clipSkip": 2,
        },
        id="SD-latent",
    ),
]


@pytest.mark.parametrize(("model", "settings"), ACCEPTED_SETTINGS)
async def test_every_setting_a_model_supports_is_accepted_and_the_task_succeeds(
    client, server, model, settings
):
    result = await client.upscale(noisy_png(), model=model, settings=settings)

    image, _ = await decoded(result)
    assert image.size == (48, 32)
    assert server.executions[result.task_uuid] == 1


async def test_settings_change_the_output_of_the_model_that_uses_them(client):
    source = noisy_png()
    plain = await client.upscale(source, model=CLARITY, output_format="PNG")
    strong = await client.upscale(
        source, model=CLARITY, output_format="PNG", settings={"strength": 1.0}
    )

    assert (await plain.aread_bytes()) != (await strong.aread_bytes())


@pytest.mark.parametrize(
    ("model", "settings", "parameter"),
    [
        (CCSR, {"strength": 0.5}, "settings.strength"),
        (CLARITY, {"clipSkip": 1}, "settings.clipSkip"),
        (CCSR, {"scheduler": "Euler"}, "settings.scheduler"),
        (SD_LATENT_UPSCALER, {"controlNetWeight": 0.5}, "settings.controlNetWeight"),
        (SWINIR, {"steps": 10}, "settings.steps"),
    ],
)
async def test_a_setting_the_model_does_not_support_is_refused_before_sending(
    client, server, model, settings, parameter
):
    with pytest.raises(InvalidTask) as refused:
        await client.upscale(noisy_png(), model=model, settings=settings)

    assert refused.value.parameter == parameter
    assert refused.value.code == "unsupportedParameter"
    assert server.counts.received_total == 0


@pytest.mark.parametrize("model", [CLARITY, CCSR, SD_LATENT_UPSCALER])
async def test_factor_4_is_refused_before_sending_for_every_model_but_swinir(client, server, model):
    with pytest.raises(InvalidTask) as refused:
        await client.upscale(noisy_png(), model=model, factor=4)

    assert (refused.value.parameter, refused.value.code) == (
        "upscaleFactor",
        "invalidUpscaleFactor",
    )
    assert server.counts.received_total == 0


# -- invalid requests on the wire: one error item per invalid task -----------------------------


@dataclass
class Wire:
    """A raw client: JSON arrays out, every received envelope checked and kept."""

    ws: ClientConnection
    frames: list[dict[str, Any]] = field(default_factory=list)
    session_id: str | None = None

    async def send(self, items: Iterable[dict[str, Any]]) -> None:
        await self.ws.send(orjson.dumps(list(items)).decode())

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(20):
            frame = orjson.loads(await self.ws.recv())
        assert isinstance(frame, dict)
        assert len(frame.keys() & {"data", "errors"}) == 1, f"not one kind per frame: {frame}"
        self.frames.append(frame)
        return frame

    async def authenticate(self, session_id: str | None = None) -> str:
        item: dict[str, Any] = {"taskType": "authentication", "apiKey": KEY}
        if session_id is not None:
            item["connectionSessionUUID"] = session_id
        await self.send([item])
        answer = (await self.recv())["data"][0]
        self.session_id = answer["connectionSessionUUID"]
        return str(self.session_id)

    async def answers(
        self, task_uuids: Iterable[str], counts: Counter[str] | None = None
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """Receive until every task has its final answer: ``(kind, item)`` by taskUUID.

        Every final answer is counted in ``counts``; an answer arriving twice fails the test.
        """
        wanted = set(task_uuids)
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        counts = Counter() if counts is None else counts
        while not wanted <= found.keys():
            frame = await self.recv()
            for kind, items in frame.items():
                for item in items:
                    task_uuid = item.get("taskUUID")
                    if kind == "data" and "imageUUID" not in item:
                        continue  # an ACK, not an answer
                    counts[task_uuid] += 1
                    assert counts[task_uuid] == 1, f"answered twice: {item}"
                    found[task_uuid] = (kind, item)
        return found


@asynccontextmanager
async def wire_to(server: ReferenceServer) -> AsyncIterator[Wire]:
    async with connect(server.url, max_size=None) as ws:
        yield Wire(ws)


def wire_task(**fields: Any) -> dict[str, Any]:
    """A valid upscale item (SwinIR x2 of a small PNG), with ``fields`` overriding."""
    item: dict[str, Any] = {
        "taskType": "upscale",
        "taskUUID": str(uuid.uuid4()),
        "inputImage": data_uri(noisy_png(8, 6)),
        "model": SWINIR,
        "upscaleFactor": 2,
        "outputType": "base64Data",
    }
    item.update(fields)
    return {key: value for key, value in item.items() if value is not None}


GIF_1PX = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///ywAAAAAAQABAAACAUwAOw==")

# One rule of the seed each: the invalid task's overrides, then its code and parameter.
RULES = [
    pytest.param(
        {"model": CCSR, "upscaleFactor": 4}, "invalidUpscaleFactor", "upscaleFactor", id="4x-CCSR"
    ),
    pytest.param(
        {"model": CLARITY, "upscaleFactor": 4.5},  # Clarity takes 2 to 4 (docs/server.md)
        "invalidUpscaleFactor",
        "upscaleFactor",
        id="4.5x-Clarity",
    ),
    pytest.param(
        {"model": SD_LATENT_UPSCALER, "upscaleFactor": 4},
        "invalidUpscaleFactor",
        "upscaleFactor",
        id="4x-SD-latent",
    ),
    pytest.param({"upscaleFactor": 3}, "invalidUpscaleFactor", "upscaleFactor", id="factor-3"),
    pytest.param(
        {"model": CCSR, "settings": {"strength": 0.5}},
        "unsupportedParameter",
        "settings.strength",
        id="strength-CCSR",
    ),
    pytest.param(
        {"model": CLARITY, "settings": {"clipSkip": 1}},
        "unsupportedParameter",
        "settings.clipSkip",
        id="clipSkip-Clarity",
    ),
    pytest.param(
        {"model": CCSR, "settings": {"scheduler": "Euler"}},
        "unsupportedParameter",
        "settings.scheduler",
        id="scheduler-CCSR",
    ),
    pytest.param({"outputQuality": 100}, "invalidOutputQuality", "outputQuality", id="quality-100"),
    pytest.param({"outputQuality": 19}, "invalidOutputQuality", "outputQuality", id="quality-19"),
    pytest.param({"outputType": "URL", "ttl": 30}, "invalidTtl", "ttl", id="ttl-30"),
    pytest.param(
        {"outputType": "base64Data", "ttl": 30},  # ttl has no effect there, but 30 is invalid
        "invalidTtl",
        "ttl",
        id="ttl-30-with-base64Data",
    ),
    pytest.param({"outputType": "binary"}, "invalidOutputType", "outputType", id="outputType"),
    pytest.param({"outputFormat": "GIF"}, "invalidOutputFormat", "outputFormat", id="outputFormat"),
    pytest.param({"inputImage": None}, "missingInputImage", "inputImage", id="no-inputImage"),
    pytest.param({"model": "not-an-air-id"}, "invalidModel", "model", id="model"),
    pytest.param({"taskUUID": "task-1"}, "invalidTaskUUID", "taskUUID", id="taskUUID"),
    pytest.param(
        {"inputImage": data_uri(GIF_1PX, "image/gif")},
        "unsupportedImageFormat",
        "inputImage",
        id="GIF-input",
    ),
]


@pytest.mark.parametrize(("overrides", "code", "parameter"), RULES)
async def test_an_invalid_task_gets_its_own_error_item_and_its_valid_neighbour_succeeds(
    server, overrides, code, parameter
):
    valid, invalid = wire_task(), wire_task(**overrides)

    async with wire_to(server) as wire:
        await wire.authenticate()
        await wire.send([invalid, valid])
        answers = await wire.answers([valid["taskUUID"], invalid["taskUUID"]])

    kind, result = answers[valid["taskUUID"]]
    assert kind == "data" and result["imageBase64Data"]
    kind, error = answers[invalid["taskUUID"]]
    assert kind == "errors"
    assert error == {
        "code": code,
        "message": error["message"],
        "parameter": parameter,
        "taskType": "upscale",
        "taskUUID": invalid["taskUUID"],
        "documentation": "https://runware.ai/docs/en/tools/upscale",
    }
    assert parameter.rsplit(".", 1)[-1] in error["message"]
    assert server.executions[valid["taskUUID"]] == 1


async def test_every_invalid_task_of_one_big_frame_fails_alone(server):
    valid = [wire_task() for _ in range(len(RULES))]
    invalid = [wire_task(**rule.values[0]) for rule in RULES]
    frame = [task for pair in zip(invalid, valid, strict=True) for task in pair]

    async with wire_to(server) as wire:
        await wire.authenticate()
        await wire.send(frame)
        answers = await wire.answers(task["taskUUID"] for task in frame)

    assert all(answers[task["taskUUID"]][0] == "data" for task in valid)
    codes = [answers[task["taskUUID"]][1]["code"] for task in invalid]
    assert codes == [rule.values[1] for rule in RULES]


# -- resume within the hold window -------------------------------------------------------------


async def test_a_raw_session_dropped_mid_run_gets_every_result_exactly_once_on_resume(server):
    first = [wire_task() for _ in range(5)]
    second = [wire_task() for _ in range(15)]
    counts: Counter[str] = Counter()

    async with wire_to(server) as wire:
        session_id = await wire.authenticate()
        await wire.send(first)
        await wire.answers([task["taskUUID"] for task in first], counts)
        # The frame that reaches 20 tasks is accepted and run, then the socket is aborted
        # before any of its answers leave: they are held for the session.
        server.faults.drop_after_tasks = 20
        await wire.send(second)
        with pytest.raises(ConnectionClosed):
            await wire.recv()
    assert server.faults.fired["drop_after_tasks"] == 1

    async with wire_to(server) as wire:
        assert await wire.authenticate(session_id) == session_id  # resumed, not a new session
        await wire.answers([task["taskUUID"] for task in second], counts)
        # Answers leave in order: once this later task is answered, no replay is still coming.
        barrier = wire_task()
        await wire.send([barrier])
        await wire.answers([barrier["taskUUID"]], counts)

    assert set(counts.values()) == {1}
    assert len(counts) == 21
    assert all(server.executions[task["taskUUID"]] == 1 for task in first + second)


async def test_our_client_dropped_mid_run_gets_every_result_exactly_once(server, client):
    session_id = client.session_id
    sources = [noisy_png(8, 6, seed=seed) for seed in range(30)]
    server.faults.drop_after_tasks = 12

    outcomes = [
        outcome
        async for outcome in client.upscale_many(sources, output_type="base64Data", ordered=False)
    ]

    assert server.faults.fired["drop_after_tasks"] == 1
    assert client.reconnects == 1 and client.session_id == session_id
    assert sorted(outcome.index for outcome in outcomes) == list(range(30))
    assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes if not o.ok]
    task_uuids = Counter(outcome.task_uuid for outcome in outcomes)
    assert set(task_uuids.values()) == {1}
    assert all(server.executions[task_uuid] == 1 for task_uuid in task_uuids)
    for outcome in outcomes:
        image, _ = await decoded(outcome.unwrap())
        assert image.size == (16, 12)


async def test_an_async_task_survives_a_drop_and_is_fetched_once_by_polling(server, client):
    server.faults.drop_after_tasks = 1

    result = await client.upscale(noisy_png(), delivery_method="async")

    assert server.faults.fired["drop_after_tasks"] == 1
    assert result.status == "success"
    assert server.executions[result.task_uuid] == 1


@pytest.mark.parametrize("delivery", ["sync", "async"])
async def test_a_task_the_server_fails_raises_an_api_error_naming_it(client, server, delivery):
    missing = str(uuid.uuid4())  # a well-formed image UUID the server never stored
    task_uuid = str(uuid.uuid4())

    with pytest.raises(APIError) as failed:
        await client.upscale(missing, task_uuid=task_uuid, delivery_method=delivery)

    assert failed.value.code == "invalidInputImage"
    assert (failed.value.parameter, failed.value.task_uuid) == ("inputImage", task_uuid)
    assert server.executions[task_uuid] == 1
