"""What each process imports (issue 13: memory). A render worker and a sending process load
only the libraries they use: every module below costs megabytes in every process."""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from digest.core import Digest
from digest.models import Edition
from digest.pipeline.workers import make_message
from digest.ranking import rank
from digest.sources.file import FileSource
from digest.subscribers import Subscriber
from tests.factories import EXAMPLE_DAYS, MESSAGE_SETTINGS, outbox_settings


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


def test_the_embedding_model_is_read_without_importing_wordllama() -> None:
    # wordllama's import brings pydantic's and requests' modules and configures the root
    # logger; its loader keeps a float32 copy of the float16 weights. Its files are enough.
    loaded = imported_after(
        "from digest.ranking.embeddings import WordLlamaEmbedder\n"
        "WordLlamaEmbedder().embed(['legged robots'])"
    )
    assert {"numpy", "tokenizers"} <= loaded
    for heavy in ("wordllama", "safetensors", "requests", "urllib3", "toml"):
        assert heavy not in loaded, heavy


WORKER_SCRIPT = """
import json, pickle, runpy, sys
runpy.run_module('digest.__main__', run_name='__mp_main__')
import digest.pipeline.workers as workers
job = pickle.loads(open(sys.argv[1], 'rb').read())
workers._init_worker(*job['init'])
made = workers._make_many(job['task'], job['part'])
print(json.dumps({'numpy': 'numpy' in sys.modules, 'made': [[m.kind, m.papers] for m in made]}))
"""


def test_a_render_worker_ranks_by_meaning_and_reader_models_without_numpy(tmp_path: Path) -> None:
    # Interests, a liked paper and a reader model (from 👍/👎) rank the same in a render
    # worker as in this process, with what the worker receives: the send's similarity tables
    # once, each task's part of the context. Vectors would need numpy (+17 MB per worker).
    day = date(2026, 8, 18)
    papers = asyncio.run(FileSource(EXAMPLE_DAYS).fetch(day))
    edition, when = Edition.daily(day), datetime(2026, 8, 18, 7, 30, tzinfo=UTC)
    subscribers = [
        Subscriber(email="interests@example.org", interests=("robots that learn to walk",)),
        Subscriber(email="liked@example.org", like=(papers[3].arxiv_id,), max_papers=4),
        Subscriber(email="rated@example.org", keywords=("video",)),
        Subscriber(email="keywords@example.org", keywords=("diffusion",)),
    ]
    settings = outbox_settings(tmp_path, **MESSAGE_SETTINGS)
    with Digest(settings) as digest:
        for p in papers[:4]:
            digest.store.record_feedback("rated@example.org", p.arxiv_id, "like")
        digest.store.record_feedback("rated@example.org", papers[-1].arxiv_id, "dislike")
        context = digest.ranking.build_now(papers, subscribers, edition=edition)
        assert set(context.learned) == {"rated@example.org"}
        here = [
            make_message(
                settings, lambda: digest.renderer, edition, papers, s, when, "<m@x>", context
            )
            for s in subscribers
        ]
    job = {
        "init": (settings, edition, {None: papers}, when, context.for_workers([papers])),
        "task": [(sub, "<m@x>") for sub in subscribers],
        "part": context.part(sub.email for sub in subscribers),
    }
    (tmp_path / "job.pickle").write_bytes(pickle.dumps(job))
    out = subprocess.run(
        [sys.executable, "-c", WORKER_SCRIPT, str(tmp_path / "job.pickle")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    worker = json.loads(out.splitlines()[-1])
    assert not worker["numpy"]
    assert worker["made"] == [["message", list(m[2])] for m in here if m is not None]
    for sub, made in zip(subscribers[:3], here, strict=False):  # ranked by meaning, not upvotes
        assert made is not None and made[2] != tuple(r.paper.arxiv_id for r in rank(papers, sub))


SEND_SCRIPT = """
import asyncio, json, pickle, sys
from digest.core import Digest
from digest.models import Edition
settings, day = pickle.loads(open(sys.argv[1], 'rb').read())
with Digest(settings) as digest:
    digest.render_min_batch = 1
    digest.ranking.process_min_batch = 1
    subs = digest.load_subscribers().subscribers
    summary = asyncio.run(digest.send(Edition.daily(day), subs))
print(json.dumps({'sent': summary.sent, 'errors': summary.errors,
                  'loaded': sorted({m.split('.')[0] for m in sys.modules})}))
"""


def test_a_send_with_reader_models_loads_no_numpy_in_the_sending_process(
    tmp_path: Path,
) -> None:
    # Interests, a liked paper, a library and 👍/👎 (a model): the context's numeric half runs
    # in a child process, the messages in a render worker. The sending process, which holds
    # every subscriber for the whole send, never loads numpy, the tokenizer or the model.
    day = date(2026, 8, 18)
    papers = asyncio.run(FileSource(EXAMPLE_DAYS).fetch(day))
    older = asyncio.run(FileSource(EXAMPLE_DAYS).fetch(date(2026, 8, 17)))
    (tmp_path / "mine.bib").write_text(
        "\n".join(
            f"@article{{e{i}, title = {{{p.title}}}, abstract = {{{p.abstract}}}, year = 2026}}"
            for i, p in enumerate(older[:5])
        ),
        encoding="utf-8",
    )
    (tmp_path / "subscribers.yaml").write_text(
        "subscribers:\n"
        "  - {email: interests@example.org, interests: [robots that learn to walk]}\n"
        f"  - {{email: liked@example.org, like: ['{papers[3].arxiv_id}']}}\n"
        "  - {email: library@example.org, library: mine.bib}\n"
        "  - {email: rated@example.org, keywords: [video]}\n",
        encoding="utf-8",
    )
    settings = outbox_settings(tmp_path, sources=f"file:{EXAMPLE_DAYS}", **MESSAGE_SETTINGS)
    with Digest(settings) as digest:
        for p in papers[:4]:
            digest.store.record_feedback("rated@example.org", p.arxiv_id, "like")
    (tmp_path / "job.pickle").write_bytes(pickle.dumps((settings, day)))
    out = subprocess.run(
        [sys.executable, "-c", SEND_SCRIPT, str(tmp_path / "job.pickle")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.splitlines()[-1])
    assert result["sent"] == 4, result["errors"]
    for heavy in ("numpy", "tokenizers", "safetensors", "threadpoolctl", "wordllama"):
        assert heavy not in result["loaded"], heavy
