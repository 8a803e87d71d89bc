"""What a watcher needs from the sandbox's watch: bookmarks that keep a quiet kind's
resourceVersion fresh while other kinds change, 410 Gone (an ERROR event) for a resourceVersion
the server no longer holds, and streams that end on an API server restart and are refused (503)
while it is down."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator

import httpx
import orjson
import pytest

from k8s.sandbox import Sandbox


@pytest.fixture
def demo(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.reset("demo")
    yield sandbox
    sandbox.api.watch_outage.clear()


def _client(sandbox: Sandbox) -> httpx.Client:
    return httpx.Client(verify=False, headers={"Authorization": f"Bearer {sandbox.token}"},  # noqa: S501  (own CA)
                        base_url=sandbox.url, timeout=20)


def _list_rv(sandbox: Sandbox, path: str) -> int:
    with _client(sandbox) as client:
        return int(client.get(path).json()["metadata"]["resourceVersion"])


def _read_events(sandbox: Sandbox, path: str, params: dict[str, str], until, timeout: float = 15) -> list[dict]:  # type: ignore[no-untyped-def]
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    with _client(sandbox) as client, client.stream("GET", path, params={"watch": "true", **params}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                events.append(orjson.loads(line))
                if until(events) or time.monotonic() > deadline:
                    break
    return events


def test_a_quiet_kind_gets_bookmarks_with_the_resource_version_others_moved_on(demo: Sandbox) -> None:
    rv = _list_rv(demo, "/apis/batch/v1/jobs")

    def churn() -> None:  # pods change, jobs do not
        time.sleep(0.3)
        pod = demo.sim.store.all("pods", "shop")[0]["metadata"]["name"]
        with _client(demo) as client:
            client.delete(f"/api/v1/namespaces/shop/pods/{pod}")

    thread = threading.Thread(target=churn)
    thread.start()
    events = _read_events(demo, "/apis/batch/v1/jobs", {"resourceVersion": str(rv), "allowWatchBookmarks": "true"},
                          until=lambda e: any(int(x["object"]["metadata"]["resourceVersion"]) > rv + 1 for x in e))
    thread.join()
    assert events and all(e["type"] == "BOOKMARK" for e in events), [e["type"] for e in events]
    assert int(events[-1]["object"]["metadata"]["resourceVersion"]) > rv + 1
    assert events[-1]["object"]["kind"] == "Job"

    # Without allowWatchBookmarks nothing but real events is sent.
    with _client(demo) as client, client.stream("GET", "/apis/batch/v1/jobs", params={
            "watch": "true", "resourceVersion": str(rv), "timeoutSeconds": "2"}) as response:
        assert [line for line in response.iter_lines() if line] == []


def test_a_resource_version_older_than_the_log_is_410_gone(demo: Sandbox) -> None:
    store = demo.sim.store
    rv = _list_rv(demo, "/api/v1/pods")
    saved = store.log
    store.log = deque(saved, maxlen=20)
    try:
        demo.tick(3)  # more than 20 writes: rv fell off the log
        with _client(demo) as client:
            for _ in range(30):
                pod = store.all("pods", "shop")[0]["metadata"]["name"]
                client.delete(f"/api/v1/namespaces/shop/pods/{pod}")
        events = _read_events(demo, "/api/v1/pods", {"resourceVersion": str(rv), "allowWatchBookmarks": "true"},
                              until=lambda e: True)
    finally:
        store.log = deque(store.log, maxlen=saved.maxlen)
    assert events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert status["message"].startswith(f"too old resource version: {rv} (")
    # A fresh list's version watches again: the next write arrives as an event.
    fresh = _list_rv(demo, "/api/v1/pods")
    threading.Timer(0.5, demo.tick).start()
    events = _read_events(demo, "/api/v1/pods", {"resourceVersion": str(fresh), "allowWatchBookmarks": "true",
                                                 "timeoutSeconds": "5"}, until=lambda e: True)
    assert events and events[0]["type"] in ("MODIFIED", "ADDED", "DELETED", "BOOKMARK"), events[:1]


def test_an_api_server_restart_ends_watches_and_refuses_new_ones_until_it_is_back(demo: Sandbox) -> None:
    rv = _list_rv(demo, "/api/v1/pods")
    ended = threading.Event()

    def hold() -> None:
        with _client(demo) as client, client.stream("GET", "/api/v1/pods", params={
                "watch": "true", "resourceVersion": str(rv), "allowWatchBookmarks": "true"}) as response:
            for _ in response.iter_lines():
                pass
        ended.set()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    time.sleep(0.5)
    with demo.watch_outage():
        assert ended.wait(5), "the open watch did not end"
        with _client(demo) as client:
            refused = client.get("/api/v1/pods", params={"watch": "true", "resourceVersion": str(rv)})
            assert refused.status_code == 503 and refused.json()["reason"] == "ServiceUnavailable"
            assert client.get("/api/v1/pods", params={"limit": "1"}).status_code == 200  # lists still answer
    threading.Timer(0.5, demo.tick).start()
    events = _read_events(demo, "/api/v1/pods", {"resourceVersion": str(rv), "allowWatchBookmarks": "true",
                                                 "timeoutSeconds": "5"}, until=lambda e: True)
    assert events and events[0]["type"] in ("BOOKMARK", "ADDED", "MODIFIED", "DELETED"), events[:1]
