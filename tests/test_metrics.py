"""/metrics: each series moves when its event happens; promtool accepts the scrape; the
Grafana dashboard asks only for series the server exports."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import re
import subprocess
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketClosedError

from tests.client import Client, unique_name
from tests.conftest import STATUS_TOKEN, close_node, open_node, redis_url_of

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
PROMTOOL = "/usr/bin/promtool"  # Debian's `prometheus` package (.ci/run installs it)

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape_text(base_url: str) -> str:
    client = Client(base_url)
    client.token = STATUS_TOKEN
    status, _, response = await client.request("GET", "/metrics")
    assert status == 200
    return response.body.decode()


def parse(text: str) -> Series:
    """Every sample line of an exposition, keyed by (name, labels)."""
    out: Series = {}
    sample = re.compile(r'^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = sample.match(line)
        assert m, line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


async def scrape(base_url: str) -> Series:
    return parse(await scrape_text(base_url))


def value(series: Series, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled series that has not happened yet."""
    return series.get((name, frozenset(labels.items())), 0.0)


def label_values(series: Series, name: str, label: str) -> set[str]:
    return {v for (n, labels), _ in series.items() if n == name
            for k, v in labels if k == label}


async def test_http_requests_are_counted_by_route_pattern_status_and_time(base_url,
                                                                         make_client):
    client = make_client()
    await client.register()
    before = await scrape(base_url)
    assert (await client.login(client.user["name"]))[0] == 200
    assert (await client.login(client.user["name"], "wrong password"))[0] == 401
    assert (await client.request("GET", "/api/rooms/general/messages"))[0] == 200
    assert (await client.request("GET", "/no/such/path"))[0] == 404
    after = await scrape(base_url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    login = {"route": "/api/login", "method": "POST"}
    assert moved("chat_http_requests_total", **login, status="200") == 1
    assert moved("chat_http_requests_total", **login, status="401") == 1
    assert moved("chat_http_request_duration_seconds_count", **login) == 2
    assert moved("chat_http_request_duration_seconds_sum", **login) > 0
    assert moved("chat_http_requests_total", route="/api/rooms/{room}/messages",
                 method="GET", status="200") == 1
    assert moved("chat_http_requests_total", route="other", method="GET", status="404") == 1
    # Raw paths never become label values.
    routes = label_values(after, "chat_http_requests_total", "route")
    assert not any("general" in r or "no/such" in r for r in routes), routes


async def test_websocket_connects_refused_upgrades_and_disconnects_are_counted(
        base_url, make_client):
    client = make_client()
    await client.register()
    with pytest.raises(HTTPClientError) as refused:
        await client.ws_raw(origin="http://evil.example")
    assert refused.value.code == 403
    with pytest.raises(HTTPClientError) as anonymous:
        await make_client().ws_raw()
    assert anonymous.value.code == 401
    ws = await client.ws()
    ws.conn.close(1000)
    assert (await ws.closed())[0] == 1000
    # Logging out revokes the session: the server closes its socket with 1008.
    ws = await client.ws()
    assert (await client.request("POST", "/api/logout"))[0] == 204
    assert (await ws.closed())[0] == 1008

    async def counted() -> Series:
        while True:  # the server's on_close runs after the client saw the close
            series = await scrape(base_url)
            if value(series, "chat_ws_disconnects_total", code="1008"):
                return series
            await asyncio.sleep(0.01)

    series = await asyncio.wait_for(counted(), 5)
    assert value(series, "chat_ws_upgrades_refused_total", status="403") == 1
    assert value(series, "chat_ws_upgrades_refused_total", status="401") == 1
    assert value(series, "chat_ws_connects_total") == 2
    assert value(series, "chat_ws_disconnects_total", code="1000") == 1
    assert value(series, "chat_ws_disconnects_total", code="1008") == 1
    assert value(series, "chat_http_requests_total", route="/ws", method="GET",
                 status="101") == 2


async def test_send_ack_latency_online_users_and_room_subscriptions(base_url, make_client):
    alice, bob = make_client(), make_client()
    await alice.register()
    await bob.register()
    assert (await alice.request("POST", "/api/rooms", {"name": "random"}))[0] == 201
    tabs = [await alice.ws(), await alice.ws()]
    for tab in tabs:
        await tab.join("general")
    await tabs[0].join("random")
    bob_ws = await bob.ws()
    await bob_ws.join("general")
    for i in range(3):
        reply = await tabs[0].call({"type": "send", "room": "general", "body": f"m{i}"})
        assert reply["type"] == "ack"
    series = await scrape(base_url)
    assert value(series, "chat_send_ack_seconds_count") == 3
    assert value(series, "chat_send_ack_seconds_sum") > 0
    assert value(series, "chat_online_users") == 2
    assert value(series, "chat_room_subscriptions") == 4
    assert value(series, "chat_local_rooms") == 2
    assert value(series, "chat_writer_queue_depth") == 0
    assert value(series, "chat_writer_awaiting_sends") == 0
    # A batch of frames takes microseconds: the fanout buckets start at 10 µs.
    fanout = {le for le in label_values(series, "chat_fanout_seconds_bucket", "le")}
    assert "1e-05" in fanout
    assert value(series, "chat_fanout_seconds_count") >= 3


async def test_refusals_are_counted_by_reason(config, services):
    limits = dataclasses.replace(config.limits, message_rate=0.1, message_burst=1,
                                 frame_rate=0.1, frame_burst=1, registrations_per_ip=2,
                                 login_failures_per_account=1)
    node = await open_node(dataclasses.replace(config, limits=limits), services)
    try:
        client = Client(node.base_url)
        await client.register()
        ws = await client.ws()
        await ws.join("general")  # the frame bucket's one token
        assert (await ws.call({"type": "ping"}))["code"] == "rate_limited"
        reply = await ws.call({"type": "send", "room": "general", "body": "1"})
        assert reply["type"] == "ack", reply
        reply = await ws.call({"type": "send", "room": "general", "body": "2"})
        assert reply["code"] == "rate_limited"
        name = client.user["name"]
        statuses = [(await Client(node.base_url).login(name, "wrong password"))[0]
                    for _ in range(3)]
        assert statuses[-1] == 429, statuses
        statuses = [(await Client(node.base_url).request(
            "POST", "/api/register", {"username": unique_name(), "password": "x" * 12}))[0]
            for _ in range(2)]
        assert statuses[-1] == 429, statuses
        series = await scrape(node.base_url)
        assert value(series, "chat_refusals_total", reason="frame_rate") == 1
        assert value(series, "chat_refusals_total", reason="message_rate") == 1
        assert value(series, "chat_refusals_total", reason="login") >= 1
        assert value(series, "chat_refusals_total", reason="register") >= 1
        assert value(series, "chat_http_requests_total", route="/api/login", method="POST",
                     status="429") >= 1
        reasons = label_values(series, "chat_refusals_total", "reason")
        assert reasons <= documented_values("chat_refusals_total{reason}"), reasons
    finally:
        await close_node(node)


OPERATIONS = DASHBOARD.parent / "operations.md"


def documented_values(metric: str) -> set[str]:
    """The `code`-quoted words of `metric`'s row in the metrics table of operations.md."""
    (row,) = [line for line in OPERATIONS.read_text().splitlines()
              if line.startswith(f"| `{metric}")]
    return set(re.findall(r"`([a-z_]+)`", row.split("|")[3]))


async def test_costly_requests_refused_are_counted_by_reason_as_documented(config, services):
    limits = dataclasses.replace(config.limits, search_rate=0.01, search_burst=1,
                                 dm_rate=0.01, dm_burst=1, upload_rate=0.01, upload_burst=1)
    node = await open_node(dataclasses.replace(config, limits=limits), services)
    try:
        client = Client(node.base_url)
        await client.register()
        for method, path, body, raw in (
                ("GET", "/api/search?q=anything", None, None),
                ("POST", "/api/dms", {"users": []}, None),
                ("POST", "/api/rooms/general/files?name=a.txt", None, b"hello")):
            statuses = [(await client.request(method, path, body, raw=raw))[0]
                        for _ in range(2)]
            assert statuses[0] != 429 and statuses[1] == 429, (path, statuses)
        series = await scrape(node.base_url)
        for reason in ("search", "dm", "upload"):
            assert value(series, "chat_refusals_total", reason=reason) == 1, reason
        reasons = label_values(series, "chat_refusals_total", "reason")
        assert reasons <= documented_values("chat_refusals_total{reason}"), reasons
    finally:
        await close_node(node)


async def test_each_page_is_counted_under_its_own_route(base_url, make_client):
    client = make_client()
    before = await scrape(base_url)
    for path in ("/status.html", "/status.html", "/admin.html"):
        assert (await client.request("GET", path))[0] == 200
    after = await scrape(base_url)

    def moved(route: str) -> float:
        labels = {"route": route, "method": "GET", "status": "200"}
        return (value(after, "chat_http_requests_total", **labels)
                - value(before, "chat_http_requests_total", **labels))

    assert (moved("/status.html"), moved("/admin.html")) == (2, 1)


async def test_garbage_collections_are_counted_and_timed_by_generation(base_url, runtime):
    before = await scrape(base_url)
    gc.collect()  # a full collection in the process that serves base_url
    after = await scrape(base_url)
    for name in ("chat_gc_pause_seconds_count", "python_gc_collections_total"):
        assert value(after, name, generation="2") >= value(before, name, generation="2") + 1
    assert (value(after, "chat_gc_pause_seconds_sum", generation="2")
            > value(before, "chat_gc_pause_seconds_sum", generation="2"))
    # After close() the process's collections are no longer this runtime's to time.
    await runtime.metrics.close()
    counted = value(await scrape(base_url), "chat_gc_pause_seconds_count", generation="2")
    gc.collect()
    assert value(await scrape(base_url), "chat_gc_pause_seconds_count",
                 generation="2") == counted


async def test_service_gauges_follow_the_probe_and_draining_is_exported(base_url, runtime):
    await runtime.probe.check()
    series = await scrape(base_url)
    assert value(series, "chat_mongo_up") == 1 and value(series, "chat_redis_up") == 1
    assert 0 < value(series, "chat_mongo_rtt_seconds") < 2
    assert 0 < value(series, "chat_redis_rtt_seconds") < 2
    assert value(series, "chat_redis_subscriber_connected") == 1
    assert value(series, "chat_draining") == 0
    runtime.inflight.draining = True  # what shutdown() does first
    try:
        series = await scrape(base_url)
        assert value(series, "chat_draining") == 1
    finally:
        runtime.inflight.draining = False


async def test_redis_down_shows_in_redis_up_and_subscriber_connected(config, services,
                                                                    private_redis):
    node = await open_node(config, mongo_url=services.mongo_url,
                           redis_url=redis_url_of(private_redis))
    try:
        assert private_redis.proc is not None
        private_redis.proc.kill()
        await asyncio.to_thread(private_redis.proc.wait)
        private_redis.proc = None
        await node.runtime.probe.check()

        async def subscriber_lost() -> Series:
            while True:
                series = await scrape(node.base_url)
                if value(series, "chat_redis_subscriber_connected") == 0:
                    return series
                await asyncio.sleep(0.05)

        series = await asyncio.wait_for(subscriber_lost(), 10)
        assert value(series, "chat_redis_up") == 0
        assert value(series, "chat_mongo_up") == 1
        assert (("chat_redis_rtt_seconds", frozenset()) in series
                and series[("chat_redis_rtt_seconds", frozenset())] != 0)  # NaN
    finally:
        await close_node(node)


async def traffic(base_url: str, make_client) -> None:
    """Some of everything: pages, the API, errors, WebSockets, sends, a refused upgrade."""
    client = make_client()
    await client.register()
    await client.login(client.user["name"])
    await client.request("GET", "/")
    await client.request("GET", "/no/such/path")
    await client.request("GET", "/api/rooms")
    ws = await client.ws()
    await ws.join("general")
    await ws.call({"type": "send", "room": "general", "body": "hello"})
    ws.conn.close(1001)
    with pytest.raises((HTTPClientError, WebSocketClosedError)):
        await make_client().ws_raw()


async def test_promtool_accepts_a_scrape_taken_after_traffic(base_url, make_client,
                                                            runtime):
    await traffic(base_url, make_client)
    await runtime.probe.check()
    text = await scrape_text(base_url)
    assert Path(PROMTOOL).exists(), (
        f"{PROMTOOL} is missing: apt-get install prometheus (it ships promtool)")
    result = await asyncio.to_thread(
        subprocess.run, [PROMTOOL, "check", "metrics"], input=text.encode(),
        capture_output=True, timeout=60, check=False)
    report = (result.stdout + result.stderr).decode()
    assert result.returncode == 0 and not report.strip(), report


# The Grafana dashboard ------------------------------------------------------------

_PROMQL_WORDS = frozenset((
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "by", "without", "on",
    "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "rate", "irate", "increase", "delta", "histogram_quantile", "max_over_time",
    "min_over_time", "avg_over_time", "clamp_min", "clamp_max", "vector", "scalar",
    "label_replace", "abs", "time", "le", "inf", "nan",
))


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, groupings, strings,
    ranges and Grafana's $variables left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"[a-zA-Z_:][\w:]*", expr))
    return {n for n in names if n.lower() not in _PROMQL_WORDS
            and not re.fullmatch(r"\d+(ms|s|m|h|d)?|e\d*", n)}


def exported_names(text: str) -> set[str]:
    """Every sample name the exposition can carry, whether or not a sample exists yet
    (a labelled counter shows only its # TYPE line until its first event)."""
    names: set[str] = set()
    suffixes = {"counter": ("", "_created"), "gauge": ("",), "untyped": ("",),
                "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.update(name + s for s in suffixes[kind])
            if kind == "counter":
                names.add(name.removesuffix("_total") + "_created")
    return names


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in doc["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            exprs.extend(t["expr"] for t in inner.get("targets", []) if "expr" in t)
    return exprs


async def test_grafana_dashboard_reads_only_metrics_the_server_exports(base_url, make_client):
    doc = json.loads(DASHBOARD.read_text())
    assert doc["schemaVersion"] >= 36 and doc["title"]
    assert any(i["name"] == "DS_PROMETHEUS" for i in doc["__inputs"])
    exprs = dashboard_exprs()
    assert len(exprs) >= 12
    await traffic(base_url, make_client)
    exported = exported_names(await scrape_text(base_url))
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= exported, (expr, names - exported)
        used |= names
    for needed in ("chat_messages_total", "chat_send_ack_seconds_bucket",
                   "chat_http_requests_total", "chat_ws_disconnects_total",
                   "chat_refusals_total", "chat_mongo_up", "chat_draining"):
        assert needed in used, needed


def test_grafana_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses each query as a recording rule, Grafana's variables filled in."""
    assert Path(PROMTOOL).exists(), f"{PROMTOOL} is missing: apt-get install prometheus"
    rules = ["groups:", "- name: dashboard", "  rules:"]
    for i, expr in enumerate(dashboard_exprs()):
        expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
        rules += [f"  - record: dashboard:query{i}", f"    expr: {json.dumps(expr)}"]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text("\n".join(rules) + "\n")
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                            timeout=60, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_metric_names_of_promql_leave_out_functions_labels_and_ranges():
    expr = ('histogram_quantile(0.99, sum by (le, route) (rate('
            'chat_http_request_duration_seconds_bucket{route!="other"}[$__rate_interval])))'
            ' * on(instance) group_left(node) chat_build_info')
    assert metric_names(expr) == {"chat_http_request_duration_seconds_bucket",
                                  "chat_build_info"}
