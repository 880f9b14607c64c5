"""Group commit: the state writes queued while one transaction commits share the next one.

:class:`GroupCommitter` is the state-writer thread of a send (``digest-state``). Callers
submit writes (``store.claim``, ``store.mark_sent``...) and wait for their futures, as with a
one-thread executor; the difference is how the thread applies them::

    submit ──▶ queue ──▶ thread: take every queued write (at most max_ops)
                           │
                           ├─ with store.transaction():  write 1, write 2, … write k
                           │     one COMMIT, one fsync for the k writes
                           │
                           └─ then each future gets its own result (a refused claim: False)

While a commit waits for the disk (SQLite releases the GIL), the senders' next writes queue
up and go together into the next transaction, so a pool of N connections needs about one
fsync per round of N writes instead of N. A write's future is resolved only after the
transaction that holds it has committed: a claim is durable before its message is handed to
the transport, a mark before it is reported; exactly what one transaction per write gives.

If anything in a batch raises (a write's error, the commit itself), the batch is rolled back
whole and its writes are applied again one by one, each in its own transaction as without
group commit, so each caller gets exactly its own result or exception and one bad write
never changes what the others did.

Writes in one batch come from callers that each wait for their own write, so none depends on
another of the same batch; keyed writes (:meth:`GroupCommitter.submit_keyed`) are applied in
key order, so two processes sharing a PostgreSQL state lock the rows of their batches in the
same order and cannot deadlock each other.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from digest.state.store import StateBackend

log = logging.getLogger(__name__)

GROUP_COMMIT_MAX_OPS = 64
"""The most writes one group transaction holds: bounds how long a write may wait behind
others (a send has one write in flight per connection, so its batches are smaller)."""

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(slots=True)
class _Write:
    future: concurrent.futures.Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    key: tuple[str, ...] | None = None


@dataclass(slots=True)
class GroupStats:
    """What a :class:`GroupCommitter` did so far.

    Attributes:
        writes: writes applied (each submitted call counts once, however it was applied).
        transactions: transactions begun: one per group, plus one per write applied alone
            (a group of one, or each write of a failed group; a backend write method applied
            alone is one transaction).
        groups: groups of two or more writes committed together.
        fallbacks: groups that failed and were applied one by one instead.
        largest: the most writes one transaction held.
    """

    writes: int = 0
    transactions: int = 0
    groups: int = 0
    fallbacks: int = 0
    largest: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


_STOP = object()


class GroupCommitter(concurrent.futures.Executor):
    """A one-thread executor of state writes that commits the writes queued together at once.

    Use it where a ``ThreadPoolExecutor(max_workers=1)`` would do (``loop.run_in_executor``
    accepts it); :meth:`submit` calls must be writes of ``store`` (or functions that only
    call ``store``), since they run inside :meth:`~digest.state.store.Store.
    transaction`. See the module docstring for the guarantees.

    Args:
        store: the state backend the writes go to.
        max_ops: the most writes per transaction (≥ 1; 1 disables grouping).
        name: the thread's name.

    Attributes:
        stats: counts of writes and transactions (:class:`GroupStats`).
    """

    def __init__(
        self,
        store: StateBackend,
        *,
        max_ops: int = GROUP_COMMIT_MAX_OPS,
        name: str = "digest-state",
    ) -> None:
        if max_ops < 1:
            raise ValueError("max_ops must be ≥ 1")
        self._store = store
        self._max_ops = max_ops
        self._queue: queue.SimpleQueue[_Write | object] = queue.SimpleQueue()
        self._shutdown = False
        self._shutdown_lock = threading.Lock()
        self.stats = GroupStats()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> concurrent.futures.Future[_T]:
        """Queue ``fn(*args, **kwargs)``; its future resolves once its transaction committed.

        Raises:
            RuntimeError: after :meth:`shutdown`.
        """
        return self._put(_Write(concurrent.futures.Future(), fn, args, kwargs))

    def submit_keyed(
        self, key: tuple[str, ...], fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> concurrent.futures.Future[_T]:
        """Like :meth:`submit`, for a write about the row ``key`` (``(subscriber, edition)``).

        A batch made only of keyed writes is applied in key order (see the module docstring).
        """
        return self._put(_Write(concurrent.futures.Future(), fn, args, kwargs, key))

    def _put(self, write: _Write) -> concurrent.futures.Future[Any]:
        with self._shutdown_lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new writes after shutdown")
            self._queue.put(write)
        return write.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Apply what is queued (or cancel it: ``cancel_futures``), then stop the thread.

        Args:
            wait: wait for the thread to finish.
            cancel_futures: cancel the writes not started yet instead of applying them.
        """
        with self._shutdown_lock:
            if not self._shutdown:
                self._shutdown = True
                if cancel_futures:
                    while True:
                        try:
                            item = self._queue.get_nowait()
                        except queue.Empty:
                            break
                        if isinstance(item, _Write):
                            item.future.cancel()
                self._queue.put(_STOP)
        if wait:
            self._thread.join()

    # -- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, _Write)
            batch = [item]
            while len(batch) < self._max_ops:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Write)
                batch.append(item)
            self._apply([w for w in batch if w.future.set_running_or_notify_cancel()])

    def _apply(self, batch: list[_Write]) -> None:
        if not batch:
            return
        if len(batch) == 1:
            self._alone(batch[0])
            return
        if all(w.key is not None for w in batch):
            batch.sort(key=lambda w: w.key or ())
        results: list[Any] = []
        try:
            with self._store.transaction():
                for w in batch:
                    results.append(w.fn(*w.args, **w.kwargs))
        except Exception as e:
            log.debug(
                "group commit of %d writes failed (%s); applying them one by one", len(batch), e
            )
            with self.stats._lock:
                self.stats.fallbacks += 1
                self.stats.transactions += 1
            for w in batch:
                self._alone(w)
            return
        except BaseException as e:  # interpreter shutdown: no caller waits forever
            for w in batch:
                w.future.set_exception(e)
            raise
        with self.stats._lock:
            self.stats.writes += len(batch)
            self.stats.transactions += 1
            self.stats.groups += 1
            self.stats.largest = max(self.stats.largest, len(batch))
        for w, result in zip(batch, results, strict=True):
            w.future.set_result(result)

    def _alone(self, w: _Write) -> None:
        """Apply one write in its own transaction (the backend method commits it)."""
        with self.stats._lock:
            self.stats.writes += 1
            self.stats.transactions += 1
            self.stats.largest = max(self.stats.largest, 1)
        try:
            result = w.fn(*w.args, **w.kwargs)
        except BaseException as e:
            w.future.set_exception(e)
            if not isinstance(e, Exception):
                raise
        else:
            w.future.set_result(result)
