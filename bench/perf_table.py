"""The performance table in one command: three servers, every scenario, medians of 3.

For each repeat and each server (the minimal Tornado + Redis server, python-socketio +
Redis, ours; see `targets.py`), on a freshly started server:

1. burst, 10 rooms x 100: every room's senders send closed loop (8 in flight each);
   deliveries/s;
2. fan-out, 10 rooms x 100 at 20,000 deliveries/s (4 senders x 5 msg/s per room);
   latency p99 (and the distribution, for `plots.py`);
3. burst, 100 rooms x 2: chat messages/s in (ours stores every one);
4. connect + join, sockets/s, 64 at a time;

then on another fresh server, 5-7: `--sockets` idle sockets each joined to one of 100
rooms: KB per socket, % of a core over the idle window, and CPU-seconds once they all
hang up at once (`idle.py`). Ours runs with `--message-rate 1000 --message-burst 1000
--rooms-per-user 200`:
the bursts measure fan-out, not the per-user rate limit.

Prints each run, then a Markdown table of the medians with the ratios to the minimal
server; `--json PATH` writes every run and the medians (input of `plots.py`).

    python bench/perf_table.py [--repeat 3] [--json PATH]    # about an hour
    python bench/perf_table.py --quick                        # about 10 min, smaller
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import connect_join
import idle
from held import raise_nofile
from loadgen import run_fanout
from run_fanout import environment
from scenario import Scenario
from targets import KINDS, LABELS, Target, start_target

OURS_ARGS = ["--message-rate", "1000", "--message-burst", "1000", "--rooms-per-user", "200"]

# (row, key in a run's record, format); the first three columns are the medians.
ROWS = [
    ("burst, 10 rooms x 100, deliveries/s", "burst_deliveries_per_s", "{:,.0f}"),
    ("fan-out 10 x 100 at 20 k deliveries/s: p99 ms", "fanout_p99_ms", "{:.1f}"),
    ("burst, 100 rooms x 2: chat messages/s in (ours: stored)", "burst2_messages_per_s",
     "{:,.0f}"),
    ("idle sockets, each joined to a room: KB per socket", "kb_per_socket", "{:.1f}"),
    ("connect + join, sockets/s (64 at a time)", "connect_join_per_s", "{:,.0f}"),
    ("{n} clients hang up at once: server CPU-seconds", "hangup_cpu_s", "{:.2f}"),
    ("{n} idle sockets: server CPU while idle (% of a core)", "idle_cpu_pct", "{:.2f}"),
]


def scenarios(quick: bool, protocol: str) -> dict[str, Scenario]:
    """The three fan-out scenarios of the table, for clients speaking `protocol`."""
    common: dict[str, Any] = {"duration": 5.0 if quick else 15.0, "protocol": protocol,
                              "source_ips": 20}
    return {
        "burst": Scenario(rooms=10, members=100, senders_per_room=4, rate=0, window=8,
                          listener_accounts=60, workers=2, room_prefix="burst",
                          user_prefix="burst", **common),
        "fanout": Scenario(rooms=10, members=100, senders_per_room=4, rate=5,
                           listener_accounts=60, workers=2, room_prefix="fan",
                           user_prefix="fan", **common),
        "burst2": Scenario(rooms=100, members=2, senders_per_room=1, rate=0, window=8,
                           listener_accounts=10, workers=2, room_prefix="pair",
                           user_prefix="pair", **common),
    }


async def traffic(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Scenarios 1-4 against one started server."""
    out: dict[str, Any] = {}
    for name, scenario in scenarios(args.quick, target.protocol).items():
        result = await run_fanout(target.url, scenario, f"{target.kind}-{name}",
                                  cpu_probe=target.cpu_seconds)
        result.pop("ack_p50_ms_by_5s", None)
        out[name] = result
        print(f"  {name}: {result['deliveries_per_s']:,.0f} deliveries/s, p99 "
              f"{result['latency_ms']['p99']} ms, lost {result['lost']}, duplicates "
              f"{result['duplicates']}, rejected {result['rejected']}", flush=True)
    out["burst_deliveries_per_s"] = out["burst"]["deliveries_per_s"]
    out["fanout_p99_ms"] = out["fanout"]["latency_ms"]["p99"]
    out["burst2_messages_per_s"] = round(out["burst2"]["deliveries_per_s"] / 2, 1)
    seats = await connect_join.seats_for(target.url, args.connect_users, 10,
                                         target.kind == "ours")
    if target.kind == "ours":  # first joins make the memberships: warm up like a deploy
        await connect_join.storm(target.url, seats, 64, target.protocol)
    rate = await connect_join.storm(target.url, seats, 64, target.protocol)
    out["connect_join_per_s"] = round(rate, 1)
    print(f"  connect + join: {rate:,.0f} sockets/s", flush=True)
    return out


