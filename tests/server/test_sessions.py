"""The server's pure core: sessions, held answers, the task registry, and the image store."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from upscale_stream.server.image_store import ImageStore, Lookup, StoredImage
from upscale_stream.server.sessions import SessionRegistry, TaskCounts, TaskStatus

HOLD, RETENTION = 120.0, 600.0


def make_store() -> SessionRegistry:
    return SessionRegistry(hold_time=HOLD, retention=RETENTION)


def bodies(session) -> list[dict]:
    return [orjson.loads(item.body) for item in session.outbox]


# -- sessions ----------------------------------------------------------------------------------


def test_authenticate_without_an_id_opens_a_new_attached_session():
    store = make_store()
    session, resumed = store.authenticate(None, 0.0, "s1")
    assert (session.session_id, resumed, session.attached) == ("s1", False, True)


def test_authenticate_with_a_known_id_resumes_the_same_session():
    store = make_store()
    first, _ = store.authenticate(None, 0.0, "s1")
    store.detach("s1", 1.0)
    again, resumed = store.authenticate("s1", 2.0, "s2")
    assert again is first and resumed and again.attached and again.detached_at is None


def test_authenticate_with_an_unknown_id_opens_a_session_with_the_new_id():
    store = make_store()
    session, resumed = store.authenticate("never-issued", 0.0, "s9")
    assert (session.session_id, resumed) == ("s9", False)
    assert "never-issued" not in store.sessions


def test_held_answers_expire_hold_time_after_the_socket_went_away():
    store = make_store()
    session, _ = store.authenticate(None, 0.0, "s1")
    session.push("data", {"n": 1}, 0.0)
    store.detach("s1", 10.0)
    session.push("data", {"n": 2}, 50.0)
    store.expire(10.0 + HOLD - 1)
    assert [b["n"] for b in bodies(session)] == [1, 2]
    store.expire(10.0 + HOLD)
    assert [b["n"] for b in bodies(session)] == [2]
    store.expire(50.0 + HOLD)
    assert "s1" not in store.sessions  # empty, nothing running, detached long enough


def test_attached_sessions_keep_their_answers_and_are_never_forgotten():
    store = make_store()
    session, _ = store.authenticate(None, 0.0, "s1")
    session.push("data", {"n": 1}, 0.0)
    store.expire(10 * HOLD)
    assert "s1" in store.sessions and len(session.outbox) == 1


def test_a_session_with_a_running_sync_task_is_kept_past_hold_time():
    store = make_store()
    store.authenticate(None, 0.0, "s1")
    record = store.register("t1", "upscale", "s1", "sync", 0.0)
    assert record is not None
    store.detach("s1", 1.0)
    store.expire(1.0 + 2 * HOLD)
    assert "s1" in store.sessions
    session = store.finish(record, {"taskUUID": "t1"}, failed=False, now=500.0)
    assert session is store.sessions["s1"] and len(session.outbox) == 1
    store.expire(500.0 + HOLD)
    assert "s1" not in store.sessions


def test_resume_after_the_hold_expired_gets_a_new_session():
    store = make_store()
    store.authenticate(None, 0.0, "s1")
    store.detach("s1", 0.0)
    session, resumed = store.authenticate("s1", HOLD, "s2")
    assert (session.session_id, resumed) == ("s2", False)


def test_give_back_puts_answers_back_in_front_in_order():
    store = make_store()
    session, _ = store.authenticate(None, 0.0, "s1")
    for n in range(4):
        session.push("data", {"n": n}, 0.0)
    taken = session.take()
    session.push("data", {"n": 4}, 0.0)
    session.give_back(taken[1:])
    assert [b["n"] for b in bodies(session)] == [1, 2, 3, 4]


# -- task registry -----------------------------------------------------------------------------


def test_register_refuses_a_known_task_uuid_until_retention_passes():
    store = make_store()
    store.authenticate(None, 0.0, "s1")
    record = store.register("t1", "upscale", "s1", "sync", 0.0)
    assert record is not None
    assert store.register("t1", "upscale", "s1", "sync", 1.0) is None  # running
    store.finish(record, {"taskUUID": "t1"}, failed=False, now=10.0)
    assert store.register("t1", "upscale", "s1", "sync", 10.0 + RETENTION - 1) is None
    assert store.register("t1", "upscale", "s1", "sync", 10.0 + RETENTION) is not None


def test_expire_forgets_finished_tasks_but_never_running_ones():
    store = make_store()
    store.authenticate(None, 0.0, "s1")
    done = store.register("done", "upscale", "s1", "async", 0.0)
    store.register("running", "upscale", "s1", "async", 0.0)
    assert done is not None
    store.finish(done, {"taskUUID": "done"}, failed=False, now=0.0)
    store.expire(RETENTION * 3)
    assert set(store.tasks) == {"running"}


def test_finish_pushes_sync_answers_to_the_session_and_keeps_async_ones_for_polling():
    store = make_store()
    session, _ = store.authenticate(None, 0.0, "s1")
    sync = store.register("a", "upscale", "s1", "sync", 0.0)
    polled = store.register("b", "upscale", "s1", "async", 0.0)
    assert sync is not None and polled is not None
    assert store.finish(sync, {"taskUUID": "a"}, failed=False, now=1.0) is session
    assert store.finish(polled, {"taskUUID": "b"}, failed=False, now=1.0) is None
    assert [o.kind for o in session.outbox] == ["data"]
    failed = store.register("c", "upscale", "s1", "sync", 0.0)
    assert failed is not None
    store.finish(failed, {"code": "x", "taskUUID": "c"}, failed=True, now=1.0)
    assert [o.kind for o in session.outbox] == ["data", "errors"]


def test_finish_after_a_clear_is_ignored():
    store = make_store()
    store.authenticate(None, 0.0, "s1")
    record = store.register("t", "upscale", "s1", "sync", 0.0)
    assert record is not None
    store.clear()
    assert store.finish(record, {"taskUUID": "t"}, failed=False, now=1.0) is None
    assert store.tasks == {} and store.sessions == {}


def test_poll_reply_has_the_three_documented_shapes():
    store = make_store()
    store.authenticate(None, 0.0, "s1")
    record = store.register("t", "imageUpscale", "s1", "async", 0.0)
    assert record is not None
    assert record.poll_reply() == {
        "taskType": "imageUpscale",
        "taskUUID": "t",
        "status": "processing",
    }
    result = {"taskType": "imageUpscale", "taskUUID": "t", "imageUUID": "i", "imageURL": "u"}
    store.finish(record, result, failed=False, now=1.0)
    assert record.status is TaskStatus.SUCCEEDED
    assert record.poll_reply() == {**result, "status": "success"}
    record.status = TaskStatus.FAILED
    record.answer = {"code": "c", "message": "m", "parameter": "p", "taskUUID": "t"}
    assert record.poll_reply() == {
        "taskType": "imageUpscale",
        "taskUUID": "t",
        "status": "error",
        "error": {"code": "c", "message": "m", "parameter": "p"},
    }


def test_task_counts_count_receptions_and_executions_by_uuid():
    counts = TaskCounts()
    counts.count_received("a")
    counts.count_received("a")
    counts.count_received(None)
    counts.count_execution("a")
    assert (counts.received["a"], counts.received_total) == (2, 3)
    assert (counts.executions["a"], counts.executions_total) == (1, 1)


@given(st.lists(st.sampled_from(["push", "take_ok", "take_fail"]), max_size=40))
def test_every_pushed_answer_is_delivered_exactly_once_whatever_sends_fail(steps):
    store = make_store()
    session, _ = store.authenticate(None, 0.0, "s1")
    pushed, delivered = 0, []
    for step in steps:
        if step == "push":
            session.push("data", {"n": pushed}, 0.0)
            pushed += 1
        elif step == "take_ok":
            delivered += [orjson.loads(o.body)["n"] for o in session.take()]
        else:
            session.give_back(session.take())
    delivered += [orjson.loads(o.body)["n"] for o in session.take()]
    assert delivered == list(range(pushed))


# -- image store -------------------------------------------------------------------------------


def image(size: int, expires_at: float = 100.0) -> StoredImage:
    return StoredImage(b"x" * size, "image/png", "png", expires_at)


def test_image_store_evicts_the_least_recently_used_over_its_byte_cap():
    images = ImageStore(max_bytes=250)
    images.put("a", image(100))
    images.put("b", image(100))
    assert images.get("a", 0.0) is not None  # a is now the most recently used
    images.put("c", image(100))
    assert images.get("b", 0.0) is None
    assert images.get("a", 0.0) is not None and images.get("c", 0.0) is not None
    assert images.bytes_used == 200


def test_image_store_reports_expired_images_then_forgets_them():
    images = ImageStore(max_bytes=1000)
    images.put("a", image(10, expires_at=50.0))
    assert images.lookup("a", 49.0)[0] is Lookup.FOUND
    assert images.lookup("a", 50.0) == (Lookup.EXPIRED, None)
    assert images.lookup("a", 51.0) == (Lookup.EXPIRED, None)
    assert images.lookup("zzz", 0.0) == (Lookup.MISSING, None)
    images.put("b", image(10, expires_at=10.0))
    assert images.expire(20.0) == 1 and len(images) == 0 and images.bytes_used == 0


def test_image_store_skips_an_image_larger_than_the_cap():
    images = ImageStore(max_bytes=10)
    images.put("a", image(11))
    assert len(images) == 0 and images.bytes_used == 0
