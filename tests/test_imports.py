"""What each process imports (issue 13: memory). A render worker and a sending process load
only the libraries they use: every module below costs megabytes in every process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def imported_after(code: str) -> set[str]:
    """The top-level packages in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    listing = "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    probe = f"{code}\nimport json, sys\n{listing}"
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_a_render_worker_imports_no_delivery_source_or_cli_library() -> None:
    # What a spawned worker runs: the main module again as __mp_main__, then the worker's own.
    loaded = imported_after(
        "import runpy\n"
        "runpy.run_module('digest.__main__', run_name='__mp_main__')\n"
        "import digest.pipeline.workers"
    )
    assert "digest" in loaded and "pydantic_settings" in loaded
    heavy_ones = ("numpy", "httpx", "feedparser", "aiosmtplib", "typer", "rich", "dkim", "psycopg")
    for heavy in (*heavy_ones, "prometheus_client"):
        assert heavy not in loaded, heavy


def test_the_cli_loads_neither_premailer_nor_numpy_nor_dkim_until_used() -> None:
    loaded = imported_after("import digest.cli")
    heavy_ones = ("premailer", "cssutils", "lxml", "requests", "numpy", "dkim")
    for heavy in (*heavy_ones, "prometheus_client"):
        assert heavy not in loaded, heavy


def test_a_send_without_metrics_never_loads_prometheus_client() -> None:
    # `digest send` counts nothing (digest.metrics.NO_METRICS); only a registry loads it.
    loaded = imported_after(
        "import digest.core, digest.delivery.engine, digest.pipeline.send, digest.reputation\n"
        "from digest.metrics import NO_METRICS\nNO_METRICS.smtp_reply(250, 'a@gmail.com')"
    )
    assert "prometheus_client" not in loaded


@pytest.mark.parametrize(
    ("code", "package"),
    [
        ("from digest.render import Renderer; Renderer()", "premailer"),
        ("from digest.render import unmark", "premailer"),
        ("from digest.ranking.embeddings import Vectors", "numpy"),
        ("from digest.metrics import Metrics; Metrics()", "prometheus_client"),
    ],
)
def test_the_heavy_libraries_load_where_they_are_used(code: str, package: str) -> None:
    assert package in imported_after(code)


def test_the_console_script_as_a_spawned_worker_runs_it_loads_no_cli() -> None:
    # `digest send` (the script pip writes) is what a spawned worker runs again as
    # __mp_main__: its top level must import no more than `python -m digest` does.
    script = Path(sys.executable).with_name("digest")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (pip install -e . writes it)")
    text = script.read_text(encoding="utf-8")
    assert "digest.__main__" in text and "import run" in text, text
    loaded = imported_after(
        f"import runpy\nrunpy.run_path({str(script)!r}, run_name='__mp_main__')\n"
        "import digest.pipeline.workers"
    )
    for heavy in ("numpy", "httpx", "feedparser", "aiosmtplib", "typer", "rich", "dkim"):
        assert heavy not in loaded, heavy
