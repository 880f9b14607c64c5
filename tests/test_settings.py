"""Settings: layering (defaults, .env, environment, flags), validation, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.errors import ConfigError
from digest.settings import load_settings


def test_defaults_then_env_file_then_environment_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / ".env"
    env.write_text("DIGEST_SOURCES=file:a\nDIGEST_SMTP_CONCURRENCY=8\nDIGEST_FROM=A <a@x.org>\n")
    assert load_settings(env_file=None).source_specs == ["hf"]
    assert load_settings(env_file=env).smtp_concurrency == 8
    monkeypatch.setenv("DIGEST_SMTP_CONCURRENCY", "2")
    settings = load_settings(env_file=env, sources="hf,file:b")
    assert settings.smtp_concurrency == 2
    assert settings.source_specs == ["hf", "file:b"]
    assert settings.sender == "A <a@x.org>"


@pytest.mark.parametrize(
    ("host", "allowed", "ok"),
    [
        ("127.0.0.1", False, True),
        ("localhost", False, True),
        ("::1", False, True),
        ("smtp.example.org", False, False),
        ("smtp.example.org", True, True),
    ],
)
def test_plaintext_smtp_is_refused_off_loopback(host: str, allowed: bool, ok: bool) -> None:
    def load() -> object:
        return load_settings(
            env_file=None, smtp_host=host, smtp_security="none", smtp_allow_plaintext=allowed
        )

    if ok:
        load()
    else:
        with pytest.raises(ConfigError, match="DIGEST_SMTP_ALLOW_PLAINTEXT"):
            load()


def test_every_problem_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_SMTP_PORT", "seventy")
    monkeypatch.setenv("DIGEST_SMTP_SECURITY", "ssl")
    monkeypatch.setenv("DIGEST_SOURCES", "hf,gopher:x")
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    fields = sorted(p.split(":", 1)[0] for p in info.value.problems)
    assert fields == ["DIGEST_SMTP_PORT", "DIGEST_SMTP_SECURITY", "DIGEST_SOURCES"]


def test_unsubscribe_url_must_be_https_and_token_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="DIGEST_UNSUBSCRIBE_URL"):
        load_settings(env_file=None, unsubscribe_url="http://x.org/u?t={token}")
    with pytest.raises(ConfigError, match="DIGEST_SECRET_KEY"):
        load_settings(env_file=None, unsubscribe_url="https://x.org/u?t={token}")


def test_secrets_never_show_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_SMTP_PASSWORD", "hunter2-secret")
    key = "key-material-xyz-0123456789abcdefghij"
    monkeypatch.setenv("DIGEST_SECRET_KEY", key)
    monkeypatch.setenv("DIGEST_SMTP_USERNAME", "u")
    settings = load_settings(env_file=None)
    assert "hunter2-secret" not in repr(settings) and key not in str(settings)
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "hunter2-secret"
    monkeypatch.setenv("DIGEST_SMTP_PORT", "bad")
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    assert "hunter2-secret" not in str(info.value.problems)
