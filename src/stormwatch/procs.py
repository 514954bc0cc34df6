"""Worker processes that start clean.

Scoring, feature computation and parsing run in pools of worker processes. They used to be
*forked* from the calling process, which is fast but copies every lock that one of the caller's
other threads held at that instant (ONNX Runtime's thread pool, a progress bar's monitor thread, a
database driver's): a worker that then touches such a lock waits for ever, and the pool with it. A
full test run hung that way once at 97 % (session notes 2026-12-05 (c)).

``worker_context`` gives the ``forkserver`` start method where the platform has it: workers are
forked from a small server process that has no other threads, so nothing is copied mid-operation.
The server is started once per process, with this process's environment at that time; the
workers' environment is therefore set from the caller's when each pool starts (``pool_options``), so a
setting changed after the first pool (``STORMWATCH_*``) still reaches them. Where there is no
forkserver (Windows, macOS default), the platform's default start method is used.

As with ``spawn``, a worker imports the calling script as ``__mp_main__``: a script that calls
``ingest``, ``score_new_events`` or ``update_features`` itself needs the usual
``if __name__ == "__main__":`` guard (the ``stormwatch`` command and the benchmarks have it).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Mapping
from multiprocessing.context import BaseContext
from typing import Any

__all__ = ["pool_options", "run_in_env", "worker_context"]


def worker_context(*preload: str) -> BaseContext:
    """The start method for a pool: ``forkserver`` where available, else the platform default.
    ``preload``: modules the server imports before its first fork (only the first call's count:
    the server starts once per process)."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["numpy", *preload])
        return ctx
    return mp.get_context()


def run_in_env(env: Mapping[str, str], fn: Callable[..., Any] | None, *args: Any) -> None:
    """A pool initializer: make the worker's environment the caller's ``env``, then run ``fn``."""
    if os.environ != env:
        os.environ.clear()
        os.environ.update(env)
    if fn is not None:
        fn(*args)


def pool_options(
    initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = (), preload: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Keyword arguments for ``ProcessPoolExecutor``: clean workers with the caller's environment
    as it is now, then ``initializer(*initargs)``."""
    return {
        "mp_context": worker_context(*preload),
        "initializer": run_in_env,
        "initargs": (dict(os.environ), initializer, *initargs),
    }
