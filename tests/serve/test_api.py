"""The service over HTTP, on a real uvicorn server: feeds, events, explain, metrics, admin, errors, reloads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow.compute as pc
import pytest

from homefeed.data.lake import Lake
from homefeed.train.registry import Registry
from tests.serve.conftest import SERVE_DAY, active_users, settings_for
from tests.serve.http import SERVE_TIME, feed, running


@pytest.fixture
def settings(served_world, tmp_path):
    # budgets far above the stages' times: a busy test machine must not turn an answer into a degraded one
    generous = {"budgets_ms": {"user": 5000.0, "features": 5000.0, "score": 5000.0}}
    return settings_for(
        served_world,
        tmp_path / "project",
        private=True,
        log_flush_seconds=0.2,
        reload_seconds=0.2,
        surfaces={"home": generous, "explore": generous},
    )


def wait_for(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_feed_events_and_logs_over_http(settings, served_world):
    users = active_users(settings, 3)
    with running(settings) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["model"] == served_world.version
        answer = feed(client, users[0], slate_size=15)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] == served_world.version and body["degraded"] == [] and body["fallback"] is None
        items = body["items"]
        assert [i["position"] for i in items] == list(range(1, 16))
        assert len({i["item_id"] for i in items}) == 15
        assert all(0 < i["propensity"] <= 1 for i in items)
        assert len(body["request_id"]) == 32 and body["explain"] is None
        # a hide: logged, and never shown to that user again
        hidden = items[0]["item_id"]
        event = {"request_id": body["request_id"], "user_id": int(users[0]), "item_id": hidden, "action": "hide"}
        got = client.post("/v1/events", json={"events": [{**event, "ts": SERVE_TIME.replace("14:00:00", "14:00:05")}]})
        assert got.status_code == 200 and got.json() == {"accepted": 1, "logged": True, "lists_updated": True}
        for _ in range(3):
            again = feed(client, users[0], slate_size=15).json()["items"]
            assert hidden not in {i["item_id"] for i in again}
    # closing the service flushed the logs into the lake, through the ingestion contract
    lake = Lake(settings.resolved_paths.lake)
    logged = lake.read("impressions", SERVE_DAY, SERVE_DAY)
    assert pc.sum(pc.equal(logged["request_id"], body["request_id"])).as_py() == 15
    engagements = lake.read("engagements", SERVE_DAY, SERVE_DAY)
    assert engagements.filter(pc.equal(engagements["action"], "hide"))["item_id"].to_pylist() == [hidden]


def test_explain_tells_each_candidates_story(settings, served_world):
    with running(settings) as client:
        body = feed(client, active_users(settings, 1)[0], slate_size=10, context={"ts": SERVE_TIME})
        plain = body.json()
        explained = client.post(
            "/v1/feed?explain=true", json={"user_id": plain["user_id"], "slate_size": 10, "context": {"ts": SERVE_TIME}}
        ).json()
    stories = explained["explain"]["candidates"]
    assert len(stories) > 100
    placed = sorted((s for s in stories if s["position"] is not None), key=lambda s: s["position"])
    assert [s["item_id"] for s in placed] == [i["item_id"] for i in explained["items"]]
    for s in placed:
        assert set(s["heads"]) == {"engaged", "negative"} and s["model_score"] is not None
        assert s["source"] in {"affinity", "creators", "popular", "fresh", "explore"}
        assert s["freshness_boost"] >= 0
    assert {s["source"] for s in stories} >= {"popular", "fresh"}
    removed = [s for s in stories if s["removed_by"]]
    assert all(s["position"] is None for s in removed)
    stages = [s["stage"] for s in explained["explain"]["stages"]]
    assert stages[:2] == ["enabled", "user"] and {"features", "score", "policy"} <= set(stages)
    assert all(s["ms"] >= 0 for s in explained["explain"]["stages"])


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"slate_size": 10}, 422, "user_id: Field required"),
        ({"user_id": "alice"}, 422, "user_id: Input should be a valid integer"),
        ({"user_id": 1, "slate_size": 101}, 422, "slate_size: 101 is over the limit of 100"),
        ({"user_id": 1, "slate_size": 0}, 422, "slate_size: Input should be greater than or equal to 1"),
        ({"user_id": 1, "surface": "nope"}, 422, "surface: unknown surface 'nope'"),
        ({"user_id": 1, "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
        ({"user_id": 1, "context": {"ts": "yesterday"}}, 422, "context.ts: Input should be a valid datetime"),
    ],
)
def test_bad_feed_requests_get_a_4xx_naming_the_field(settings, body, status, names):
    with running(settings) as client:
        got = client.post("/v1/feed", json=body)
    assert got.status_code == status
    assert got.json()["error"].startswith(names), got.json()


def test_bad_events_oversized_bodies_and_malformed_json_are_refused(settings):
    with running(settings) as client:
        bad = client.post(
            "/v1/events", json={"events": [{"request_id": "r", "user_id": 1, "item_id": 2, "action": "like"}]}
        )
        assert bad.status_code == 422 and bad.json()["error"].startswith("events[0].action: Input should be")
        empty = client.post("/v1/events", json={"events": []})
        assert empty.status_code == 422 and empty.json()["error"].startswith("events: List should have at least 1")
        future = {"request_id": "r", "user_id": 1, "item_id": 2, "action": "save", "ts": "2099-01-01T00:00:00Z"}
        refused = client.post("/v1/events", json={"events": [future]})
        assert refused.status_code == 422 and refused.json()["error"].startswith("events[0]: ")
        huge = client.post("/v1/feed", content=b'{"user_id": 1, "pad": "' + b"x" * 300_000 + b'"}')
        assert huge.status_code == 413 and "over the limit" in huge.json()["error"]
        pieces = [b'{"user_id": 1, "pad": "', *([b"x" * 100_000] * 3), b'"}']  # chunked: no length declared
        streamed = client.post("/v1/feed", content=iter(pieces), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and "more than 262144 bytes" in streamed.json()["error"]
        small = client.post(
            "/v1/feed", content=iter([b'{"user_id": ', b'1, "pad": 2}']), headers={"content-type": "application/json"}
        )
        assert small.status_code == 422 and small.json()["error"].startswith("pad: Extra inputs")
        broken = client.post("/v1/feed", content=b'{"user_id": ', headers={"content-type": "application/json"})
        assert broken.status_code == 422 and "JSON" in broken.json()["error"]
        assert client.get("/openapi.json").json()["paths"].keys() >= {"/v1/feed", "/v1/events", "/v1/admin/reload"}


def test_metrics_count_requests_stages_and_errors(settings):
    with running(settings) as client:
        user = active_users(settings, 1)[0]
        for _ in range(3):
            assert feed(client, user).status_code == 200
        client.post("/v1/feed", json={})
        text = client.get("/metrics").text
    assert 'homefeed_requests_total{outcome="ok",surface="home"} 3.0' in text
    assert 'homefeed_stage_seconds_count{stage="score"} 3.0' in text
    assert 'homefeed_request_errors_total{status="422"} 1.0' in text
    assert "homefeed_online_store_up 1.0" in text
    assert "homefeed_model_info{version=" in text


def test_admin_reload_needs_the_token(settings, monkeypatch):
    monkeypatch.delenv("HOMEFEED_ADMIN_TOKEN", raising=False)
    with running(settings) as client:
        assert client.post("/v1/admin/reload").status_code == 403
        monkeypatch.setenv("HOMEFEED_ADMIN_TOKEN", "s3cret")
        assert client.post("/v1/admin/reload").status_code == 401
        assert client.post("/v1/admin/reload", headers={"authorization": "Bearer wrong"}).status_code == 401
        ok = client.post("/v1/admin/reload", headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["changed"] is False and ok.json()["error"] is None


def test_moving_the_alias_under_load_fails_no_request_and_a_damaged_model_keeps_the_previous(
    settings, served_world, monkeypatch
):
    monkeypatch.setenv("HOMEFEED_ADMIN_TOKEN", "t")
    users = active_users(settings, 40)
    registry = Registry.of(settings)
    second = registry.register(served_world.model, served_world.data).version
    answers: list[tuple[int, str, list, float, float]] = []  # status, version, degraded, sent, answered
    stop = threading.Event()
    with running(settings) as client:

        def load() -> None:
            i = 0
            while not stop.is_set():
                sent = time.monotonic()
                r = feed(client, users[i % len(users)])
                answered = time.monotonic()
                body = r.json() if r.status_code == 200 else {}
                version, degraded = body.get("model_version", ""), body.get("degraded", [r.text])
                answers.append((r.status_code, version, degraded, sent, answered))
                i += 1

        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        assert wait_for(lambda: len(answers) > 20)
        registry.alias("production", second, "test: a new model under load")
        moved = time.monotonic()
        assert wait_for(lambda: any(a[1] == second for a in answers[-5:]))
        # now a damaged version: its file changed after registration
        third = registry.register(served_world.model, served_world.data).version
        booster = settings.resolved_paths.models / third / "engaged.txt"
        booster.write_text(booster.read_text() + "\n# tampered\n")
        registry.alias("production", third, "test: a damaged model")
        reloaded = client.post("/v1/admin/reload", headers={"authorization": "Bearer t"}).json()
        n = len(answers)
        assert wait_for(lambda: len(answers) > n + 20)
        stop.set()
        for t in threads:
            t.join()
        ready = client.get("/readyz").json()
        metrics = client.get("/metrics").text
    assert reloaded["model_version"] == second and "checksum" in reloaded["error"]
    assert ready["model"] == second and "checksum" in ready["model_error"]
    assert "homefeed_model_reload_failures 1.0" in metrics or "homefeed_model_reload_failures 2.0" in metrics
    statuses = [a[0] for a in answers]
    assert statuses.count(200) == len(statuses), {s for s in statuses}
    assert all(a[2] == [] for a in answers)
    # the swap is atomic: answered before the alias moved, the old model; once the new one has answered a request,
    # every request sent after that gets the new one (the two load threads may append out of order)
    first_new = min(a[4] for a in answers if a[1] == second)
    assert {a[1] for a in answers if a[4] < moved} == {served_world.version}
    assert {a[1] for a in answers if a[3] > first_new} == {second}
    assert {a[1] for a in answers} == {served_world.version, second}
    assert np.mean([a[1] == second for a in answers]) > 0.2
