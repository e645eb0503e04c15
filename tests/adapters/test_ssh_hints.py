"""Each way the stream's OpenSSH client can fail, produced for real against a real sshd on
loopback, gets the hint of its own cause: never "check the host key" for a dropped link."""

from __future__ import annotations

import os
import socket
import subprocess
from types import SimpleNamespace

import pytest

from faultproxy import FaultProxy
from replicator.adapters.pipeline import Stage
from replicator.adapters.runner import ssh_client_argv
from replicator.core.config import Host
from replicator.core.errors import HostError
from replicator.sandbox import write_known_hosts, write_wrong_known_hosts
from support import run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failure(host: Host, remote: str, data: bytes = b"") -> HostError:
    """Run `remote` through the stream client as a transfer would, and check it as a transfer does."""
    argv = ssh_client_argv(host) + [remote]
    done = subprocess.run(argv, input=data, capture_output=True, timeout=120)
    assert done.returncode == 255, done.stderr
    stage = Stage(where=f"host {host.name}", argv=("btrfs", "receive"), command=argv,
                  process=SimpleNamespace(returncode=done.returncode), errors=[done.stderr])
    with pytest.raises(HostError) as raised:
        stage.check()
    return raised.value


def host(sshd, **override) -> Host:
    values = dict(name="remote", address=sshd.address, port=sshd.port, user=sshd.user,
                  identity_file=str(sshd.identity_file), known_hosts=str(sshd.known_hosts), connect_timeout=10)
    return Host(**{**values, **override})


@pytest.mark.parametrize("case", ["host key changed", "host key unknown", "key refused", "connection refused"])
def test_a_client_that_cannot_connect_is_told_why(case, sshd, tmp_path):
    (tmp_path / "empty").write_text("")
    stranger = tmp_path / "stranger"
    if case == "key refused":
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger)
    override, cause, advice = {
        "host key changed": ({"known_hosts": str(write_wrong_known_hosts(sshd, tmp_path / "kh"))},
                             "host key not trusted", "known_hosts"),
        "host key unknown": ({"known_hosts": str(tmp_path / "empty")}, "host key not trusted", "known_hosts"),
        "key refused": ({"identity_file": str(stranger)}, "key refused", "authorized_keys"),
        "connection refused": ({"port": free_port()}, "connection refused", "sshd runs there"),
    }[case]
    error = failure(host(sshd, **override), "true")
    assert f"({cause})" in error.message and advice in error.hint


def test_a_link_dropped_mid_stream_is_named_as_such(sshd, tmp_path):
    proxy = FaultProxy(sshd.port, after_bytes=1 << 20, mode="cut")
    try:
        known = write_known_hosts(tmp_path / "known_hosts", proxy.port, sshd.host_key_pub)
        error = failure(host(sshd, port=proxy.port, known_hosts=str(known)), "cat > /dev/null",
                        data=os.urandom(8 << 20))
    finally:
        proxy.close()
    assert proxy.tripped.is_set()
    assert "(the link dropped mid-stream)" in error.message, error.message
    assert "host key" not in error.hint and "network" in error.hint
