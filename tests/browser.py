"""Headless Chromium for tests: load an HTML document, run a script in it, read its answer.

Usage::

    result = evaluate(html, "return document.documentElement.scrollWidth;", width=375)

The script is the body of a function run in the document's window after it has loaded; its
return value (JSON-serializable) comes back. It works through ``chromium --dump-dom``: the
document is laid out in an iframe of the given width (headless windows are at least 500 px
wide), the script's JSON answer is written into a ``<pre>`` of the outer page, and the dumped
DOM is parsed for it. No network: the page is a local file, and Chromium's background services
are off.

``CI=true`` without Chromium fails the calling test (it must not be skipped in CI); elsewhere
the test is skipped with a note.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 60
"""Longest one Chromium run may take, seconds (a cold start under load takes a few)."""
_MARK = "digest-test-result"
_RESULT_RE = re.compile(rf'<pre id="{_MARK}">(.*?)</pre>', re.S)


def chromium() -> str:
    """The Chromium executable; skips the test (fails it when ``CI`` is set) if missing."""
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    message = "headless Chromium is not installed (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def evaluate(
    document: str,
    script: str,
    *,
    width: int = 600,
    height: int = 2000,
    dark: bool = False,
    images: bool = True,
) -> Any:
    """Load ``document`` in headless Chromium and return what ``script`` returns.

    Args:
        document: a complete HTML document.
        script: a JavaScript function body (``return ...;``), run after load.
        width: viewport width, CSS px.
        height: viewport height, CSS px.
        dark: emulate ``prefers-color-scheme: dark``.
        images: load images (``False``: as a mail client with images off).

    Returns:
        The script's return value, decoded from JSON.
    """
    exe = chromium()
    # Headless Chromium's window is at least 500 px wide: the document is laid out in an
    # iframe of exactly ``width`` px, and the script runs in the iframe's own window.
    page = (
        '<!DOCTYPE html><html><body style="margin:0">'
        f'<iframe id="doc" style="border:0;width:{width}px;height:{height}px" '
        f'srcdoc="{html_lib.escape(document, quote=True)}"></iframe>'
        "<script>document.getElementById('doc').addEventListener('load', function () {"
        "var w = this.contentWindow;"
        f"var value = new w.Function({json.dumps(script)})();"
        f"var out = document.createElement('pre'); out.id = '{_MARK}';"
        "out.textContent = JSON.stringify(value); document.body.appendChild(out);"
        "});</script></body></html>"
    )
    blink = [f"preferredColorScheme={0 if dark else 1}"]
    if not images:
        blink.append("imagesEnabled=false")
    with tempfile.TemporaryDirectory(prefix="digest-chromium-") as tmp:
        path = Path(tmp) / "page.html"
        path.write_text(page, encoding="utf-8")
        args = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--window-size={max(width, 800)},{height + 100}",
            f"--blink-settings={','.join(blink)}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            path.as_uri(),
        ]
        done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    found = _RESULT_RE.search(done.stdout)
    assert found is not None, f"no result from Chromium (exit {done.returncode}): {done.stderr}"
    return json.loads(html_lib.unescape(found.group(1)))
