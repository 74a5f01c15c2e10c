"""Idle sockets: server memory per socket and CPU while nothing is said; ours vs yardsticks.

For each repeat and each server (`--servers`, default the minimal Tornado + Redis
server, python-socketio + Redis and ours; see `targets.py`): start it, make the seats
(ours: accounts and rooms, before any clock starts), read the server's RSS, open
`--sockets` WebSockets from `--workers` processes, each joined to one of `--rooms` rooms,
wait for the server to go quiet, read its RSS again, then measure its CPU over an idle
window of at least `--idle` seconds, rounded up to whole ping intervals of that server
(server pings and presence refreshes included). With
`--hangup` every socket is then closed at the same moment and the CPU the server spends
until it is quiet again is measured too (what `hangup.py` reports).

Memory per socket = (RSS after - RSS before) / sockets, from /proc/<pid>/status, for
the process the clients talk to and with its services (Redis; ours: Redis and the
MongoDB-wire server). Prints per-run lines and the medians; `--json PATH` writes them.

    python bench/idle.py [--sockets 10000] [--rooms 100] [--idle 60] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu import machine_busy_seconds
from held import HeldSockets, make_seats, raise_nofile, sample_until_quiet
from run_fanout import environment
from targets import KINDS, LABELS, Target, start_target

SETTLE_QUIET_PCT = 5.0
HANGUP_QUIET_PCT = 2.0
HANGUP_TIMEOUT_S = 120.0
# Ours sends a closed socket's departure when its presence grace (2 s) ends: the window
# spans it, whatever the quiet before.
HANGUP_AT_LEAST_S = 4.0
BAR_IDLE_PCT = 2.0
BAR_KB_RATIO = 1.25
BAR_HANGUP_CPU_S = 1.5


def _total(parts: dict[str, float]) -> float:
    return sum(parts.values())


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


async def measure(
    target: Target, sockets: int, rooms: int, idle_s: float, hangup: bool, workers: int
) -> dict[str, Any]:
    """One run against a started `target`: memory, idle CPU and optionally the hang-up."""
    seats = await make_seats(target, sockets, rooms)
    await sample_until_quiet(target.cpu_seconds, SETTLE_QUIET_PCT, 1.0, 30.0)
    rss0 = target.rss_kb()
    held = HeldSockets(target, seats, workers)
    result: dict[str, Any] = {"kind": target.kind, "label": target.label,
                              "sockets": sockets, "rooms": rooms}
    try:
        connect_s = await held.connect()
        result["connect_s"] = round(connect_s, 2)
        await sample_until_quiet(target.cpu_seconds, SETTLE_QUIET_PCT, 1.0, 60.0)
        rss1 = target.rss_kb()
        result["rss_kb_before"], result["rss_kb_after"] = rss0, rss1
        result["kb_per_socket"] = round((rss1["server"] - rss0["server"]) / sockets, 2)
        result["kb_per_socket_with_services"] = round(
            (sum(rss1.values()) - sum(rss0.values())) / sockets, 2)
        if idle_s > 0:
            # Whole ping intervals of this server, at least `idle_s`: see PING_INTERVAL_S.
            idle_s = math.ceil(idle_s / target.ping_interval - 1e-9) * target.ping_interval
            cpu0, machine0, t0 = target.cpu_seconds(), machine_busy_seconds(), time.monotonic()
            await asyncio.sleep(idle_s)
            cpu1, machine1 = target.cpu_seconds(), machine_busy_seconds()
            wall = time.monotonic() - t0
            used = _delta(cpu1, cpu0)
            result["idle_window_s"] = round(wall, 1)
            result["idle_cpu_pct"] = round(100 * used.get("server", 0.0) / wall, 3)
            result["idle_cpu_pct_with_services"] = round(100 * _total(used) / wall, 3)
            result["idle_cpu_parts_pct"] = {k: round(100 * v / wall, 3) for k, v in used.items()}
            if machine0 is not None and machine1 is not None:
                result["idle_other_cpu_pct"] = round(
                    max(0.0, 100 * (machine1 - machine0 - _total(used)) / wall), 1)
        result["dropped_by_server"] = await held.dropped()
        if hangup:
            at = time.monotonic() + 0.3
            closing = asyncio.ensure_future(held.hang_up(at))
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            samples = await sample_until_quiet(
                target.cpu_seconds, HANGUP_QUIET_PCT, 1.0, HANGUP_TIMEOUT_S,
                at_least=HANGUP_AT_LEAST_S)
            await closing
            # From the close to the end of the quiet second that ended the sampling.
            end_t, end = samples[-1]
            used = _delta(end, samples[0][1])
            result["hangup"] = {
                "cpu_s": round(used.get("server", 0.0), 3),
                "cpu_s_with_services": round(_total(used), 3),
                "cpu_s_parts": {k: round(v, 3) for k, v in used.items()},
                "quiet_after_s": round(end_t, 2),
                "timeline": [[round(t, 2), {k: round(v, 3) for k, v in cpu.items()}]
                             for t, cpu in samples],
            }
    finally:
        held.stop()
    return result


def summary(r: dict[str, Any]) -> str:
    """One readable line (two with the hang-up) for a run."""
    line = (f"{r['label']:24} {r['sockets']} sockets joined in {r['connect_s']} s: "
            f"{r['kb_per_socket']} KB/socket ({r['kb_per_socket_with_services']} with "
            "services)")
    if "idle_cpu_pct" in r:
        line += (f"; idle {r['idle_window_s']} s: {r['idle_cpu_pct']} % of a core "
                 f"({r['idle_cpu_pct_with_services']} % with services; other processes "
                 f"{r.get('idle_other_cpu_pct')} %)")
    line += f"; closed by the server: {r['dropped_by_server']}"
    if "hangup" in r:
        h = r["hangup"]
        line += (f"\n{'':24} hang-up of all: {h['cpu_s']} CPU-s ({h['cpu_s_with_services']} "
                 f"with services: {h['cpu_s_parts']}), quiet after {h['quiet_after_s']} s")
    return line


METRICS = {
    "kb_per_socket": lambda r: r["kb_per_socket"],
    "kb_per_socket_with_services": lambda r: r["kb_per_socket_with_services"],
    "idle_cpu_pct": lambda r: r.get("idle_cpu_pct"),
    "idle_cpu_pct_with_services": lambda r: r.get("idle_cpu_pct_with_services"),
    "hangup_cpu_s": lambda r: r.get("hangup", {}).get("cpu_s"),
    "hangup_cpu_s_with_services": lambda r: r.get("hangup", {}).get("cpu_s_with_services"),
    "connect_s": lambda r: r["connect_s"],
}


def medians(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """The median of each metric over the runs that have it."""
    out: dict[str, float | None] = {}
    for name, get in METRICS.items():
        values = [v for v in (get(r) for r in runs) if v is not None]
        out[name] = round(statistics.median(values), 3) if values else None
    return out


async def compare(args: argparse.Namespace, hangup: bool) -> dict[str, Any]:
    """Every server in `args.servers`, `args.repeat` times; the runs and the medians."""
    raise_nofile()
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in args.servers}
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        for n in range(args.repeat):
            for kind in args.servers:
                target = await start_target(kind, Path(tmp), f"{kind}-{n}")
                try:
                    result = await measure(target, args.sockets, args.rooms, args.idle,
                                           hangup, args.workers)
                finally:
                    await asyncio.to_thread(target.stop)
                print(f"run {n + 1} {summary(result)}", flush=True)
                runs[kind].append(result)
    meds = {kind: medians(rs) for kind, rs in runs.items()}
    return {"runs": runs, "medians": meds}


def print_medians(final: dict[str, Any], repeat: int) -> None:
    """The medians, one line per server, with ratios to the minimal server."""
    meds = final["medians"]
    base = meds.get("baseline", {})
    print(f"\nmedians over {repeat} run(s):")
    for kind, values in meds.items():
        cells = []
        for name, value in values.items():
            if value is None:
                continue
            ratio = base.get(name)
            cells.append(f"{name} {value:g}" + (
                f" ({value / ratio:.2f}x minimal)" if ratio and kind != "baseline" else ""))
        print(f"  {LABELS[kind]}: " + ", ".join(cells))


def add_flags(parser: argparse.ArgumentParser, idle_default: float) -> None:
    """The flags idle.py and hangup.py share."""
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--idle", type=float, default=idle_default, metavar="SECONDS",
                        help="length of the idle window (0: none)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="load-generator processes")
    parser.add_argument("--servers", default=",".join(KINDS),
                        help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results here")


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    args = parser.parse_args()
    args.servers = [s for s in args.servers.split(",") if s]
    if not set(args.servers) <= set(KINDS) or not args.servers:
        parser.error(f"--servers: choose from {', '.join(KINDS)}")
    if not 1 <= args.sockets <= 20_000 or not 1 <= args.rooms <= args.sockets:
        parser.error("--sockets must be 1..20000 and --rooms 1..sockets")
    return args


def run(args: argparse.Namespace, hangup: bool, bench: str) -> dict[str, Any]:
    """Run the comparison, print it, write the JSON file if asked."""
    env = environment()
    final = asyncio.run(compare(args, hangup))
    print_medians(final, args.repeat)
    final.update({"bench": bench, "environment": env, "params": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}})
    if args.json:
        args.json.write_text(json.dumps(final, indent=1, sort_keys=True))
        print(f"results written to {args.json}")
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_flags(parser, idle_default=60.0)
    parser.add_argument("--hangup", action="store_true",
                        help="then close every socket at once and measure that too")
    args = parse(parser)
    run(args, args.hangup, "idle")


if __name__ == "__main__":
    main()
