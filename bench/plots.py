"""PNG plots from the JSON the benches write (`--json PATH`), into docs/img/ by default.

- from `perf_table.py`: `fanout-latency.png`, the delivery latency distribution of the
  fan-out scenario (10 rooms x 100 at 20,000 deliveries/s), one curve per server and run;
  and `hangup-cpu.png` (as below);
- from `idle.py` / `hangup.py` with the hang-up: `hangup-cpu.png`, the server's CPU (% of
  a core, per 100 ms) after every socket hung up at once, per server;
- from `reconnect_storm.py`: `reconnect-cpu.png`, CPU % of the process restarted (A),
  the one that takes the clients (B), Redis and the MongoDB-wire server around the
  SIGTERM.

    python bench/plots.py results/table.json results/storm.json [--out docs/img]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {"baseline": "minimal Tornado + Redis", "socketio": "python-socketio + Redis",
          "ours": "ours"}
COLORS = {"baseline": "tab:blue", "socketio": "tab:orange", "ours": "tab:green",
          "A": "tab:red", "B": "tab:green", "redis-server": "tab:purple",
          "secantusd": "tab:brown", "server": "tab:green"}
RANKS = [q for q in range(101)] + [99.5, 99.9]


def _subtitle(data: dict[str, Any]) -> str:
    env = data.get("environment", {})
    return (f"{env.get('date', '?')}, commit {env.get('server_commit', '?')}, "
            f"{env.get('cores', '?')} cores shared with the load generator")


def cpu_series(timeline: list[list[Any]], parts: list[str]) -> tuple[list[float], dict[str,
                                                                                   list[float]]]:
    """(times, {part: % of a core per interval}) from cumulative CPU samples."""
    times: list[float] = []
    series: dict[str, list[float]] = {p: [] for p in parts}
    for (t0, c0), (t1, c1) in itertools.pairwise(timeline):
        dt = max(1e-9, t1 - t0)
        times.append(t1)
        for p in parts:
            # A process that exited reads as 0 from then on: no negative CPU.
            series[p].append(max(0.0, 100 * (c1.get(p, 0.0) - c0.get(p, 0.0)) / dt))
    return times, series


def _by_server(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Runs per server (perf_table, idle, hangup); {} for other benches."""
    runs = data.get("runs")
    return runs if isinstance(runs, dict) else {}


def fanout_latency(data: dict[str, Any], out: Path) -> Path | None:
    """Latency distribution (CDF, log x) of the fan-out scenario, per server and run."""
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = False
    for kind, runs in _by_server(data).items():
        for n, run in enumerate(runs):
            cdf = run.get("fanout", {}).get("latency_cdf_ms")
            if not cdf:
                continue
            ranks = sorted(zip(RANKS, cdf, strict=True))
            ax.plot([max(0.01, v) for _, v in ranks], [q for q, _ in ranks],
                    color=COLORS.get(kind), alpha=0.9,
                    label=LABELS.get(kind, kind) if n == 0 else None)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("send -> delivery latency (ms, log scale)")
    ax.set_ylabel("percentile")
    ax.axhline(99, color="grey", linewidth=0.5, linestyle="--")
    ax.set_title("Fan-out 10 rooms x 100 at 20,000 deliveries/s\n" + _subtitle(data),
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path = out / "fanout-latency.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _hangups(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The first run with a hang-up of each server, from idle/hangup or perf_table JSON."""
    found: dict[str, dict[str, Any]] = {}
    for kind, runs in _by_server(data).items():
        for run in runs:
            held = run.get("idle", run)
            if "hangup" in held and kind not in found:
                found[kind] = held
    return found


def hangup_cpu(data: dict[str, Any], out: Path) -> Path | None:
    """Server CPU after every socket hung up at once (process alone and with services)."""
    found = _hangups(data)
    if not found:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for kind, held in found.items():
        timeline = held["hangup"]["timeline"]
        parts = sorted({p for _, cpu in timeline for p in cpu})
        times, series = cpu_series(timeline, parts)
        total = [sum(vals) for vals in zip(*series.values(), strict=True)]
        ax.plot(times, series.get("server", []), color=COLORS.get(kind),
                label=f"{LABELS.get(kind, kind)}: server process "
                      f"({held['hangup']['cpu_s']} CPU-s)")
        ax.plot(times, total, color=COLORS.get(kind), linestyle=":",
                label=f"{LABELS.get(kind, kind)}: with services "
                      f"({held['hangup']['cpu_s_with_services']} CPU-s)")
    sockets = next(iter(found.values()))["sockets"]
    ax.set_xlabel("seconds after every socket closed")
    ax.set_ylabel("CPU, % of one core (100 ms samples)")
    ax.set_title(f"{sockets:,} sockets hang up at once\n" + _subtitle(data), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    path = out / "hangup-cpu.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reconnect_cpu(data: dict[str, Any], out: Path) -> Path | None:
    """CPU of both processes and the services around the restart of A."""
    runs = data.get("runs") or []
    if data.get("bench") != "reconnect_storm" or not runs:
        return None
    run = runs[0]
    parts = ["A", "B", "redis-server", "secantusd"]
    times, series = cpu_series(run["timeline"], parts)
    names = {"A": "process restarted (A)", "B": "process taking the clients (B)",
             "redis-server": "Redis", "secantusd": "MongoDB-wire server"}
    fig, ax = plt.subplots(figsize=(9, 5))
    for p in parts:
        ax.plot(times, series[p], color=COLORS[p], label=names[p])
    sigterm = run["sigterm_at_s"]
    ax.axvline(sigterm, color="black", linewidth=0.8, linestyle="--")
    b = run["back_s"]
    for q, style in (("p50", ":"), ("p99", "-."), ("p100", "-")):
        ax.axvline(sigterm + b[q], color="grey", linewidth=0.8, linestyle=style,
                   label=f"{q[1:]} % of clients back ({b[q]} s)")
    ax.set_xlabel("seconds (dashed black line: SIGTERM to A)")
    ax.set_ylabel("CPU, % of one core (100 ms samples)")
    ax.set_title(f"Reconnect storm: {run['clients']:,} clients resume on the other process "
                 f"(lost {run['lost']}, duplicated {run['duplicates']})\n" + _subtitle(data),
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    path = out / "reconnect-cpu.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="JSON files from --json")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for source in args.results:
        data = json.loads(source.read_text())
        made = [p for p in (fanout_latency(data, args.out), hangup_cpu(data, args.out),
                            reconnect_cpu(data, args.out)) if p is not None]
        print(f"{source}: " + (", ".join(str(p) for p in made) or "nothing to plot"))


if __name__ == "__main__":
    main()
