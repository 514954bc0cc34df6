"""Worker pools start clean (stormwatch.procs): no lock another thread of the caller holds is copied
into a worker, and a worker sees the caller's environment as it is when the pool starts."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ProcessPoolExecutor

import pytest

from stormwatch.procs import pool_options, worker_context

# held by a thread of the test process while the pool starts; a forked worker would inherit it held
LOCK = threading.Lock()


def _lock_is_free() -> bool:
    ok = LOCK.acquire(timeout=2)
    if ok:
        LOCK.release()
    return ok


def _env(name: str) -> str | None:
    return os.environ.get(name)


def _remember(name: str) -> None:
    os.environ["STORMWATCH_TEST_INIT"] = f"init saw {os.environ.get(name)}"


def test_a_worker_does_not_inherit_a_lock_held_by_another_thread() -> None:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with LOCK:
            held.set()
            release.wait(60)

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert held.wait(10)
    try:
        with ProcessPoolExecutor(max_workers=1, **pool_options()) as pool:
            # a forked worker copies LOCK as held and waits for ever for a release that never comes
            assert pool.submit(_lock_is_free).result(timeout=120) is True
    finally:
        release.set()
        t.join(10)


def test_workers_see_the_environment_of_when_their_pool_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMWATCH_TEST_PROCS", "first")
    with ProcessPoolExecutor(max_workers=1, **pool_options()) as pool:
        assert pool.submit(_env, "STORMWATCH_TEST_PROCS").result(timeout=120) == "first"
    # the fork server keeps the environment it started with; the next pool still gets the new one
    monkeypatch.setenv("STORMWATCH_TEST_PROCS", "second")
    monkeypatch.delenv("STORMWATCH_TEST_INIT", raising=False)
    with ProcessPoolExecutor(max_workers=1, **pool_options(_remember, ("STORMWATCH_TEST_PROCS",))) as pool:
        assert pool.submit(_env, "STORMWATCH_TEST_PROCS").result(timeout=120) == "second"
        # the initializer runs after the environment is set, and what it sets stays
        assert pool.submit(_env, "STORMWATCH_TEST_INIT").result(timeout=120) == "init saw second"


def test_forkserver_where_the_platform_has_it() -> None:
    import multiprocessing as mp

    ctx = worker_context()
    expected = "forkserver" if "forkserver" in mp.get_all_start_methods() else mp.get_start_method()
    assert ctx.get_start_method() == expected
