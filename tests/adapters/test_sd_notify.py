"""sd_notify never blocks the daemon: a notify socket nobody reads drops status lines instead."""

from __future__ import annotations

import socket
import threading

from replicator.adapters import systemd


def test_notify_to_a_socket_nobody_reads_drops_instead_of_blocking(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    sent: list[bool] = []
    # Far more than the kernel queues for an unread datagram socket (net.unix.max_dgram_qlen,
    # 10 by default): a blocking send would hang here for ever, as the daemon once did.
    sender = threading.Thread(target=lambda: sent.extend(systemd.notify(f"STATUS=run {i}") for i in range(200)),
                              daemon=True)
    sender.start()
    sender.join(timeout=60)
    try:
        assert not sender.is_alive(), "notify blocked on a full notify socket"
        assert sent[0] is True and sent.count(False) > 0
        listener.setblocking(False)
        assert listener.recv(4096) == b"STATUS=run 0"
    finally:
        listener.close()
