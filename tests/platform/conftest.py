"""Fixtures for tests against a real OpenZFS 2.x host: a qemu guest reached over ssh.

The guest is built once (tests/hosts/openzfs/build, cached in /var/cache/replicator-openzfs)
and booted once per test session; each test gets datasets of its own in the guest's pools
`tank` and `backup`. Without root or qemu the tests skip; under CI (CI=true) they fail.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import NoReturn

import pytest
from packaging.requirements import Requirement

from openzfs_guest import Guest, GuestUnavailable, booted_guest, build_guest

# The end-to-end helpers (cli, host_table, ...) live with the adapter tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adapters"))
from support import Result  # noqa: E402

_numbers = itertools.count()


def unavailable(reason: str) -> NoReturn:
    """Skip: this machine cannot run the guest. Under CI (CI=true) that is a failure."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI must provide this: {reason}", pytrace=False)
    pytest.skip(reason)


def show(request: pytest.FixtureRequest, line: str) -> None:
    """Print past pytest's capture: the first build takes minutes, and should not look hung."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else nullcontext():
        sys.stderr.write(line)
        sys.stderr.flush()


@pytest.fixture(scope="session")
def openzfs_image(request: pytest.FixtureRequest) -> Path:
    """The built guest's directory (kernel, initrd, root image, keys); built if not cached."""
    try:
        return build_guest(lambda line: show(request, line))
    except GuestUnavailable as e:
        unavailable(str(e))


@pytest.fixture(scope="session")
def openzfs_guest(openzfs_image: Path, request: pytest.FixtureRequest) -> Iterator[Guest]:
    """A booted OpenZFS guest with pools `tank` and `backup`, stopped after the session."""
    started = time.monotonic()
    with ExitStack() as stack:
        try:
            guest = stack.enter_context(booted_guest(openzfs_image))
        except GuestUnavailable as e:
            unavailable(str(e))
        show(request, f"[openzfs-guest] up in {time.monotonic() - started:.0f} s on 127.0.0.1:{guest.port} "
                      f"(pid {guest.pid}, kernel {guest.info.get('KERNEL_ABI')}, "
                      f"OpenZFS {guest.info.get('ZFS_VERSION')})\n")
        yield guest


@pytest.fixture
def guest_datasets(openzfs_guest: Guest) -> Iterator[tuple[str, str]]:
    """(tank/tN, backup/tN): fresh parent datasets for one test, destroyed after it."""
    name = f"t{next(_numbers)}"
    parents = (f"tank/{name}", f"backup/{name}")
    for parent in parents:
        openzfs_guest.run("zfs", "create", parent)
    yield parents
    for parent in parents:
        openzfs_guest.run("zfs", "destroy", "-r", parent, check=False)


@dataclass
class GuestReplicator:
    """The replicator CLI installed on the guest, with a host entry for the guest's own sshd."""

    guest: Guest
    pythonpath: str
    self_host: str  # a [hosts.self] table for the config

    def cli(self, config_text: str, *args: str) -> Result:
        """Run `python3 -m replicator ARGS --config C` on the guest with `config_text` as C."""
        config = f"/tmp/replicator-{next(_numbers)}.toml"
        self.guest.sh(f"cat > {config}", input=config_text)
        done = self.guest.sh(f"PYTHONPATH={self.pythonpath} python3 -m replicator "
                             f"{shlex.join(args)} --config {config}", check=False)
        return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="session")
def guest_replicator(openzfs_guest: Guest, openzfs_image: Path) -> GuestReplicator:
    """Copy this checkout's replicator and its runtime dependencies into the guest.

    The dependencies are this virtualenv's installed files: they include compiled modules
    (cffi, greenlet), so the host's Python must be the guest's (Debian 12: 3.11)."""
    guest_python = openzfs_guest.run("python3", "-c", "import sys; print(sys.version_info[:2])").strip()
    ours = str(tuple(sys.version_info[:2]))
    if guest_python != ours:
        unavailable(f"the guest's python3 is {guest_python}, this venv's is {ours}: its compiled "
                    "packages would not load there; run the tests with Python 3.11")
    target = "/opt/replicator"
    openzfs_guest.put(runtime_files(), target, exclude=("__pycache__",))
    # The guest may replicate to itself over ssh, with the test key it accepts.
    key_type, key = (openzfs_image / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    openzfs_guest.sh("install -m 600 /dev/stdin /root/.ssh/id_self",
                     input=(openzfs_image / "id_ed25519").read_bytes())
    openzfs_guest.sh("cat > /root/.ssh/known_hosts_self", input=f"127.0.0.1 {key_type} {key}\n")
    self_host = "[hosts.self]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in {
        "address": "127.0.0.1", "port": 22, "identity_file": "/root/.ssh/id_self",
        "known_hosts": "/root/.ssh/known_hosts_self", "connect_timeout": 30}.items())
    return GuestReplicator(openzfs_guest, target, self_host)


def runtime_files() -> list[Path]:
    """The top-level modules and packages that `import replicator` needs, from this venv."""
    import replicator

    tops = {Path(replicator.__file__).parent}
    todo, seen = list(metadata.requires("replicator") or []), set()
    while todo:
        requirement = Requirement(todo.pop())
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        if requirement.name.lower() in seen:
            continue
        seen.add(requirement.name.lower())
        dist = metadata.distribution(requirement.name)
        todo += dist.requires or []
        for file in dist.files or []:
            top = file.parts[0]
            if not top.endswith((".dist-info", ".pth")) and top not in ("..", "bin"):
                tops.add(Path(dist.locate_file(top)))
    return sorted(tops)
