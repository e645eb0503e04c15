"""A TCP proxy on loopback that passes traffic to a real sshd until told to fail: after N bytes
from the client on one connection it either cuts the connection or stalls it (stops forwarding
without closing), as a dropped or frozen WAN link would."""

from __future__ import annotations

import socket
import threading


class FaultProxy:
    def __init__(self, upstream_port: int, *, after_bytes: int, mode: str) -> None:
        assert mode in ("cut", "stall", "pass")
        self.upstream_port = upstream_port
        self.after_bytes = after_bytes
        self.mode = mode
        self.tripped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        moved = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                moved += len(data)
                if from_client and self.mode != "pass" and moved > self.after_bytes:
                    self.tripped.set()
                    if self.mode == "cut":
                        break
                    threading.Event().wait()  # stall: hold the connection open, forward nothing
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._closing = True
        for s in [self._listener, *self._sockets]:
            try:
                s.close()
            except OSError:
                pass
