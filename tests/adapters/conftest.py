"""Fixtures shared by the endpoint tests (test_serve, test_pull)."""

import pytest

from replicator.sandbox import loopback_sshd


@pytest.fixture(scope="module")
def endpoint_sshd(tmp_path_factory):
    """An sshd of our own whose authorized_keys each test points at the endpoint it needs."""
    with loopback_sshd(tmp_path_factory.mktemp("serve-sshd")) as server:
        yield server
