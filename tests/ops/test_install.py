"""scripts/install.sh into a throwaway root: the installed program runs, as root and as nobody."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from replicator import __version__

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install.sh"
# A clean environment: no venv of ours, no pyenv, so the installed program must stand alone.
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root", "LANG": "C.UTF-8"}


@pytest.fixture
def root():
    if os.geteuid() != 0:
        pytest.skip("the install test runs `serve` as nobody, which needs root")
    # Traversable by nobody, unlike pytest's 0700 tmp_path.
    path = Path(tempfile.mkdtemp(prefix="replicator-install-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def install(root: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    # The installer gets this environment (the machine's certificates and proxies, which uv
    # needs to reach the package index) less what points into this checkout's virtualenv.
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT")}
    done = subprocess.run(["bash", str(INSTALL), "--root", str(root), *extra], env=env,
                          capture_output=True, text=True)
    assert not check or done.returncode == 0, done.stderr
    return done


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    # From /, so that `python -c` cannot import this checkout instead of the installed copy.
    return subprocess.run(argv, env=kwargs.pop("env", ENV), capture_output=True, text=True, cwd="/", **kwargs)


def test_install_runs_for_root_and_nobody_and_uninstalls(root):
    install(root)
    binary = root / "usr/local/bin/replicator"
    assert binary.is_symlink()
    assert run([str(binary), "--version"]).stdout.strip() == f"replicator {__version__}"
    # The system's interpreter, not one under /root that ProtectHome= hides.
    cfg = (root / "opt/replicator/pyvenv.cfg").read_text()
    assert re.search(r"^home = /usr/bin$", cfg, re.M), cfg
    assert not (root / "opt/replicator/bin/python").resolve().is_relative_to("/root")
    # The code lives in the venv, not in this checkout.
    where = run([str(root / "opt/replicator/bin/python"), "-c", "import replicator; print(replicator.__file__)"])
    assert where.stdout.startswith(str(root / "opt/replicator/lib/")), where

    unit = (root / "usr/local/lib/systemd/system/replicator.service").read_text()
    docs = re.findall(r"^Documentation=(.*)$", unit, re.M)
    assert docs
    for url in " ".join(docs).split():
        assert (root / url.removeprefix("file:///")).is_file(), url
    assert "/usr/local/bin/replicator daemon" in unit

    config = root / "etc/replicator/config.toml"
    assert config.read_text() == (REPO / "config.example.toml").read_text()
    checked = run([str(binary), "check-config", "--config", str(config)])
    assert checked.returncode == 0, checked.stderr
    assert "OK, 2 job(s)" in checked.stdout

    probe = run(["runuser", "-u", "nobody", "--", str(binary), "serve", "--role", "send", "--root", "/srv"],
                env=dict(ENV, SSH_ORIGINAL_COMMAND="replicator-endpoint"))
    assert probe.returncode == 0, probe.stderr
    answer = json.loads(probe.stdout)
    assert (answer["endpoint"], answer["version"], answer["role"]) == ("replicator", __version__, "send")
    refused = run(["runuser", "-u", "nobody", "--", str(binary), "serve", "--role", "send", "--root", "/srv"],
                  env=dict(ENV, SSH_ORIGINAL_COMMAND="rm -rf /"))
    assert refused.returncode == 2 and "rejected" in refused.stderr

    # Again, over an edited config: upgraded in place, the config kept.
    config.write_text(config.read_text() + "\n# edited by the admin\n")
    again = install(root)
    assert "kept the existing" in again.stderr
    assert config.read_text().endswith("# edited by the admin\n")

    install(root, "--uninstall")
    assert not (root / "opt/replicator").exists()
    assert not binary.exists() and not binary.is_symlink()
    assert not (root / "usr/local/lib/systemd/system/replicator.service").exists()
    assert not (root / "usr/share/doc/replicator").exists()
    assert config.read_text().endswith("# edited by the admin\n")


def test_uninstall_refuses_a_directory_that_is_not_its_venv(root):
    (root / "opt/replicator").mkdir(parents=True)
    (root / "opt/replicator/precious").write_text("data")
    failed = install(root, "--uninstall", check=False)
    assert failed.returncode == 2 and "not a virtualenv" in failed.stderr
    assert (root / "opt/replicator/precious").read_text() == "data"
