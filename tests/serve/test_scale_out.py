"""Stateless serving: Redis as the shared store (and what happens when it stops), two workers behind one port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack

import httpx
import pyarrow.compute as pc
import pytest

from homefeed.config import Settings
from homefeed.data.lake import Lake
from homefeed.features.definitions import feature_set
from homefeed.features.materialize import materialize
from homefeed.features.redis_store import RedisStore, free_port, local_redis
from homefeed.features.store import StoreError
from tests.serve.conftest import SERVE_DAY, active_users, settings_for
from tests.serve.http import SERVE_TIME, feed, running

GENEROUS = {"budgets_ms": {"user": 5000.0, "features": 5000.0, "score": 5000.0}}


def start_redis(stack: ExitStack, port: int, tmp_path) -> str:
    try:
        return stack.enter_context(local_redis(tmp_path / f"redis-{time.monotonic_ns()}", port=port))
    except StoreError as exc:
        pytest.fail(f"these tests need a real redis-server: {exc}")


def materialize_into(settings: Settings, url: str) -> None:
    fs = feature_set("default", settings.etl, settings.features)
    with RedisStore(url) as store:
        materialize(fs, Lake(settings.resolved_paths.etl), store)


def test_with_redis_stopping_the_server_degrades_answers_and_its_restart_recovers_them(served_world, tmp_path):
    port = free_port()
    outage = ExitStack()
    url = start_redis(outage, port, tmp_path)
    base = settings_for(served_world, tmp_path / "project", private=True, log_flush_seconds=0.2, reload_seconds=0.2)
    data = base.model_dump()
    data["backends"].update(online_store="redis", redis_url=url)
    data["serve"].update(
        store_retry_seconds=0.2, store_timeout_ms=500.0, surfaces={"home": GENEROUS, "explore": GENEROUS}
    )
    settings = Settings(**data)
    materialize_into(settings, url)
    users = active_users(settings, 30)
    answers: list[tuple[int, str | None, float]] = []
    why: set[tuple[str, ...]] = set()  # what degraded answers said, for a failure's message
    stop = threading.Event()
    with running(settings) as client:

        def load() -> None:
            i = 0
            while not stop.is_set():
                r = feed(client, users[i % len(users)], slate_size=10)
                answers.append(
                    (r.status_code, r.json().get("fallback") if r.status_code == 200 else r.text, time.monotonic())
                )
                if r.status_code == 200 and r.json().get("degraded"):
                    why.add(tuple(r.json()["degraded"]))
                i += 1

        thread = threading.Thread(target=load)
        thread.start()
        try:
            time.sleep(2)
            stopped_at = time.monotonic()
            outage.close()  # redis-server stops mid-run
            time.sleep(3)
            down_metrics = client.get("/metrics").text
            down_ready = client.get("/readyz").json()
            with ExitStack() as back:
                url_again = start_redis(back, port, tmp_path)
                restarted_at = time.monotonic()
                materialize_into(settings, url_again)  # no persistence: the daily job writes the features again
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not any(f is None and t > restarted_at for _, f, t in answers):
                    time.sleep(0.1)
                time.sleep(0.5)
                stop.set()
                thread.join()
                up_ready = client.get("/readyz").json()
        finally:
            stop.set()
            thread.join()
    assert answers and all(status == 200 for status, _, _ in answers), {a[1] for a in answers if a[0] != 200}
    before = [f for _, f, t in answers if t < stopped_at]
    during = [f for _, f, t in answers if stopped_at + 0.5 < t < restarted_at]
    after = [f for _, f, t in answers if t > restarted_at]
    assert before and all(f is None for f in before), why
    assert during and all(f == "popularity" for f in during)
    assert after and after[-1] is None  # recovered
    assert "homefeed_online_store_up 0.0" in down_metrics
    assert 'homefeed_fallbacks_total{surface="home"}' in down_metrics
    assert down_ready["online_store"].startswith("down") and down_ready["ready"] is True
    assert up_ready["online_store"] == "up"


def test_two_worker_processes_behind_one_port_share_the_store_and_the_lake(served_world, tmp_path):
    root = tmp_path / "project"
    settings_for(served_world, root, private=True)  # copies the world's files under root
    config = root / "homefeed.toml"
    config.write_text(
        f"""
[paths]
root = "{root}"
[etl]
windows = [1, 7]
[serve]
log_flush_seconds = 0.2
reload_seconds = 0.5
[serve.surfaces.home.budgets_ms]
user = 5000.0
features = 5000.0
score = 5000.0
""",
        encoding="utf-8",
    )
    settings = settings_for(served_world)
    port = free_port()
    env = {**os.environ, "HOMEFEED_CONFIG": "", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "homefeed.cli", "serve", "--port", str(port), "--workers", "2", "-c", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    users = active_users(settings, 20)
    workers: set[str] = set()
    request_ids = []
    served_rows = 0
    try:
        deadline = time.monotonic() + 120
        ready = 0
        while ready < 6:  # both workers up: several fresh connections in a row answer ready
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the service did not start: {proc.stdout.read().decode()[-2000:]}")
            try:
                ready = ready + 1 if httpx.get(f"{base}/readyz", timeout=5).status_code == 200 else 0
            except httpx.HTTPError:
                ready = 0
            time.sleep(0.1)
        hidden = None
        for i in range(80):  # a new connection per request: the kernel hands each to either worker
            with httpx.Client(base_url=base, timeout=30) as fresh_connection:
                r = feed(fresh_connection, users[0 if i % 2 else i % len(users)], slate_size=10)
            assert r.status_code == 200, r.text
            workers.add(r.headers["x-homefeed-worker"])
            body = r.json()
            request_ids.append(body["request_id"])
            served_rows += len(body["items"])
            if i == 1:
                hidden = body["items"][0]["item_id"]
                event = {
                    "request_id": body["request_id"],
                    "user_id": int(users[0]),
                    "item_id": hidden,
                    "action": "hide",
                }
                done = httpx.post(f"{base}/v1/events", json={"events": [{**event, "ts": SERVE_TIME[:-3] + "05Z"}]})
                assert done.json()["lists_updated"] is True
            elif i > 1 and i % 2:
                assert hidden not in {item["item_id"] for item in body["items"]}  # whichever worker answered
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert len(workers) == 2, workers
    logged = Lake(root / "lake").read("impressions", SERVE_DAY, SERVE_DAY)
    assert set(request_ids) <= set(pc.unique(logged["request_id"]).to_pylist())
    assert logged.num_rows == served_rows  # every served slot, once, whichever worker served it
