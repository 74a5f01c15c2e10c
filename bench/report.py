"""Turn the load generator's raw counts into a result record and a readable summary."""

from __future__ import annotations

import os
import statistics
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from cpu import Window
from scenario import BAR_P99_MS, Scenario

NOISY_OTHER_CPU_PCT = 10.0


def percentiles(values: array[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean of `values` (nearest rank), rounded to 0.01 ms."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": round(ordered[-1], 2),
        "mean": round(sum(ordered) / len(ordered), 2),
    }


def cdf(values: array[float]) -> list[float]:
    """The 0th, 1st, ..., 100th percentile of `values` plus 99.5 and 99.9 (nearest rank),
    rounded to 0.01 ms: enough to draw the distribution without keeping every sample."""
    if not values:
        return []
    ordered = sorted(values)
    last = len(ordered) - 1
    ranks = [q / 100 for q in range(101)] + [0.995, 0.999]
    return [round(ordered[min(last, int(q * len(ordered)))], 2) for q in ranks]


def ack_timeline(sent_s: array[float], latencies_ms: array[float], step_s: float) -> list[float]:
    """Median ack latency (ms) of the messages sent in each `step_s` slice of the run.

    A store that slows down as its collections grow shows as a rising series.
    """
    if not sent_s:
        return []
    t0 = min(sent_s)
    buckets: dict[int, list[float]] = {}
    for sent, latency in zip(sent_s, latencies_ms, strict=True):
        buckets.setdefault(int((sent - t0) // step_s), []).append(latency)
    return [round(statistics.median(buckets.get(i, [0.0])), 1) for i in range(max(buckets) + 1)]


def merge(partials: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Add up the workers' counts and concatenate their samples."""
    parts = list(partials)
    merged: dict[str, Any] = {}
    summed = ("connections", "sent", "acked", "rejected", "acks_missing", "expected_deliveries",
              "deliveries", "lost", "duplicates", "unacked_delivered", "foreign_messages",
              "malformed", "disconnects", "unexpected_acks", "acked_after_error",
              "error_after_ack", "cpu_s")
    for key in summed:
        merged[key] = sum(p[key] for p in parts)
    errors: Counter[str] = Counter()
    latencies, ack_latencies, ack_sent = array("d"), array("d"), array("d")
    for p in parts:
        errors.update(p["errors"])
        latencies.frombytes(p["latencies_ms"])
        ack_latencies.frombytes(p["ack_latencies_ms"])
        ack_sent.frombytes(p["ack_sent_s"])
    merged["errors"] = dict(errors)
    merged["connect_s"] = max(p["connect_s"] for p in parts)
    merged["max_send_lag_s"] = max(p["max_send_lag_s"] for p in parts)
    firsts = [p["first_send_ns"] for p in parts if p["first_send_ns"]]
    merged["first_send_ns"] = min(firsts, default=0)
    merged["last_delivery_ns"] = max(p["last_delivery_ns"] for p in parts)
    merged["latencies"] = latencies
    merged["ack_latencies"] = ack_latencies
    merged["ack_sent"] = ack_sent
    return merged


def build_result(
    scenario: Scenario,
    label: str,
    target: str,
    m: dict[str, Any],
    window: Window,
    accounts_s: float,
    busy_before_pct: float | None,
) -> dict[str, Any]:
    """The result record of one run: counts, rates, latency percentiles, CPU shares."""
    span_s = max(1e-9, (m["last_delivery_ns"] - m["first_send_ns"]) / 1e9)
    latency = percentiles(m["latencies"])
    parts, machine_cpu = window.server_cpu_s, window.machine_cpu_s
    server_cpu = None if parts is None else sum(parts.values())
    result: dict[str, Any] = {
        "scenario": "fanout",
        "label": label,
        "target": target,
        "params": asdict(scenario),
        "connections": m["connections"],
        "accounts_s": round(accounts_s, 2),
        "connect_s": round(m["connect_s"], 2),
        "sent": m["sent"],
        "acked": m["acked"],
        "rejected": m["rejected"],
        "acks_missing": m["acks_missing"],
        "errors": m["errors"],
        "expected_deliveries": m["expected_deliveries"],
        "deliveries": m["deliveries"],
        "lost": m["lost"],
        "duplicates": m["duplicates"],
        "unacked_delivered": m["unacked_delivered"],
        "foreign_messages": m["foreign_messages"],
        "malformed": m["malformed"],
        "disconnects": m["disconnects"],
        "unexpected_acks": m["unexpected_acks"],
        "acked_after_error": m["acked_after_error"],
        "error_after_ack": m["error_after_ack"],
        "deliveries_per_s": round(m["deliveries"] / span_s, 1),
        "offered_deliveries_per_s": scenario.offered_deliveries_per_s,
        "latency_ms": latency,
        "latency_cdf_ms": cdf(m["latencies"]),
        "ack_latency_ms": percentiles(m["ack_latencies"]),
        "ack_p50_ms_by_5s": ack_timeline(m["ack_sent"], m["ack_latencies"], 5.0),
        "max_send_lag_ms": round(m["max_send_lag_s"] * 1000, 2),
        "window_s": round(window.wall, 2),
        "loadgen_cpu_pct": round(100 * m["cpu_s"] / window.wall, 1),
        "loadgen_cpu_us_per_delivery": (
            round(1e6 * m["cpu_s"] / m["deliveries"], 1) if m["deliveries"] else None
        ),
        "server_cpu_pct": None if server_cpu is None else round(100 * server_cpu / window.wall, 1),
        "server_cpu_parts_pct": (
            None
            if parts is None
            else {k: round(100 * v / window.wall, 1) for k, v in sorted(parts.items())}
        ),
        "server_cpu_us_per_delivery": (
            None
            if server_cpu is None or not m["deliveries"]
            else round(1e6 * server_cpu / m["deliveries"], 1)
        ),
        "machine_cpu_pct": (
            None if machine_cpu is None else round(100 * machine_cpu / window.wall, 1)
        ),
        "cores": os.cpu_count(),
        "machine_busy_before_pct": busy_before_pct,
    }
    # CPU used during the window by processes that are neither the load generator nor
    # the server: anything well above zero means the machine was not quiet.
    if result["machine_cpu_pct"] is not None:
        others = result["machine_cpu_pct"] - result["loadgen_cpu_pct"]
        if result["server_cpu_pct"] is not None:
            result["other_cpu_pct"] = round(max(0.0, others - result["server_cpu_pct"]), 1)
    result["passed"] = (
        m["lost"] == 0
        and m["duplicates"] == 0
        and m["acks_missing"] == 0
        and m["rejected"] == 0
        and m["acked_after_error"] == 0
        and m["sent"] > 0
        and latency["p99"] < BAR_P99_MS
    )
    return result

def summary(result: dict[str, Any]) -> str:
    """A human-readable block for one result record."""
    p = result["params"]
    lat, ack = result["latency_ms"], result["ack_latency_ms"]
    rate = f"{p['rate']:g} msg/s" if p["rate"] else f"closed loop (window {p['window']})"
    cpu = (f"  CPU over {result['window_s']} s: load generator {result['loadgen_cpu_pct']}% = "
           f"{result['loadgen_cpu_us_per_delivery']} us/delivery")
    if result["server_cpu_pct"] is not None:
        parts = ", ".join(f"{k} {v}%" for k, v in result["server_cpu_parts_pct"].items())
        cpu += (f", server {result['server_cpu_pct']}% ({parts}) = "
                f"{result['server_cpu_us_per_delivery']} us/delivery")
    if result["machine_cpu_pct"] is not None:
        cpu += f", whole machine {result['machine_cpu_pct']}% of {result['cores']}00%"
    other = result.get("other_cpu_pct")
    if other is not None and other > NOISY_OTHER_CPU_PCT:
        cpu += (f"\n  WARNING: other processes used {other}% CPU during the window: "
                "the machine was not quiet, these numbers are not clean")
    return "\n".join([
        f"fanout {result['label']} @ {result['target']}: {p['rooms']} rooms x {p['members']} "
        f"members, {p['rooms'] * p['senders_per_room']} senders x {rate} for "
        f"{p['duration']:g} s, {p['workers']} load-generator process(es)",
        f"  set-up: accounts+rooms {result['accounts_s']} s, connect+join {result['connect_s']} s",
        f"  sent {result['sent']}, acked {result['acked']}, rejected {result['rejected']}, "
        f"acks missing {result['acks_missing']}, error frames {result['errors'] or 'none'}",
        f"  contradictions: acked after an error {result['acked_after_error']}, error after "
        f"an ack {result['error_after_ack']}, unexpected acks {result['unexpected_acks']}",
        f"  deliveries {result['deliveries']} of {result['expected_deliveries']} owed: "
        f"lost (still missing after the drain) {result['lost']}, "
        f"duplicates {result['duplicates']}, delivered but never acked "
        f"{result['unacked_delivered']}, "
        f"disconnects {result['disconnects']}",
        f"  deliveries/s {result['deliveries_per_s']:.0f} (offered "
        + (f"{result['offered_deliveries_per_s']:.0f})" if p["rate"] else "as fast as acked)"),
        f"  latency ms p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} max {lat['max']}; "
        f"ack p50 {ack['p50']} p99 {ack['p99']}; max send lag {result['max_send_lag_ms']} ms",
        f"  ack p50 ms per 5 s of sending: {result['ack_p50_ms_by_5s']}",
        cpu,
        "  " + ("PASS" if result["passed"] else "FAIL")
        + f" (bar: nothing lost, duplicated, rejected or unacked; p99 < {BAR_P99_MS:g} ms)",
    ])
