"""One writer per workdir: ``train.py`` holds a lease, ``<workdir>/LEASE.json``, while it runs.

The lease is a JSON object naming its holder: ``job_id`` (random, one per launch, shared by all
processes of a multi-process job), ``host``, ``pid``, ``processes``, ``started``, ``code`` (the
commit, :func:`dog_jax.provenance.code_label`), ``commit`` (in full) and ``heartbeat`` (the last time the holder showed
it is alive; ``*_unix`` fields carry the times as numbers). It is written with conditional writes
(:mod:`dog_jax.storage.conditional`: create-if-absent, replace/delete-if-unchanged), locally or
on a bucket alike, so two launches never both believe they hold it.

* :func:`acquire` creates it. If another launch holds it, :class:`LeaseHeld` (``train.py``: one
  ``error:`` line naming the holder, exit :data:`EXIT_LEASE_HELD`). A lease whose holder is gone is
  taken over with one warning: same host and its pid no longer exists; other host and no heartbeat
  for ``config.lease_timeout_s`` (hosts' clocks are assumed to agree to well within that); or
  ``--takeover_lease`` (the user knows it is dead).
* Process 0 refreshes the heartbeat every ``config.lease_heartbeat_s`` from a daemon thread; a
  refresh that finds the lease changed (taken over) or gone (the workdir removed) records it and stops.
* A stray writer cannot write: :meth:`Lease.check` (called by the trainer's ``Checkpointer``
  before every checkpoint write: one read of the lease) raises :class:`LeaseLost` (``train.py``:
  one line, exit :data:`EXIT_LEASE_HELD`) if another job holds the lease now, or a
  :class:`~dog_jax.train.checkpoint.StorageFailure` naming the vanished workdir (exit 74) if it is
  gone; :meth:`Lease.raise_if_lost` does the same after every step, without a read, once the
  heartbeat found it out. Either way the run writes nothing more.
* :meth:`Lease.release` deletes it if it is still this job's: at a normal end, a stop (exit 75) or
  an error. After ``kill -9`` (and after a storage failure, exit 74, whose storage may not answer)
  it stays, and the next launch on the same host takes it over at once; on another host after
  ``lease_timeout_s`` or with ``--takeover_lease``.

Multi-process: process 0 takes the lease and broadcasts the job id to all processes
(``multihost_utils.broadcast_one_to_all`` of 17 bytes: taken?, job id); every other process then
reads the lease and continues only if it names that job id, so a process of another job never
writes. Readers (``dog_jax.evaluate``, ``export``, ``analysis``) take no lease.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time
import uuid
from typing import Any

import jax
import numpy as np
from absl import logging

from dog_jax import provenance
from dog_jax.storage import conditional, join, make_dirs
from dog_jax.train.checkpoint import CheckpointError, StorageFailure
from dog_jax.train.failure_report import short_reason

__all__ = ["EXIT_LEASE_HELD", "LEASE_FILE", "Lease", "LeaseHeld", "LeaseLost", "acquire"]

LEASE_FILE = "LEASE.json"
# EX_CANTCREAT from sysexits.h: the run cannot create its output because another run owns the
# workdir. Distinct from 1 (fix the command) and 75 (rerun to resume): rerunning fails until it ends.
EXIT_LEASE_HELD = 73

_HELD: set[str] = set()  # job ids whose lease this process holds now
# A check before a write that cannot read the lease gives up after this (a dead storage server would
# otherwise keep the run retrying for the client's default two minutes before the write's own limit).
_CHECK_RETRY_S = 10.0


class LeaseHeld(CheckpointError):
    """The workdir's lease belongs to another run that looks alive; the message names it and the ways out."""


class LeaseLost(StorageFailure):
    """This run's lease was taken over by another job while it ran: it stops without writing more
    (``train.py`` exits :data:`EXIT_LEASE_HELD` at once, abandoning a checkpoint write in flight)."""


# What process 0 found when it read the lease (broadcast to the other processes as one byte).
_HELD_OK, _TAKEN, _GONE, _UNREADABLE = 0, 1, 2, 3