async def one_server(kind: str, n: int, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every scenario of the table against `kind`: traffic, then idle sockets."""
    print(f"run {n + 1}, {LABELS[kind]}:", flush=True)
    ours = OURS_ARGS if kind == "ours" else None
    target = await start_target(kind, tmp, f"{kind}-{n}-traffic", ours)
    try:
        record = await traffic(target, args)
    finally:
        await asyncio.to_thread(target.stop)
    target = await start_target(kind, tmp, f"{kind}-{n}-idle", ours)
    try:
        held = await idle.measure(target, args.sockets, 100, args.idle, True, args.workers)
    finally:
        await asyncio.to_thread(target.stop)
    print("  " + idle.summary(held).replace("\n", "\n  "), flush=True)
    record["idle"] = held
    record["kb_per_socket"] = held["kb_per_socket"]
    record["idle_cpu_pct"] = held.get("idle_cpu_pct")
    record["hangup_cpu_s"] = held["hangup"]["cpu_s"]
    return record


def table(meds: dict[str, dict[str, float | None]], sockets: int) -> str:
    """The Markdown table of the medians with the ratios to the minimal server."""
    kinds = [k for k in KINDS if k in meds]
    head = "| scenario | " + " | ".join(LABELS[k] for k in kinds) + " |"
    if "baseline" in meds:
        head += "".join(f" {LABELS[k]} / minimal |" for k in kinds if k != "baseline")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for row, key, fmt in ROWS:
        cells = [row.format(n=f"{sockets:,}")]
        for kind in kinds:
            value = meds[kind].get(key)
            cells.append("n/a" if value is None else fmt.format(value))
        base = meds.get("baseline", {}).get(key)
        for kind in kinds:
            if kind == "baseline":
                continue
            value = meds[kind].get(key)
            cells.append(f"{value / base:.2f}" if value is not None and base else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in args.servers}
    with tempfile.TemporaryDirectory(prefix="bench-table-") as tmp:
        for n in range(args.repeat):
            for kind in args.servers:
                runs[kind].append(await one_server(kind, n, Path(tmp), args))
    meds: dict[str, dict[str, float | None]] = {}
    for kind, records in runs.items():
        meds[kind] = {}
        for _, key, _ in ROWS:
            values = [r[key] for r in records if r.get(key) is not None]
            meds[kind][key] = statistics.median(values) if values else None
    return {"runs": runs, "medians": meds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="5 s scenarios, 1,000 idle sockets, 40 s idle window, 1 run")
    parser.add_argument("--repeat", type=int, help="runs per server (default 3; quick 1)")
    parser.add_argument("--sockets", type=int, help="idle sockets (default 10,000; quick 1,000)")
    parser.add_argument("--idle", type=float, help="idle window s (default 60; quick 40), rounded "
                        "up to whole ping intervals of each server (20 s; Engine.IO 25 s)")
    parser.add_argument("--connect-users", type=int, default=500,
                        help="sockets of the connect + join scenario")
    parser.add_argument("--workers", type=int, default=4, help="idle-socket client processes")
    parser.add_argument("--servers", default=",".join(KINDS))
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args()
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.sockets = args.sockets or (1000 if args.quick else 10_000)
    args.idle = args.idle if args.idle is not None else (40.0 if args.quick else 60.0)
    args.servers = [s for s in args.servers.split(",") if s]
    if not set(args.servers) <= set(KINDS):
        parser.error(f"--servers: choose from {', '.join(KINDS)}")
    raise_nofile()
    env = environment()
    final = asyncio.run(main_async(args))
    print(f"\nmedians over {args.repeat} run(s) each, same machine, same run:\n")
    print(table(final["medians"], args.sockets))
    final.update({"bench": "perf_table", "environment": env, "params": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}})
    if args.json:
        args.json.write_text(json.dumps(final, indent=1, sort_keys=True))
        print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()
