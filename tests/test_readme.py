"""The README's commands work when pasted, in order, in a fresh checkout (issue 25, point 4).

Every ```sh block of the README whose commands are all ``digest`` runs (the first command's
``python3 -m venv … && .venv/bin/pip install …`` part is the only other thing allowed, and is
skipped: this interpreter already has digest) is run in README order, in a fresh copy of the
repository's files, with ``.venv/bin/digest`` → this interpreter's ``-m digest``. Blocks for
servers (``sudo``, systemd), benchmarks and the tests themselves are not run. The network is
a local HTTP server standing in for the Hugging Face API; no SMTP relay (mail goes to a
Maildir, as the README says).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.httpserver import LocalHTTPServer

PROJECT = Path(__file__).resolve().parent.parent
DIGEST = ".venv/bin/digest"
_SKIPPED_PARTS = ("python3 -m venv ", ".venv/bin/pip ")
COMMAND_TIMEOUT_S = 120


def readme_commands(text: str) -> list[list[str]]:
    """The argument lists of the README's runnable ``digest`` commands, in order."""
    out: list[list[str]] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines = [ln.split(" #")[0].strip() for ln in block.splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("#")]
        commands = [
            part.strip()
            for ln in lines
            for part in ln.split("&&")
            if not part.strip().startswith(_SKIPPED_PARTS)
        ]
        if commands and all(c.startswith(DIGEST + " ") for c in commands):
            out.extend(shlex.split(c)[1:] for c in commands)
    return out


def test_the_parser_finds_the_commands_a_user_pastes() -> None:
    text = (
        "```sh\npython3 -m venv .venv && .venv/bin/pip install -q -e . && "
        ".venv/bin/digest --env-file x send --date 2026-08-20\n```\n"
        "```sh\nsudo .venv/bin/digest run\n```\n"
        "```sh\n.venv/bin/digest init   # writes .env\n.venv/bin/digest send\n```\n"
    )
    assert readme_commands(text) == [
        ["--env-file", "x", "send", "--date", "2026-08-20"],
        ["init"],
        ["send"],
    ]


def _fresh_checkout(target: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True, check=False)
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    for name in files.stdout.decode().split("\0"):
        if not name:
            continue
        source = PROJECT / name
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            dest.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, dest)
    return target


@pytest.mark.slow
def test_every_readme_command_works_as_pasted(tmp_path: Path) -> None:
    commands = readme_commands((PROJECT / "README.md").read_text(encoding="utf-8"))
    assert len(commands) >= 6, commands  # the demo, its follow-ups, the set-up
    checkout = _fresh_checkout(tmp_path / "digest")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    with LocalHTTPServer() as hf:
        # Any date: the bundled capture of 2026-08-20 (the set-up's commands use yesterday).
        hf.add("/api/daily_papers", file=EXAMPLES / "hf-daily-papers" / "2026-08-20.json")
        env["DIGEST_HF_API_URL"] = hf.url("/api/daily_papers")
        for args in commands:
            done = subprocess.run(
                [sys.executable, "-m", "digest", *args],
                cwd=checkout,
                env=env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
            )
            output = done.stdout + done.stderr
            assert done.returncode == 0, f"digest {' '.join(args)}:\n{output}"
            assert "Traceback" not in output and "error:" not in output, output
    demo = checkout / "demo" / "outbox" / "new"
    assert len(list(demo.iterdir())) == 3  # the demo's three daily subscribers, once
    assert (checkout / ".env").exists() and (checkout / "subscribers.yaml").exists()
    assert list((checkout / "outbox" / "new").iterdir())  # the set-up's own sends
