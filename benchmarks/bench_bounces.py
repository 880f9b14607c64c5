"""Benchmark of bounce processing: parsing real bounces, and `digest bounces` over a Maildir.

Prints figures; asserts nothing (CI does not run it). In one run:

1. **Parse**: :func:`digest.bounces.dsn.parse_bounce` on each real fixture of
   ``tests/fixtures/bounces/`` (DSN, ARF, flufl.bounce heuristics), against the reference
   ``email.message_from_bytes`` alone on the same bytes: time per message, min/median/max.
2. **Intake**: :func:`digest.bounces.intake.process_mailbox` over a Maildir of N messages
   (the fixtures, made distinct and re-addressed to one delivery each: its Message-ID and
   its subscriber), each matched by Message-ID: a state commit (``synchronous=FULL``) and a
   rename per message. Messages per second.

Usage::

    .venv/bin/python benchmarks/bench_bounces.py [--messages 1000] [--repeat 200]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from digest.bounces.dsn import parse_bounce  # noqa: E402
from digest.bounces.intake import MaildirBox, Matcher, process_mailbox  # noqa: E402
from digest.bounces.policy import BouncePolicy  # noqa: E402
from digest.state import StateStore  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "bounces"
MAX = 2_000_000


def _times(fn: object, data: bytes, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(data)  # type: ignore[operator]
        out.append(time.perf_counter() - started)
    return out


def parse_figures(repeat: int) -> None:
    print(f"parse ({repeat} runs each; µs per message: min / median / max; ratio to stdlib)")
    ratios = []
    for path in sorted(FIXTURES.glob("*.eml")):
        data = path.read_bytes()
        ours = _times(lambda d: parse_bounce(d, max_bytes=MAX), data, repeat)
        ref = _times(
            lambda d: email.message_from_bytes(d, policy=email.policy.compat32), data, repeat
        )
        ratio = statistics.median(ours) / statistics.median(ref)
        ratios.append(ratio)
        print(
            f"  {path.name:28} {len(data):7,} B  "
            f"{min(ours) * 1e6:7.0f} / {statistics.median(ours) * 1e6:7.0f} / "
            f"{max(ours) * 1e6:7.0f}   stdlib parse {statistics.median(ref) * 1e6:6.0f}  "
            f"×{ratio:.1f}"
        )
    print(
        f"  ratio to the stdlib parse: min ×{min(ratios):.1f}, median "
        f"×{statistics.median(ratios):.1f}, max ×{max(ratios):.1f}"
    )


def intake_figures(messages: int) -> None:
    now = datetime(2026, 8, 21, 9, tzinfo=UTC)
    fixtures = []
    for path in sorted(FIXTURES.glob("*.eml")):
        data = path.read_bytes()
        parsed = parse_bounce(data, max_bytes=MAX)
        fixtures.append((data, parsed.original_message_ids[0], parsed.recipients[0].address))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        box = root / "bounces"
        for sub in ("new", "cur", "tmp"):
            (box / sub).mkdir(parents=True)
        with StateStore(root / "state.sqlite3", now=lambda: now) as store:
            for i in range(messages):
                data, original, recipient = fixtures[i % len(fixtures)]
                mid = original[:-1] + f".{i}>"
                address = f"user{i}@example.org"
                store.claim(address, "2026-08-20", mid)
                store.mark_sent(address, "2026-08-20", "250 OK")
                # Re-addressed to our delivery: its Message-ID and its subscriber.
                body = data.replace(original.encode(), mid.encode())
                body = body.replace(recipient.encode(), address.encode())
                (box / "new" / f"{i:06d}.msg").write_bytes(body)
            started = time.perf_counter()
            report = process_mailbox(
                store,
                MaildirBox(box, max_bytes=MAX),
                policy=BouncePolicy(),
                matcher=Matcher(None, None, ()),
                max_bytes=MAX,
                now=now,
            )
            elapsed = time.perf_counter() - started
    print(
        f"intake: {messages} messages in {elapsed:.2f} s = {messages / elapsed:.0f} messages/s "
        f"({report.bounces} bounces, {report.complaints} complaints, "
        f"{len(report.unrecognised)} kept aside, {len(report.suppressed)} suppressed)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    parse_figures(args.repeat)
    intake_figures(args.messages)


if __name__ == "__main__":
    main()
