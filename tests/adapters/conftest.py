"""Fixtures shared by the endpoint tests (test_serve, test_pull, test_hostile_source)."""

from contextlib import ExitStack

import pytest

from replicator.sandbox import loopback_sshd
from replicator.sandbox.btrfs import subvolume_mount


@pytest.fixture(scope="module")
def endpoint_sshd(tmp_path_factory):
    """An sshd of our own whose authorized_keys each test points at the endpoint it needs."""
    with loopback_sshd(tmp_path_factory.mktemp("serve-sshd")) as server:
        yield server


@pytest.fixture
def receive_root(make_btrfs):
    """receive_root(fs, path) -> path: a `serve --role receive` directory root as the docs lay
    one out, a subvolume of btrfs `fs` mounted alone at `path`, nosuid,nodev. Unmounted before
    `fs` goes away."""
    with ExitStack() as stack:
        yield lambda fs, path: stack.enter_context(subvolume_mount(fs, path))

