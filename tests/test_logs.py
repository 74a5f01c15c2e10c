"""Logs: one line per event, machine-readable with --log-format json."""

from __future__ import annotations

import io
import json
import logging

from server import logs
from tests.conftest import STATUS_TOKEN


async def test_json_access_log_line_has_method_path_status_duration_and_pid(make_client):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    access = logging.getLogger("chat.access")
    access.addHandler(handler)
    old_level = access.level
    access.setLevel(logging.INFO)
    try:
        client = make_client()
        await client.register()
        status, _, _ = await client.request("GET", "/api/me?token=should-not-be-logged")
        assert status == 200
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    me = next(line for line in lines if line["path"] == "/api/me")
    assert me["method"] == "GET" and me["status"] == 200 and me["level"] == "info"
    assert isinstance(me["duration_ms"], float) and isinstance(me["pid"], int)
    assert me["msg"].startswith("GET /api/me 200")
    assert "should-not-be-logged" not in stream.getvalue()
    assert any(line["path"] == "/api/register" and line["status"] == 201 for line in lines)


def test_json_formatter_includes_exceptions_as_one_line():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        record.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["msg"] == "failed here" and "ValueError: boom" in parsed["exc"]


async def test_successful_status_and_metrics_polls_are_logged_at_debug_only(make_client,
                                                                           caplog):
    caplog.set_level(logging.DEBUG, logger="chat.access")
    poller = make_client()
    poller.token = STATUS_TOKEN
    for path in ("/status", "/metrics", "/status"):
        assert (await poller.request("GET", path))[0] == 200
    refused = make_client()
    assert (await refused.request("GET", "/status"))[0] == 401
    levels = [(r.path, r.status, r.levelname) for r in caplog.records
              if r.name == "chat.access"]
    assert levels == [("/status", 200, "DEBUG"), ("/metrics", 200, "DEBUG"),
                      ("/status", 200, "DEBUG"), ("/status", 401, "WARNING")]
