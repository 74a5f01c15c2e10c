"""Operators: /status for the whole cluster, /metrics, and logs that keep secrets out."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from server import logs
from tests.client import PASSWORD, Client
from tests.conftest import STATUS_TOKEN, close_node, open_node

OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


async def operator(url: str) -> Client:
    client = Client(url)
    status, _, _ = await client.request("POST", "/api/register",
                                        {"username": "operator", "password": PASSWORD})
    if status == 409:
        assert (await client.login("operator"))[0] == 200
    else:
        assert status == 201
    return client


async def test_status_and_metrics_need_operator_credentials(make_client):
    anonymous = make_client()
    for path in ("/status", "/metrics"):
        status, body, _ = await anonymous.request("GET", path)
        assert status == 401 and body["error"]["code"] == "unauthorized"
    user = make_client()
    await user.register()
    for path in ("/status", "/metrics"):
        status, body, _ = await user.request("GET", path)
        assert status == 403 and body["error"]["code"] == "forbidden"
    wrong = make_client()
    wrong.token = "not-the-status-token"
    assert (await wrong.request("GET", "/status"))[0] == 401


async def test_status_lists_every_live_process_with_its_figures(base_url, second_node,
                                                                runtime):
    admin = await operator(base_url)
    user = Client(second_node.base_url)
    await user.register()
    ws = await user.ws()
    await ws.join("general")
    await ws.call({"type": "send", "room": "general", "body": "count me"})
    # Each process reports on its own timer; make both report now instead of waiting.
    await runtime.reporter.publish()
    await second_node.runtime.reporter.publish()
    status, body, _ = await admin.request("GET", "/status")
    assert status == 200
    ids = {p["id"] for p in body["processes"]}
    assert ids == {runtime.config.node_id, second_node.runtime.config.node_id}
    node2 = next(p for p in body["processes"] if p["id"] == second_node.runtime.config.node_id)
    for key in ("host", "pid", "version", "uptime_s", "connections", "rooms", "rate_1m",
                "rate_5m", "fanout_ms", "ioloop_lag_ms", "rss_bytes", "messages_total",
                "deliveries_total", "redis_resubscribes"):
        assert key in node2, key
    assert node2["connections"]["browser"] == 1 and node2["messages_total"] == 1
    assert node2["rss_bytes"] > 10_000_000
    assert set(node2["fanout_ms"]) == {"p50", "p95", "p99"}
    assert body["services"]["mongodb"]["ok"] and body["services"]["redis"]["ok"]
    assert body["services"]["redis"]["rtt_ms"] >= 0
    assert body["totals"]["processes"] == 2 and body["totals"]["connections"] >= 1


async def test_stopped_process_drops_out_of_status(base_url, runtime, second_node):
    admin = await operator(base_url)
    await second_node.runtime.reporter.publish()
    await runtime.reporter.publish()
    body = (await admin.request("GET", "/status"))[1]
    assert len(body["processes"]) == 2
    await second_node.runtime.reporter.close()  # what a clean shutdown does
    body = (await admin.request("GET", "/status"))[1]
    assert [p["id"] for p in body["processes"]] == [runtime.config.node_id]


async def test_status_token_opens_status_without_a_session(make_client):
    client = make_client()
    client.token = STATUS_TOKEN
    status, body, _ = await client.request("GET", "/status")
    assert status == 200 and body["totals"]["processes"] >= 1


async def test_metrics_are_prometheus_text_and_count_messages(base_url):
    admin = await operator(base_url)
    ws = await admin.ws()
    await ws.join("general")
    for i in range(3):
        await ws.call({"type": "send", "room": "general", "body": f"m{i}"})
    status, _, response = await admin.request("GET", "/metrics")
    assert status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.body.decode())}
    def value(name: str, **labels: str) -> float:
        for sample in families[name].samples:
            if sample.name.endswith("_total") or sample.name == name:
                if all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        raise KeyError(name)
    assert value("chat_messages") == 3
    assert value("chat_deliveries") >= 3
    assert value("chat_ws_connections", kind="browser") == 1
    assert families["chat_fanout_seconds"].type == "histogram"
    assert "process_resident_memory_bytes" in families
    assert families["chat_bus_duplicates"].documentation == (
        "Messages from Redis not delivered again: this process had delivered them already")


async def test_logs_carry_no_passwords_cookies_or_tokens(make_client, caplog):
    logs.quiet_noisy_loggers()  # as run.py's logging set-up does, even at --log-level debug
    caplog.set_level(logging.DEBUG)
    client = make_client()
    await client.register(password="hunter2-secret-pass")
    await client.login(client.user["name"], "hunter2-secret-pass")
    await client.login(client.user["name"], "wrong-secret-pass")
    status, _bot, _ = await client.request("POST", "/api/bots", {"name": "logbot"})
    assert status == 201
    status, issued, _ = await client.request("POST", "/api/bots/logbot/tokens", {})
    assert status == 201
    bot_client = make_client()
    bot_client.token = issued["token"]
    ws = await bot_client.ws(origin=None)
    await ws.join("general")
    await ws.call({"type": "send", "room": "general", "body": "secret body text"})
    await asyncio.sleep(0)
    text = "\n".join(r.getMessage() + " " + str(vars(r)) for r in caplog.records)
    for secret in ("hunter2-secret-pass", "wrong-secret-pass", issued["token"],
                   client.cookies["session"], "secret body text"):
        assert secret not in text
    assert any("POST /api/login" in r.getMessage() for r in caplog.records)


def unregistered_admins(caplog) -> list[list[str]]:
    """The names of each start-up warning about admin names nobody has registered."""
    return [r.getMessage().split(": ", 1)[1].split(" (")[0].split(", ")
            for r in caplog.records
            if r.name == "server.admins" and r.levelno == logging.WARNING]


async def test_admin_names_nobody_has_registered_are_named_in_a_startup_warning(
        config, services, caplog):
    cfg = dataclasses.replace(config, admin_users=("ghost-admin", "operator"))
    with caplog.at_level(logging.WARNING, logger="server.admins"):
        node = await open_node(cfg, services)
        try:
            assert unregistered_admins(caplog) == [["ghost-admin", "operator"]]
            await operator(node.base_url)
        finally:
            await close_node(node)
        caplog.clear()
        node = await open_node(cfg, services)
        try:
            assert unregistered_admins(caplog) == [["ghost-admin"]]
        finally:
            await close_node(node)


async def test_an_admin_is_pinned_by_id_so_a_later_account_of_that_name_is_not_one(
        base_url, runtime, make_client):
    first = await operator(base_url)
    assert (await first.request("GET", "/status"))[0] == 200  # pinned now
    # The account goes (an operator removed it); someone registers the name again.
    await runtime.store.db.users.delete_one({"name_lower": "operator"})
    impostor = make_client()
    await impostor.register("Operator")
    for path in ("/status", "/metrics"):
        status, body, _ = await impostor.request("GET", path)
        assert status == 403 and body["error"]["code"] == "forbidden", body
    assert (await first.request("GET", "/status"))[0] == 200


async def test_an_admin_registered_before_start_up_is_pinned_at_start_up(
        config, services, make_client):
    node = await open_node(config, services)
    try:
        first = await operator(node.base_url)  # registered, never asks for /status
    finally:
        await close_node(node)
    node = await open_node(config, services)
    try:
        await node.runtime.store.db.users.delete_one({"name_lower": "operator"})
        impostor = make_client(node.base_url)
        await impostor.register("operator")
        assert (await impostor.request("GET", "/status"))[0] == 403
        first.base = node.base_url
        assert (await first.request("GET", "/status"))[0] == 200
    finally:
        await close_node(node)


async def test_presence_changes_are_counted_for_status_and_metrics(make_client, runtime):
    # The cost of presence is visible: each change sent into a room counts.
    def sent() -> float:
        return runtime.metrics.registry.get_sample_value("chat_presence_frames_total") or 0.0

    watcher, other = make_client(), make_client()
    await watcher.register()
    await other.register()
    watcher_ws = await watcher.ws()
    await watcher_ws.join("general")
    before = sent()
    other_ws = await other.ws()
    await other_ws.join("general")
    await watcher_ws.expect("presence", status="online")
    assert sent() == before + 1
    runtime.reporter.snapshot()
    assert set(runtime.reporter.snapshot()["rate_1m"]) == {"messages", "deliveries", "presence"}


def shape(value: Any) -> Any:
    """The keys of a JSON value, nested; a list by its first item."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


async def test_the_status_example_in_the_guide_has_the_fields_of_a_real_answer(
        make_client, runtime):
    section = OPERATIONS.read_text().split("## 3. `/status`", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```json\n(.*?)```", section, re.S)
    client = make_client()
    await client.register()
    await (await client.ws()).join("general")  # a process with a connection and a room
    await runtime.reporter.publish()
    monitor = make_client()
    monitor.token = STATUS_TOKEN
    status, body, _ = await monitor.request("GET", "/status")
    assert status == 200
    assert shape(json.loads(example)) == shape(body)
