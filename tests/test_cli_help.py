"""``ibfab``'s help and bash completion: every argument of every command says what it is, and the
completion script that ``ibfab completion`` prints completes commands, options, choices, fabric
names and node names in a real bash."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import pytest

from fabric.cli import build_parser


def _arguments(parser, path=("ibfab",)):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from _arguments(sp, path + (name,))
        elif not isinstance(a, argparse._HelpAction):
            yield " ".join(path), a


def test_every_argument_has_help():
    missing = [(cmd, a.option_strings or a.dest) for cmd, a in _arguments(build_parser()) if not a.help]
    assert not missing, missing


@pytest.fixture
def completion(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = tmp_path / "ibfab.bash"
    r = subprocess.run([sys.executable, "-m", "fabric.cli", "completion"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    script.write_text(r.stdout)
    base = tmp_path / "base"
    (base / "demo").mkdir(parents=True)
    # a fabric.json as the launcher writes it (indented), without a fabric behind it
    with open(base / "demo" / "fabric.json", "w") as f:
        json.dump({"name": "demo", "hosts": [{"devices": ["leaf01", "node0001"]}, {"devices": ["node0002"]}]}, f,
                  indent=1)

    def complete(*words) -> list:
        line = " ".join(f"'{w}'" for w in words)
        prog = (f'source "{script}"; COMP_WORDS=({line}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); _ibfab; '
                'printf "%s\\n" "${COMPREPLY[@]}"')
        r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, IBFAB_RUN_BASE=str(base)))
        assert r.returncode == 0, r.stderr
        return [x for x in r.stdout.split("\n") if x]

    return complete


def test_completion_of_commands_options_and_choices(completion):
    assert completion("ibfab", "sta") == ["status"]
    assert set(completion("ibfab", "")) >= {"up", "down", "status", "ping", "perf", "completion"}
    assert completion("ibfab", "up", "fattree:2,2,2,2", "--sm", "o") == ["ours", "opensm"]
    assert set(completion("ibfab", "perf", "a", "b", "--l")) == {"--latency"}
    assert completion("ibfab", "link", "--name", "x", "leaf01", "2", "") == ["up", "down"]
    assert completion("ibfab", "tool", "node0001", "--", "ibn") == []  # another program's arguments


def test_completion_of_fabric_and_node_names(completion):
    assert completion("ibfab", "status", "--name", "d") == ["demo"]
    assert completion("ibfab", "ping", "--name", "demo", "no") == ["node0001", "node0002"]
    assert completion("ibfab", "ping", "--name", "demo", "node0001", "") == ["leaf01", "node0001", "node0002"]
    assert completion("ibfab", "ping", "--name", "nosuch", "") == []
