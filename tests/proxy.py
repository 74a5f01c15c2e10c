"""A loopback TCP relay whose connections a test can cut, like a dropped network."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path


class TcpProxy:
    """Relays to 127.0.0.1:`target` (a port) or to the unix socket `target` (a path);
    `cut()` drops every connection and refuses new ones until `resume()`."""

    def __init__(self, target: int | Path) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepting = True
        self.closed = False
        self.lock = threading.Lock()
        self.pairs: set[tuple[socket.socket, socket.socket]] = set()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.accepting:
                client.close()  # the "network" is down: refuse, as a dead route would
                continue
            try:
                upstream = self._connect()
            except OSError:
                client.close()
                continue
            pair = (client, upstream)
            with self.lock:
                self.pairs.add(pair)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, pair), daemon=True).start()

    def _connect(self) -> socket.socket:
        if isinstance(self.target, int):
            return socket.create_connection(("127.0.0.1", self.target))
        upstream = socket.socket(socket.AF_UNIX)
        try:
            upstream.connect(str(self.target))
        except OSError:
            upstream.close()
            raise
        return upstream

    def _pump(self, src: socket.socket, dst: socket.socket,
              pair: tuple[socket.socket, socket.socket]) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        self._drop(pair)

    def _drop(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self.lock:
            self.pairs.discard(pair)
        for s in pair:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones until resume()."""
        self.accepting = False
        with self.lock:
            pairs = list(self.pairs)
        for pair in pairs:
            self._drop(pair)

    def resume(self) -> None:
        self.accepting = True

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()
