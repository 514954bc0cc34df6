"""One active watcher per store: a lease row (``watch_leases``) kept alive by a heartbeat thread.

The watcher that holds the lease works; any other waits on standby and takes over when the lease
is released (a clean stop), expires (a hung or unreachable watcher) or its holder is a dead process
on this host (a killed watcher, taken over at once). The heartbeat renews the lease every third of
its length on its own database connection; when a renewal finds the lease taken, ``held`` turns
False and the watcher stops before its next stage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from datetime import timedelta

from stormwatch.disrupt.models import iso, utcnow
from stormwatch.store import Store, open_store
from stormwatch.store.repos.watch import watch_repo

__all__ = ["LEASE_NAME", "LeaseKeeper"]

log = logging.getLogger("stormwatch.watch")
LEASE_NAME = "watch"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class LeaseKeeper:
    def __init__(self, db_url: str | None, lease_s: float, *, name: str = LEASE_NAME) -> None:
        self.db_url = db_url
        self.lease_s = float(lease_s)
        self.name = name
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._held = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._held.is_set()

    def _conn(self) -> Store:
        if self._store is None:
            self._store = open_store(self.db_url)
        return self._store

    def _reset_conn(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):  # a broken connection is dropped either way
                self._store.close()
        self._store = None

    def _dead_holder(self, store: Store) -> list[str]:
        lease = watch_repo(store).lease(self.name)
        if lease is None or lease.holder == self.holder:
            return []
        parts = lease.holder.rsplit(":", 2)
        if len(parts) == 3 and parts[0] == socket.gethostname() and parts[1].isdigit() and not _alive(int(parts[1])):
            return [lease.holder]
        return []

    def try_acquire(self) -> bool:
        """Take the lease if it is free (or ours); start the heartbeat when taken."""
        with self._lock:
            try:
                store = self._conn()
                now = utcnow()
                got = watch_repo(store).acquire_lease(
                    self.name, self.holder, now=iso(now), lease_until=iso(now + timedelta(seconds=self.lease_s)),
                    take_over=self._dead_holder(store),
                )  # fmt: skip
            except Exception:
                self._reset_conn()
                raise
        if got and not self.held:
            log.info("lease %r taken: this watcher is active", self.name)
            self._held.set()
            self._start_heartbeat()
        return got

    def holder_info(self) -> str:
        with self._lock:
            lease = watch_repo(self._conn()).lease(self.name)
        return "nobody" if lease is None else f"{lease.holder} until {lease.lease_until}"

    def _start_heartbeat(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._beat, name="stormwatch-watch-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            if not self.held:
                return
            try:
                with self._lock:
                    now = utcnow()
                    kept = watch_repo(self._conn()).renew_lease(
                        self.name, self.holder, now=iso(now), lease_until=iso(now + timedelta(seconds=self.lease_s))
                    )
            except Exception as exc:  # a database hiccup: try again at the next beat; the lease may expire
                log.warning("lease renewal failed: %s", type(exc).__name__)
                with self._lock:
                    self._reset_conn()
                continue
            if not kept:
                log.error("lease %r lost to another watcher: going to standby", self.name)
                self._held.clear()
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self.held:
                try:
                    watch_repo(self._conn()).release_lease(self.name, self.holder)
                    log.info("lease %r released", self.name)
                except Exception as exc:
                    log.warning("lease release failed (%s): it expires on its own", type(exc).__name__)
            self._held.clear()
            self._reset_conn()
