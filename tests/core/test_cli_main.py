"""The command line imports only the subcommand it runs, and its --help says what the modules say."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

import pytest

from replicator.cli import main

HEAVY = ("asyncssh", "trio_asyncio", "trio", "structlog", "croniter")


def imported_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\n"
                          f"print('imported:', *(m for m in {HEAVY!r} if m in sys.modules))"],
                         check=True, capture_output=True, text=True).stdout
    return out.rsplit("imported:", 1)[1].split()


def test_importing_the_cli_imports_no_engine():
    assert imported_after("import replicator.cli.main") == []


def test_help_imports_no_subcommand():
    code = ("import replicator.cli.main as m\ntry:\n    m.main(['--help'])\nexcept SystemExit:\n    pass")
    assert imported_after(code) == []


def test_serve_imports_neither_ssh_nor_trio():
    code = ("import replicator.cli.main as m\ntry:\n    m.main(['serve', '--help'])\nexcept SystemExit:\n    pass")
    assert imported_after(code) == []


def test_the_table_says_what_each_module_says():
    parser = main.build_parser(main.SUBCOMMANDS)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {action.dest: action.help for action in commands._choices_actions}
    assert helps == {sub.name: sub.help for sub in main.SUBCOMMANDS}
    for sub in main.SUBCOMMANDS:
        assert commands.choices[sub.name].get_default("handler") is not None, sub.name


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as stop:
        main.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for sub in main.SUBCOMMANDS:
        assert sub.name in out and sub.help[:30] in out


def test_a_subcommand_gets_its_own_options(capsys):
    with pytest.raises(SystemExit) as stop:
        main.main(["prune", "--help"])
    assert stop.value.code == 0
    assert "--dry-run" in capsys.readouterr().out


def test_an_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main.main(["snapshots"])
    assert stop.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_status_and_trigger_reach_the_daemon_without_the_engine():
    # The engine, trio and structlog come only when status answers without a daemon.
    assert imported_after("import replicator.cli.status, replicator.cli.trigger") == []


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path):
    """`replicator import-btrbk | head -1`: the reader is gone before replicator writes. The run
    ends with 128+SIGPIPE, as a shell tool killed by SIGPIPE would, and prints no traceback."""
    conf = tmp_path / "btrbk.conf"
    conf.write_text("".join(f"volume /mnt/pool{i}\n  subvolume data{i}\n" for i in range(2000)))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        run = subprocess.run([sys.executable, "-c", "from replicator.cli.main import entry; entry()",
                              "import-btrbk", str(conf)],
                             stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert run.returncode == 128 + signal.SIGPIPE, run.stderr
    assert "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr, run.stderr
