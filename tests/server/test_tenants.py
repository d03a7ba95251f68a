"""Several API keys on one server: nothing one key made is visible to another (issue 10).

Each test runs ``serve --api-key A --api-key B`` in-process and plays B against what A made:
sessions, held results, task lookups (getResponse, getTaskDetails, conflicts), stored images
(by UUID and by URL) and deletes. B must learn nothing, not even that A's ids exist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from upscale_stream.server import ReferenceServer

from .conftest import KEY, ClientFactory, WireClient, new_uuid, png_data_uri, upscale

KEY_B = "second-key-of-the-server-9876543210"
Servers = Callable[..., Awaitable[ReferenceServer]]


@pytest.fixture
async def two_keys(servers: Servers) -> ReferenceServer:
    return await servers(api_keys=frozenset({KEY, KEY_B}))


async def answer_of(client: WireClient, task_uuid: str) -> tuple[str, dict[str, Any]]:
    """The first item about ``task_uuid``, with the envelope key it came under."""
    while True:
        frame = await client.recv()
        for key in ("data", "errors"):
            for item in frame.get(key, []):
                if item.get("taskUUID") == task_uuid and "pong" not in item:
                    return key, dict(item)


async def a_finished_task(client: WireClient, **fields: Any) -> dict[str, Any]:
    task = upscale(**fields)
    await client.send([task])
    kind, result = await answer_of(client, task["taskUUID"])
    assert kind == "data" and "imageURL" in result, result
    return result


@pytest.mark.parametrize("lookup", ["getResponse", "getTaskDetails"])
async def test_another_key_cannot_look_up_a_task(
    two_keys: ReferenceServer, client_for: ClientFactory, lookup: str
) -> None:
    async with client_for(two_keys) as a, client_for(two_keys) as b:
        await a.authenticate(KEY)
        await b.authenticate(KEY_B)
        result = await a_finished_task(a)
        await b.send([{"taskType": lookup, "taskUUID": result["taskUUID"]}])
        kind, answer = await answer_of(b, result["taskUUID"])
        assert (kind, answer["code"]) == ("errors", "taskFailedOrNotFound")
        await a.send([{"taskType": lookup, "taskUUID": result["taskUUID"]}])
        assert (await answer_of(a, result["taskUUID"]))[0] == "data"  # its owner still can


async def test_another_key_reusing_a_task_uuid_gets_its_own_task_not_a_conflict(
    two_keys: ReferenceServer, client_for: ClientFactory
) -> None:
    async with client_for(two_keys) as a, client_for(two_keys) as b:
        await a.authenticate(KEY)
        await b.authenticate(KEY_B)
        result = await a_finished_task(a)
        task = upscale(taskUUID=result["taskUUID"])
        await b.send([task])
        kind, answer = await answer_of(b, task["taskUUID"])
        assert kind == "data" and answer["imageUUID"] != result["imageUUID"]
        await a.send([upscale(taskUUID=result["taskUUID"])])  # A's own reuse: still a conflict
        kind, answer = await answer_of(a, result["taskUUID"])
        assert (kind, answer["code"]) == ("errors", "conflictTaskUUID")


async def test_another_key_cannot_resume_a_session_or_take_its_socket(
    servers: Servers, client_for: ClientFactory
) -> None:
    server = await servers(api_keys=frozenset({KEY, KEY_B}), task_delay=0.3)
    async with client_for(server) as a, client_for(server) as b:
        session_a = (await a.authenticate(KEY))["connectionSessionUUID"]
        pending = upscale()
        await a.send([pending])  # answered after B's attempt
        answer = await b.authenticate(KEY_B, session_id=session_a)
        assert answer["connectionSessionUUID"] != session_a  # a new session, as for any unknown id
        kind, result = await answer_of(a, pending["taskUUID"])  # A's socket still carries it
        assert kind == "data" and "imageURL" in result
        await a_finished_task(a)  # and A's next tasks too
    assert (
        server.registry.sessions[session_a].tenant
        != server.registry.sessions[answer["connectionSessionUUID"]].tenant
    )


async def test_held_results_are_replayed_only_to_their_own_key(
    servers: Servers, client_for: ClientFactory
) -> None:
    server = await servers(api_keys=frozenset({KEY, KEY_B}), task_delay=0.2)
    task = upscale()
    async with client_for(server) as a:
        session_a = (await a.authenticate(KEY))["connectionSessionUUID"]
        await a.send([task])
        await server.wait_executions(1)
    await server.wait_until(lambda: server.counts.executions_total == 1)
    await server.wait_until(
        lambda: bool(server.registry.sessions[session_a].outbox), what="the held result"
    )
    async with client_for(server) as b:
        await b.authenticate(KEY_B, session_id=session_a)
        await b.send([{"taskType": "ping", "ping": True}])
        frame = await b.recv()
        assert frame == {"data": [{"taskType": "ping", "pong": True}]}  # nothing replayed to B
    async with client_for(server) as a:
        assert (await a.authenticate(KEY, session_id=session_a))[
            "connectionSessionUUID"
        ] == session_a
        kind, result = await answer_of(a, task["taskUUID"])
        assert kind == "data" and "imageURL" in result


@pytest.mark.parametrize("form", ["uuid", "url"])
async def test_another_key_cannot_use_an_image_as_input(
    two_keys: ReferenceServer, client_for: ClientFactory, form: str
) -> None:
    async with client_for(two_keys) as a, client_for(two_keys) as b:
        await a.authenticate(KEY)
        await b.authenticate(KEY_B)
        result = await a_finished_task(a)
        reference = result["imageUUID"] if form == "uuid" else result["imageURL"]
        task = upscale(inputImage=reference)
        await b.send([task])
        kind, answer = await answer_of(b, task["taskUUID"])
        assert (kind, answer["code"]) == ("errors", "invalidInputImage")
        assert "for this API key" in answer["message"]
        own = upscale(inputImage=reference)
        await a.send([own])
        assert (await answer_of(a, own["taskUUID"]))[0] == "data"


async def test_another_key_cannot_delete_media(
    two_keys: ReferenceServer, client_for: ClientFactory
) -> None:
    async with client_for(two_keys) as a, client_for(two_keys) as b:
        await a.authenticate(KEY)
        await b.authenticate(KEY_B)
        upload = {
            "taskType": "mediaStorage",
            "taskUUID": new_uuid(),
            "operation": "upload",
            "media": png_data_uri(),
        }
        await a.send([upload])
        media_uuid = (await answer_of(a, upload["taskUUID"]))[1]["mediaUUID"]
        delete = {
            "taskType": "mediaStorage",
            "taskUUID": new_uuid(),
            "operation": "delete",
            "mediaUUID": media_uuid,
        }
        await b.send([delete])
        kind, answer = await answer_of(b, delete["taskUUID"])
        assert (kind, answer["code"]) == ("errors", "mediaNotFound")
        task = upscale(inputImage=media_uuid)
        await a.send([task])
        assert (await answer_of(a, task["taskUUID"]))[0] == "data"  # still there for A


@pytest.mark.parametrize(
    ("key", "code"), [("a-wrong-key-0123456789", "invalidApiKey"), (KEY_B, "alreadyAuthenticated")]
)
async def test_a_second_authentication_with_another_key_is_refused(
    two_keys: ReferenceServer, client_for: ClientFactory, key: str, code: str
) -> None:
    async with client_for(two_keys) as a:
        session = (await a.authenticate(KEY))["connectionSessionUUID"]
        await a.send([{"taskType": "authentication", "apiKey": key}])
        frame = await a.recv()
        assert [(e["code"], e["taskType"]) for e in frame["errors"]] == [(code, "authentication")]
        await a.send([{"taskType": "authentication", "apiKey": KEY}])
        assert (await a.recv())["data"][0]["connectionSessionUUID"] == session
        await a_finished_task(a)  # the socket still works, with its own key
