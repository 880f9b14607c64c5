"""The settings reference is generated from the model, and `digest init` starts a set-up
(issue 25: `.env.example` listed 36 of 64 settings though the README said "all of them")."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from digest.envfile import env_example
from digest.settings import EXAMPLE_SECRET_KEY, Settings, load_settings, setting_names
from tests.factories import run_cli

PROJECT = Path(__file__).resolve().parent.parent


def test_the_env_example_is_the_generated_reference() -> None:
    committed = (PROJECT / ".env.example").read_text(encoding="utf-8")
    assert committed == env_example(), (
        ".env.example is out of date: run `python -m digest.envfile > .env.example`"
    )


def test_every_setting_is_in_the_reference_with_its_meaning() -> None:
    text = env_example()
    for env, field in setting_names().items():
        assert f"{env}=" in text, env
        assert Settings.model_fields[field].description, f"{field} has no description"
    assert f"DIGEST_SECRET_KEY={EXAMPLE_SECRET_KEY}\n" in text


def test_init_writes_a_working_env_and_subscribers_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, output = run_cli("init")
    assert code == 0, output
    env = tmp_path / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600  # it holds the secret key
    settings = load_settings(env_file=env)  # a real key: accepted
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() != EXAMPLE_SECRET_KEY
    code, output = run_cli("validate", "--offline")
    assert code == 0, output
    assert "ok: settings valid, 4 subscribers in subscribers.yaml" in output
    before = env.read_bytes()
    code, output = run_cli("init")
    assert code == 2 and "already there; nothing was written" in output
    assert env.read_bytes() == before
    # Two inits, two keys.
    other = tmp_path / "other"
    other.mkdir()
    assert run_cli("init", str(other))[0] == 0
    assert (other / ".env").read_bytes() != before