def _now_iso(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def describe(holder: dict[str, Any], now: float | None = None) -> str:
    """``job <id> on host <h> (pid <p>, started <t>, last heartbeat <n> s ago, code <c>)``."""
    now = time.time() if now is None else now
    age = now - float(holder.get("heartbeat_unix", 0))
    return (f"job {holder.get('job_id', '?')} on host {holder.get('host', '?')} (pid {holder.get('pid', '?')}, "
            f"started {holder.get('started', '?')}, last heartbeat {age:.0f} s ago, code {holder.get('code', '?')})")


def holder_gone(holder: dict[str, Any], timeout_s: float, now: float | None = None) -> str | None:
    """Why the holder of a lease is known to be gone, or None if it may still run."""
    now = time.time() if now is None else now
    if holder.get("host") == socket.gethostname():
        pid = holder.get("pid")
        if pid == os.getpid():
            return None if holder.get("job_id") in _HELD else "this process no longer runs that job"
        return None if isinstance(pid, int) and _pid_alive(pid) else f"its process {pid} no longer exists"
    age = now - float(holder.get("heartbeat_unix", 0))
    return f"no heartbeat for {age:.0f} s (lease_timeout_s={timeout_s:g})" if age > timeout_s else None


class Lease:
    """This job's lease on a workdir (process 0 holds the object's generation and heartbeats)."""

    def __init__(self, path: str, job_id: str, record: dict[str, Any] | None = None, generation: str | None = None):
        self.path, self.job_id, self.record, self.generation = path, job_id, record, generation
        self.workdir = path.rsplit("/", 1)[0]
        # Set by the heartbeat thread when it finds the lease taken over or gone: (_TAKEN|_GONE, holder).
        self.lost: tuple[int, dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _HELD.add(job_id)

    def start_heartbeat(self, every_s: float) -> None:
        """Refreshes ``heartbeat`` every ``every_s`` seconds from a daemon thread (process 0)."""
        self._thread = threading.Thread(target=self._beat, args=(every_s,), name="dog_jax-lease", daemon=True)
        self._thread.start()

    def _beat(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            with self._lock:
                if self.generation is None or self._stop.is_set():
                    return
                now = time.time()
                record = {**self.record, "heartbeat": _now_iso(now), "heartbeat_unix": now}
                try:
                    generation = conditional.replace(self.path, _encode(record), self.generation)
                except Exception as error:  # noqa: BLE001 -- storage hiccup: try again next time
                    logging.warning("Lease heartbeat on %s failed (%s); retrying in %g s.", self.path,
                                    " ".join(str(error).split())[:200], every_s)
                    continue
                if generation is None:
                    found = _read_holder(self.path)
                    self.lost = (_GONE, {}) if found is None else (_TAKEN, found)
                    logging.warning("The lease %s %s; this run no longer owns its workdir and stops before its "
                                    "next write.", self.path, "is gone" if found is None else "was taken over by "
                                    f"{describe(found)}")
                    self.generation = None
                    return
                self.record, self.generation = record, generation

    def check(self, last_complete: str) -> None:
        """Raises if this run no longer holds the lease: :class:`LeaseLost` (another job took it) or
        :class:`StorageFailure` (it is gone, or cannot be read). One read by process 0, whose finding
        every process receives (``broadcast_one_to_all``: all of them call this at the same point)."""
        outcome, holder = self.lost or (_HELD_OK, {})
        if jax.process_index() == 0 and self.lost is None:
            try:
                found = _read_holder(self.path)
            except Exception as error:  # noqa: BLE001 -- the storage failed: one line, not a stack
                outcome, holder = _UNREADABLE, {"error": short_reason(error)}
            else:
                outcome, holder = (_GONE, {}) if found is None else \
                    (_HELD_OK, found) if found.get("job_id") == self.job_id else (_TAKEN, found)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            agreed = multihost_utils.broadcast_one_to_all(np.asarray([outcome], np.int32))
            outcome = int(np.asarray(agreed)[0])
        self._raise(outcome, holder, last_complete)

    def raise_if_lost(self, last_complete: str) -> None:
        """:meth:`check` without a read: raises only if the heartbeat already found the lease lost
        (one process: the heartbeat runs on process 0 only, so several processes wait for :meth:`check`)."""
        if self.lost is not None and jax.process_count() == 1:
            self._raise(*self.lost, last_complete)

    def _raise(self, outcome: int, holder: dict[str, Any], last_complete: str) -> None:
        if outcome == _HELD_OK:
            return
        self.generation = None  # not ours any more: never refreshed or deleted
        if outcome == _TAKEN:
            who = describe(holder) if holder else "another job (process 0 read its lease)"
            raise LeaseLost(f"this run's lease on workdir {self.workdir} was taken over by {who}; it stopped without "
                            f"writing more ({last_complete})", "That run owns the workdir now: pass another "
                            "--workdir, or rerun this command once that run has ended")
        if outcome == _GONE:
            raise StorageFailure(f"workdir {self.workdir} vanished while this run wrote to it: its lease {self.path} "
                                 f"is gone (the directory removed or replaced?); it stopped without writing more "
                                 f"({last_complete}, if still there)", "Rerun the same command once the storage "
                                 "is back: it resumes from the newest checkpoint left in the workdir, or starts over")
        raise StorageFailure(f"reading the lease {self.path} failed: {holder.get('error', 'process 0 could not')}; "
                             f"{last_complete}")

    def release(self, *, remove: bool = True) -> None:
        """Stops the heartbeat and deletes the lease if it is still this job's (never raises).

        ``remove=False`` (after a :class:`StorageFailure`, whose storage may not answer for minutes)
        leaves it, as a kill would: the next launch on this host takes it over at once."""
        self._stop.set()
        _HELD.discard(self.job_id)
        if not remove:
            return
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._lock:
            generation, self.generation = self.generation, None
        if generation is None:
            return
        try:
            current = conditional.read(self.path)
            if current is not None and _decode(current[0]).get("job_id") == self.job_id:
                conditional.delete(self.path, current[1])
        except Exception as error:  # noqa: BLE001 -- the run's own outcome matters more
            logging.warning("Could not remove the lease %s (%s); the next launch takes it over.", self.path,
                            " ".join(str(error).split())[:200])

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, error_type, *_) -> None:
        self.release(remove=not (error_type is not None and issubclass(error_type, StorageFailure)))


def _read_holder(path: str) -> dict[str, Any] | None:
    """The lease's record (``{}`` if unreadable), or None if there is no lease."""
    current = conditional.read(path, retry_s=_CHECK_RETRY_S)
    return None if current is None else _decode(current[0])


def _encode(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=1) + "\n").encode()


def _decode(content: bytes) -> dict[str, Any]:
    try:
        record = json.loads(content)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _take(path: str, workdir: str, job_id: str, *, timeout_s: float, takeover: bool) -> Lease:
    """Process 0: creates the lease, or takes over a gone holder's; LeaseHeld otherwise."""
    _HELD.add(job_id)  # before the create: a launch in this process that reads it must see it alive
    try:
        return _take_held(path, workdir, job_id, timeout_s=timeout_s, takeover=takeover)
    except BaseException:
        _HELD.discard(job_id)
        raise


def _take_held(path: str, workdir: str, job_id: str, *, timeout_s: float, takeover: bool) -> Lease:
    now, code = time.time(), provenance.code_version()
    record = {"job_id": job_id, "host": socket.gethostname(), "pid": os.getpid(), "processes": jax.process_count(),
              "started": _now_iso(now), "code": provenance.code_label({"code": code}), "commit": code.get("commit"),
              "heartbeat": _now_iso(now), "started_unix": now, "heartbeat_unix": now}
    for _ in range(10):  # each pass loses at most one race against another launch
        generation = conditional.create(path, _encode(record))
        if generation is not None:
            return Lease(path, job_id, record, generation)
        current = conditional.read(path)
        if current is None:
            continue  # released in between
        holder = _decode(current[0])
        if holder.get("job_id") == job_id:  # our create succeeded, but its answer was lost (retried)
            return Lease(path, job_id, record, current[1])
        reason = "--takeover_lease" if takeover else holder_gone(holder, timeout_s) if holder else "unreadable lease"
        if reason is None:
            raise LeaseHeld(f"workdir {workdir} is in use by {describe(holder)}; wait for that run to end, pass "
                            "another --workdir, or rerun with --takeover_lease once it is known to be dead.")
        generation = conditional.replace(path, _encode(record), current[1])
        if generation is not None:
            logging.warning("Taking over the lease on %s from %s: %s.", workdir, describe(holder), reason)
            return Lease(path, job_id, record, generation)
    raise LeaseHeld(f"workdir {workdir}: its lease {path} keeps changing (other launches compete for it); "
                    "make sure one run writes to it.")


def acquire(workdir: str, *, timeout_s: float = 600.0, heartbeat_s: float = 60.0, takeover: bool = False) -> Lease:
    """Takes this job's lease on ``workdir`` (all processes call it together); release it with
    :meth:`Lease.release` or ``with``.

    Raises:
      LeaseHeld: another run holds the lease and is not known to be gone (``takeover`` takes it anyway).
    """
    make_dirs(workdir)
    path = join(workdir, LEASE_FILE)
    job_id = uuid.uuid4().hex
    if jax.process_count() == 1:
        lease = _take(path, workdir, job_id, timeout_s=timeout_s, takeover=takeover)
        lease.start_heartbeat(heartbeat_s)
        return lease
    from jax.experimental import multihost_utils

    lease, failure = None, None
    if jax.process_index() == 0:
        try:
            lease = _take(path, workdir, job_id, timeout_s=timeout_s, takeover=takeover)
        except Exception as error:  # noqa: BLE001 -- re-raised after telling the other processes
            failure = error
    message = np.frombuffer(bytes([failure is None]) + bytes.fromhex(job_id), dtype=np.uint8)
    agreed = bytes(np.asarray(multihost_utils.broadcast_one_to_all(message)).astype(np.uint8).tolist())
    if failure is not None:
        raise failure
    if not agreed[0]:
        raise LeaseHeld(f"process 0 could not take the lease on workdir {workdir} (its error line says why).")
    if lease is not None:
        lease.start_heartbeat(heartbeat_s)
        return lease
    job_id = agreed[1:].hex()
    current = conditional.read(path)
    holder = _decode(current[0]) if current is not None else {}
    if holder.get("job_id") != job_id:
        found = describe(holder) if holder else "no lease"
        raise LeaseHeld(f"workdir {workdir}: process {jax.process_index()} finds {found} instead of this job's "
                        f"lease {job_id} (every process must see the same workdir, on shared storage).")
    return Lease(path, job_id)
