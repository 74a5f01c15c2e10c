"""Disconnect storm: N sockets, each joined to a room, all hang up at once.

The same set-up as `idle.py` (and the same servers: the minimal Tornado + Redis server,
python-socketio + Redis and ours), then every load-generator process closes all its
sockets at one agreed moment. Measured: the CPU-seconds the server spends from that
moment until it has been quiet (under 2 % of a core) for a second, and at least 4 s (ours
sends a closed socket's departure when its 2 s presence grace ends), read from /proc for
the process the clients talk to alone and with its services (ours: Redis and the
MongoDB-wire server, which do the presence and membership work), sampled every 100 ms
(the samples are in the JSON, for `plots.py`). Also prints memory per socket, and the
idle CPU when `--idle` > 0. The bar for ours: 10,000 leaving at once <= 1.5 CPU-seconds.

    python bench/hangup.py [--sockets 10000] [--rooms 100] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from idle import add_flags, parse, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_flags(parser, idle_default=0.0)
    run(parse(parser), hangup=True, bench="hangup")


if __name__ == "__main__":
    main()
