"""The agent process: join the hub, heartbeat, receive attempts, run them, report back.

Threads: one long-polls the hub for assignments and cancels (no busy polling of the hub), one
sends heartbeats, and the main loop polls the backend for the truth about every attempt it holds
and reports changes in batches. Every accepted attempt is journaled before it is acknowledged,
so after a restart the agent re-attaches to what it was running (or reports what happened).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import start_http_server
from pydantic import ValidationError

from cpnet import __version__
from cpnet.agent import tls
from cpnet.agent.backends import get_backend
from cpnet.agent.backends.base import (
    Backend,
    BackendConfig,
    BackendError,
    Handle,
    Job,
    JobStatus,
    PoolCapacity,
    PoolDecl,
)
from cpnet.agent.journal import Entry, Journal
from cpnet.agent.metering import load_or_create_key, signed_record
from cpnet.agent.netprobe import NetProber, ProbeListener
from cpnet.agent.probe import measure_pool
from cpnet.agent.protocol import HeartbeatReply, RegisterResult, UpdateOutcome
from cpnet.agent.runner import SECRETS_FILE
from cpnet.agent.settings import AgentConfigError, AgentSettings, check_bind, check_listen
from cpnet.auth.model import Role
from cpnet.client import CpnetError, Stopped, Unauthorized
from cpnet.registry.model import Accelerator, Hardware, PoolDescriptor, PoolType
from cpnet.siteclient import SiteClient
from cpnet.tasks.model import MAX_TRANSFERS, Assignment, AttemptUpdate, TransferRecord
from cpnet.tasks.secrets import DATA_KEY
from cpnet.tasks.states import State
from cpnet.telemetry import logs
from cpnet.telemetry.metrics import AgentMetrics

log = logging.getLogger("cpnet.agent")

POLL_S = 0.1  # how often the backend's truth is read for held attempts (those that changed)
FULL_POLL_S = 1.0  # how often every held attempt is read, whatever the backend says changed
LONG_POLL_S = 25.0  # how long the hub may hold an assignments request before answering
MAX_BATCH = 500
ACCEPT_THREADS = 4
REMOVE_FOR_S = 120.0  # how long an ended attempt's work dir removal is retried
ENDED_MEMORY = 100_000  # ended attempt ids remembered against late re-deliveries
PROGRESS_EVERY_S = 1.0  # at most one progress-only update per attempt this often
TRANSFERS_BUDGET_BYTES = 256 * 1024  # of transfer records in one final update (more: counted)
BATCH_BYTES = 512 * 1024  # an update batch stays well under the hub's 1 MiB body limit
PROGRESS_ONLY = {"attempt_id", "state", "at", "progress"}  # the fields of a progress report
_KEPT = ("accepted", "duplicate")  # usage record verdicts that settlement charges by


R = TypeVar("R")


class AgentError(Exception):
    """A problem that stops the agent, with what to do about it."""


class HubRefused(AgentError):
    """The hub answered 4xx (other than 401/403): sending the same request again cannot help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# Fields an attempt update can do without: dropped (in this order) when the update as built is
# invalid or the hub refuses it, so that at least its state reaches the hub.
DETAIL_FIELDS = ("executor_logs", "outputs", "transfers", "transfers_omitted", "system_logs")


def to_decl(p: PoolDescriptor) -> PoolDecl:
    hw = p.hardware
    acc = hw.accelerators[0] if hw.accelerators else None
    return PoolDecl(
        name=p.name,
        type=p.type.value,
        total=PoolCapacity(hw.cpu_cores, hw.memory_gb, hw.disk_gb, hw.gpus),
        cpu_model=hw.cpu_model,
        gpu_model=acc.model if acc else None,
        gpu_memory_gb=acc.memory_gb if acc else None,
        labels=dict(p.labels),
        can_run_images=p.can_run_images,
    )


def to_descriptor(d: PoolDecl) -> PoolDescriptor:
    acc = []
    if d.total.gpus and d.gpu_model:
        acc = [Accelerator(model=d.gpu_model, count=d.total.gpus, memory_gb=d.gpu_memory_gb or 0)]
    return PoolDescriptor(
        name=d.name,
        type=PoolType(d.type),
        hardware=Hardware(
            cpu_model=d.cpu_model,
            cpu_cores=d.total.cpu_cores,
            memory_gb=d.total.ram_gb,
            disk_gb=d.total.disk_gb,
            accelerators=acc,
        ),
        labels=d.labels,
        can_run_images=d.can_run_images,
    )


def pools_changed(before: list[PoolDecl], now: list[PoolDecl]) -> tuple[list[str], list[str]]:
    """(names of pools new or changed, names of pools gone) between two discoveries.

    A pool changed when anything it registers with differs (its hardware, type, labels); the
    order in which a backend lists its pools does not matter. Both empty: nothing to tell the hub.
    """
    old = {d.name: d for d in before}
    new = {d.name: d for d in now}
    changed = sorted(n for n, d in new.items() if old.get(n) != d)
    gone = sorted(set(old) - set(new))
    return changed, gone


def _now() -> datetime:
    return datetime.now(UTC)


def trim_transfers(recs: list[TransferRecord]) -> tuple[list[TransferRecord], int]:
    """The transfer records one update carries (at most MAX_TRANSFERS, and no more JSON than
    TRANSFERS_BUDGET_BYTES), and how many were left out."""
    kept: list[TransferRecord] = []
    size = 0
    for r in recs[:MAX_TRANSFERS]:
        size += len(r.model_dump_json())
        if size > TRANSFERS_BUDGET_BYTES:
            break
        kept.append(r)
    return kept, len(recs) - len(kept)


class Agent:
    """One agent serving one site."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        ca = str(settings.ca_file) if settings.ca_file else None
        self.hub = SiteClient(
            settings.hub_url.rstrip("/"), settings.token, stop=self.stop, ca_file=ca
        )
        work = settings.work_dir
        work.mkdir(parents=True, exist_ok=True)
        if settings.ca_file is not None:
            # Task runners inherit it: they trust the hub's CA and the public roots.
            os.environ["SSL_CERT_FILE"] = str(tls.trust_bundle(work / "tls", settings.ca_file))
        self.client_cert = tls.ClientCert(work / "tls") if settings.client_cert == "auto" else None
        decls = [to_decl(p) for p in settings.pools] or None
        self.backend: Backend = get_backend(settings.backend)(
            BackendConfig(
                work_root=work / "attempts",
                pools=decls,
                options=dict(settings.options),
                hub_url=settings.hub_url.rstrip("/"),
                hub_token=settings.token,
            )
        )
        self.journal = Journal(work / "journal")
        self.usage_key = load_or_create_key(work)  # signs usage records (docs/market.md)
        self.scu_rates: dict[str, dict[str, float]] = {}  # pool name -> profile -> SCU rate
        self.entries: dict[str, Entry] = {}
        # The backend's handle of each attempt it accepted (the journal keeps ``str`` of it).
        self.handles: dict[str, Handle] = {}
        # Attempts that ended here and whose end the hub acknowledged (newest last, bounded). A
        # long poll answered from a snapshot taken before that acknowledgement can still carry
        # one as an assignment; it must not run a second time.
        self.ended: dict[str, None] = {}
        self.lock = threading.Lock()
        self.pending: deque[AttemptUpdate] = deque()
        self.last_state: dict[str, State] = {}
        # Progress reports: the last one queued per attempt and when (rate limit), and the
        # progress-only update still waiting in `pending` (a newer one replaces its content).
        self.last_progress: dict[str, tuple[float, object]] = {}
        self.progress_queued: dict[str, AttemptUpdate] = {}
        self.accepting = ThreadPoolExecutor(ACCEPT_THREADS, thread_name_prefix="accept")
        # Work dirs of ended attempts still to remove: their handle, when to try next (monotonic)
        # and when to give up.
        self.leftovers: dict[Path, tuple[Handle, float, float]] = {}
        self.site_id = ""
        self.decls: list[PoolDecl] = []
        self.measuring = threading.Event()  # set while probes run
        self.asked: dict[str, float] = {}  # measurement requests acted on: pool -> asked at
        self.prices = {p.name: p.price for p in settings.pools}
        self.declared = {p.name: p.declared for p in settings.pools if p.declared}
        self.slas = {p.name: p.sla for p in settings.pools if p.sla}  # SLA terms per pool
        # Registration and heartbeats take turns, so a heartbeat never names a pool the hub was
        # just told is gone (that would bring it back online) or one not yet registered.
        self.hub_lock = threading.Lock()
        self.netprobe = NetProber(
            rtt_hub=lambda: self.hub.probe_download(0),
            download_hub=self.hub.probe_download,
            post=lambda batch: self._hub(self.hub.post_samples, self.site_id, batch),
            interval_s=settings.network_probe_interval_s,
            probe_bytes=settings.network_probe_bytes,
        )
        self.listener: ProbeListener | None = None  # --probe-listen, started on run()
        self.metrics = AgentMetrics(self._held_states)
        self.metrics_server: Any = None  # --metrics-listen, started on run()

    # ---- talking to the hub ----

    def _hub(self, call: Callable[..., R], *args: Any) -> R:
        """Call the hub through the SDK's site client, which retries while the hub is
        unreachable or failing (it may restart) until the agent stops; its errors become the
        agent's here, at this one boundary."""
        try:
            return call(*args)
        except Stopped:
            raise AgentError("stopping") from None
        except Unauthorized as exc:
            raise AgentError(f"the hub refused this agent's token: {exc}") from None
        except CpnetError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                raise HubRefused(exc.status, f"HTTP {exc.status} ({exc.code}): {exc}") from None
            raise AgentError(str(exc)) from None

    def renew_cert(self) -> None:
        """Get a client certificate, or a new one when the current one is 2/3 through its life
        (no-op without ``client_cert = "auto"``)."""
        cert = self.client_cert
        if cert is not None and cert.due(time.time()):
            self._hub(cert.renew, self.hub)

    def join(self) -> RegisterResult:
        """Find our site from the token, register our pools, re-attach journaled attempts."""
        self.renew_cert()
        who = self._hub(self.hub.whoami)
        if who.role is not Role.AGENT or not who.site_id:
            raise AgentError(
                "this token is not a site token: create one with "
                "`cpnet admin site token SITE_ID` and pass it with --token"
            )
        self.site_id = who.site_id
        decls = self.backend.discover()
        with self.hub_lock:
            res = self._register(decls)
        for e in self.journal.load():
            if e.done:
                self.journal.remove(e.attempt_id)
                continue
            self.entries[e.attempt_id] = e
            if e.reported:
                self.last_state[e.attempt_id] = State(e.reported)
            if e.handle is None:
                self._start(e)
            else:
                self._reattach(e, e.handle)
        if self.entries:
            log.info("re-attached %d attempts after restart", len(self.entries))
        return res

    def _register(self, decls: list[PoolDecl]) -> RegisterResult:
        """Tell the hub this agent's pools (all of them: the hub takes pools left out offline)."""
        pools = [to_descriptor(d) for d in decls]
        images = self.backend.images
        for p in pools:
            # Whether executors' images run here: in a runtime, or (if allowed) on the host.
            # A backend that runs images itself (Kubernetes) says so in its pools already.
            if not p.can_run_images:
                p.can_run_images = images.accepts_images
                p.labels = {**p.labels, **images.labels()}
            if p.name in self.prices:
                p.price = self.prices[p.name]
            p.declared = self.declared.get(p.name)
            p.sla = self.slas.get(p.name)
        body = {
            "endpoint": self.settings.endpoint,
            "agent_version": __version__,
            "backend": self.settings.backend,
            "heartbeat_interval_s": self.settings.heartbeat_interval_s,
            "pools": [p.model_dump(mode="json") for p in pools],
            "usage_key": {"public_key": self.usage_key.public_key_b64},
        }
        if self.settings.probe_listen:
            body["probe_url"] = f"http://{self.settings.probe_listen}"
        res = self._hub(self.hub.register, self.site_id, body)
        for name, notes in res.capacity_notes.items():
            for note in notes:
                log.warning("pool %s capacity: %s", name, note)
        self.decls = list(decls)
        return res

    # ---- pools that follow the cluster's shape ----

    def rediscover_once(self) -> bool:
        """Ask the backend for its pools again; re-register if they changed. True if they did.

        Pools that vanished go offline at the hub (keeping their identifiers, and any attempt
        still running there keeps running); new pools are probed like those found on joining.
        """
        decls = self.backend.rediscover()
        changed, gone = pools_changed(self.decls, decls)
        if not changed and not gone:
            return False
        with self.hub_lock:
            res = self._register(decls)
        log.info(
            "pools changed (new or different: %s; gone: %s); registered %s",
            ", ".join(changed) or "none",
            ", ".join(gone) or "none",
            res.pools,
        )
        self.heartbeat_once()  # registration assumed everything free: tell the truth at once
        if changed and self.settings.measure_on_join:
            self.measure_in_background(changed)
        return True

    def rediscover_loop(self) -> None:
        """Re-discover every ``rediscover_interval_s`` seconds, and at once when the backend
        signals that its cluster changed shape."""
        every = self.settings.rediscover_interval_s
        due = time.monotonic() + every
        while not self.stop.is_set():
            signalled = self.backend.shape_changed.wait(1.0)
            if self.stop.is_set():
                break
            if not signalled and (not every or time.monotonic() < due):
                continue
            self.backend.shape_changed.clear()
            due = time.monotonic() + every
            try:
                self.rediscover_once()
            except BackendError as exc:
                log.warning("re-discovery: %s; keeping the pools found before", exc)
            except AgentError as exc:
                if not self.stop.is_set():
                    log.error("re-registration: %s", exc)
            except Exception:
                log.exception("re-discovery failed")

    # ---- calibration ----

    def measure_once(self, names: list[str] | None = None) -> dict:
        """Probe every pool (or those named) as a job of that pool and send the reports.

        Returns the hub's answer. A pool whose probe fails is logged and left out; the others
        are still reported.
        """
        reports = []
        for decl in self.decls:
            if self.stop.is_set():
                break
            if names is not None and decl.name not in names:
                continue
            try:
                report = measure_pool(
                    self.backend,
                    decl,
                    self.settings.work_dir / "probes",  # backends may choose their own
                    budget_s=self.settings.measure_budget_s,
                    cores=self.backend.probe_cores,
                    stop=self.stop,
                    keep_work_dir=self.settings.keep_work_dirs,
                )
            except Exception as exc:  # ProbeFailed or worse: one pool's probe must not stop us
                log.warning("probe of pool %s failed: %s", decl.name, exc)
                continue
            log.info(
                "pool %s measured in %.1f s: %s", decl.name, report.duration_s, report.cpu.given()
            )
            reports.append({"name": decl.name, "probe": report.model_dump(mode="json")})
        if not reports:
            return {}
        body = {"pools": reports}
        answer = self._hub(self.hub.measurements, self.site_id, body)
        for name, vec in (answer.get("capacity") or {}).items():
            scu = vec.get("scu") if isinstance(vec, dict) else None
            if isinstance(scu, dict):
                self.scu_rates[name] = {k: float(v) for k, v in scu.items() if v}
        return answer

    def measure_loop(self, names: list[str] | None = None) -> None:
        try:
            self.measure_once(names)
        except AgentError as exc:
            if not self.stop.is_set():
                log.error("measurements: %s", exc)
        except Exception:
            log.exception("measurements failed")
        finally:
            self.measuring.clear()

    def measure_in_background(self, names: list[str] | None = None) -> bool:
        """Start probing (all pools, or those named) unless probes are running already."""
        with self.lock:
            if self.measuring.is_set():
                return False
            self.measuring.set()
        threading.Thread(
            target=self.measure_loop, args=(names,), name="measure", daemon=True
        ).start()
        return True

    # ---- telemetry ----

    def _held_states(self) -> dict[str, int]:
        """How many attempts held here are in each state (the metric cpnet_agent_attempts)."""
        with self.lock:
            states = [
                self.last_state.get(aid, State.QUEUED).value
                for aid, e in self.entries.items()
                if not e.done
            ]
        return dict(Counter(states))

    def _ids(self, e: Entry) -> dict[str, str | None]:
        """What an attempt's log lines carry (telemetry/logs.py): ids, and the trace id of the
        request that created its task."""
        return {
            "task_id": e.task_id,
            "attempt_id": e.attempt_id,
            "trace_id": e.trace_id,
            "site_id": self.site_id or None,
        }

    # ---- assignments ----

    def _accept(self, a: Assignment) -> None:
        """Accept and start one assignment (what `assignment_loop` does for a whole reply)."""
        for taken in self._take([a]):
            self._launch(taken)

    def _take(self, assignments: list[Assignment]) -> list[tuple[Entry, Job]]:
        """Journal the assignments not seen before with one durable write for them all (before
        the hub hears of them: a restart will find them) and hold them; their entries and jobs,
        to start."""
        taken: list[tuple[Entry, Job]] = []
        with self.lock:
            seen: set[str] = set()
            for a in assignments:
                aid = a.attempt_id
                if aid in self.entries or aid in self.ended or aid in seen:
                    continue
                seen.add(aid)
                job = Job(aid, a.task_id, a.pool_name, a.spec, self.settings.work_dir)
                e = Entry(
                    aid,
                    a.task_id,
                    a.pool_name,
                    job.to_dict(),
                    pool_id=a.pool_id,
                    trace_id=a.trace_id,
                )
                taken.append((e, job))
            self.journal.save_batch([e for e, _ in taken])
            for e, _ in taken:
                self.entries[e.attempt_id] = e
        self.metrics.accepted.inc(len(taken))
        return taken

    def _launch(self, taken: tuple[Entry, Job]) -> None:
        e, job = taken
        log.info("attempt accepted on pool %s", e.pool_name, extra=self._ids(e))
        self._start(e, job)

    def _reattach(self, e: Entry, text: str) -> None:
        """The handle a previous run of this agent journaled, read back by the backend."""
        try:
            self.handles[e.attempt_id] = self.backend.handle(text)
        except BackendError as exc:  # not this backend's (its work dir moved): lost
            log.error(
                "attempt %s: cannot re-attach %s: %s", e.attempt_id, text, exc, extra=self._ids(e)
            )
            self.metrics.backend_errors.labels("reattach").inc()
            self._queue(e, JobStatus(State.SYSTEM_ERROR, f"cannot re-attach the attempt: {exc}"))

    def _start(self, e: Entry, job: Job | None = None) -> None:
        """Hand the attempt to the backend: `job` as accepted, or (after a restart) the one
        its journal entry keeps."""
        job = job if job is not None else Job.from_dict(e.job)
        if job.spec.data_key or any(ex.secret_env for ex in job.spec.executors):
            try:
                self._deliver_secrets(e.attempt_id)
            except AgentError as exc:
                log.error("secrets of %s: %s", e.attempt_id, exc, extra=self._ids(e))
                self.metrics.backend_errors.labels("secrets").inc()
                self._queue(e, JobStatus(State.SYSTEM_ERROR, f"cannot get its secrets: {exc}"))
                return
        try:
            handle = self.backend.submit(job)
        except Exception as exc:  # the backend refused: that is this attempt's system error
            log.exception("submit of %s failed", e.attempt_id, extra=self._ids(e))
            self.metrics.backend_errors.labels("submit").inc()
            self._queue(e, JobStatus(State.SYSTEM_ERROR, f"backend refused the job: {exc}"))
            return
        # Queue INITIALIZING before the poll loop can see the handle, so this attempt's reports
        # reach the hub in order.
        self._queue(e, JobStatus(State.INITIALIZING, None))
        e.handle = str(handle)
        self.handles[e.attempt_id] = handle
        # Not fsynced: after a crash of the machine the attempt's processes are gone too, and
        # a restart without the handle submits again, which the backend turns into adopting it.
        self.journal.save(e, durable=False)

    def _deliver_secrets(self, attempt_id: str) -> None:
        """Fetch the attempt's secret env values (and data key) from the hub into SECRETS_FILE
        (mode 0600) in its work dir, where its runner reads and deletes them first thing; they
        are never in job.json or the journal (docs/security.md, "Secrets")."""
        got = self._hub(self.hub.attempt_secrets, self.site_id, attempt_id)
        work_dir = self.backend.work_dir_for(attempt_id)
        work_dir.mkdir(parents=True, exist_ok=True)
        path = work_dir / SECRETS_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        values = dict(got.get("executors") or {})
        if got.get("data_key"):
            values[DATA_KEY] = {"key": got["data_key"]}
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(values, f)

    def _cancel(self, attempt_id: str) -> None:
        handle = self.handles.get(attempt_id)
        if handle is not None:
            self.backend.cancel(handle)

    def assignment_loop(self) -> None:
        while not self.stop.is_set():
            try:
                got = self._hub(self.hub.assignments, self.site_id, LONG_POLL_S)
            except AgentError as exc:
                if not self.stop.is_set():
                    log.error("%s", exc)
                    self.stop.wait(2)
                continue
            # One durable journal write for the whole reply, then the starts, which are mostly
            # waiting (on secrets from the hub, on process start-up): overlap a few.
            list(self.accepting.map(self._launch, self._take(got.assignments)))
            for aid in got.cancel:
                self._cancel(aid)
            if not got.assignments and not got.cancel:
                continue
            # Cancels stay listed until the attempt ends; do not spin on them.
            if got.cancel and not got.assignments:
                self.stop.wait(0.5)

    # ---- heartbeats ----

    def heartbeat_once(self) -> None:
        with self.hub_lock:
            reply = self._heartbeat()
        self._heard(reply)

    def _heartbeat(self) -> HeartbeatReply:
        known = {d.name for d in self.decls}  # only pools the hub was told of
        live = [p for p in self.backend.live() if p.name in known]
        with self.lock:
            running = [aid for aid, e in self.entries.items() if not e.done]
        body = {
            "pools": [
                {
                    "name": p.name,
                    "free": {
                        "cpu_cores": max(0.0, p.free.cpu_cores),
                        "ram_gb": max(0.0, p.free.ram_gb),
                        "disk_gb": max(0.0, p.free.disk_gb),
                        "gpus": max(0, p.free.gpus),
                    },
                    "queue_length": p.queue_length,
                    "running": p.running,
                }
                for p in live
            ],
            "running_attempts": running,
        }
        return self._hub(self.hub.heartbeat, self.site_id, body)

    def _heard(self, reply: HeartbeatReply) -> None:
        # Pools someone asked to be probed again; each request is acted on once (a probe that
        # fails is not retried every heartbeat: the request stays pending at the hub).
        if reply.probe and self.settings.network_probe_interval_s > 0:
            self.netprobe.ask_peers(reply.probe)
        asked = {n: at for n, at in reply.measure.items() if self.asked.get(n) != at}
        if asked and self.measure_in_background(list(asked)):
            self.asked.update(asked)
        for aid in reply.cancel:
            self._cancel(aid)
        for aid in reply.unknown:
            with self.lock:
                st = self.last_state.get(aid)
                held = aid in self.entries
            if not held or (st is not None and st.terminal):
                continue  # it just ended and the hub has its final state: nothing to stop
            # The hub gave this attempt up (e.g. we were offline too long): stop it here.
            log.warning("hub no longer expects %s here; stopping it", aid)
            self._cancel(aid)
            e = self.entries.get(aid)
            if e is not None:
                e.done = True
                self.journal.save(e)

    def heartbeat_loop(self) -> None:
        while not self.stop.wait(self.settings.heartbeat_interval_s):
            try:
                self.renew_cert()
                self.heartbeat_once()
            except AgentError as exc:
                if not self.stop.is_set():
                    log.error("heartbeat: %s", exc)
            except Exception:
                log.exception("heartbeat failed")

    # ---- the truth from the backend, reported ----

    def _queue(self, e: Entry, st: JobStatus) -> None:
        with self.lock:
            prev = self.last_state.get(e.attempt_id)
            if prev == st.state:
                return
            self.last_state[e.attempt_id] = st.state
            at = _now()
            progress = None
            if st.progress is not None and not st.state.terminal:
                self.last_progress[e.attempt_id] = (time.monotonic(), st.progress)
                progress = st.progress.model_copy(update={"at": at})
            # A later progress report must not be folded into one queued before this change.
            self.progress_queued.pop(e.attempt_id, None)
            transfers, omitted = trim_transfers(st.transfers) if st.state.terminal else ([], 0)
            if e.started_at is None and st.state in (State.INITIALIZING, State.RUNNING):
                e.started_at = at.timestamp()
            if st.state.terminal and st.transfers:
                self.netprobe.saw_transfers(st.transfers)  # throughput the staging measured
            if st.state.terminal:
                self.metrics.ended.labels(st.state.value).inc()
                for rec in st.transfers:
                    self.metrics.staged_bytes.labels(rec.direction).inc(rec.size_bytes)
                log.info(
                    "attempt ended: %s%s",
                    st.state.value,
                    f" ({st.reason})" if st.reason else "",
                    extra={**self._ids(e), "state": st.state.value},
                )
            self.pending.append(
                build_update(
                    attempt_id=e.attempt_id,
                    state=st.state,
                    at=at,
                    reason=st.reason,
                    executor_logs=st.executor_logs or None,
                    usage=st.usage,
                    outputs=st.outputs or None,
                    system_logs=st.system_logs or None,
                    progress=progress,
                    transfers=transfers or None,
                    transfers_omitted=omitted or None,
                    usage_record=self._usage_record(e, st, at) if st.state.terminal else None,
                )
            )

    def _usage_record(self, e: Entry, st: JobStatus, at: datetime) -> dict | None:
        """The signed usage record of an attempt that ran and ended now (None: it never ran)."""
        if st.usage is None or e.started_at is None or not e.pool_id:
            return None
        try:
            return signed_record(
                self.usage_key,
                site_id=self.site_id,
                task_id=e.task_id,
                attempt_id=e.attempt_id,
                pool_id=e.pool_id,
                spec=e.job["spec"],
                usage=st.usage,
                started_at=e.started_at,
                ended_at=at.timestamp(),
                scu_rates=self.scu_rates.get(e.pool_name),
            )
        except Exception:  # a record that cannot be built must not hold back the final state
            log.exception("cannot build the usage record of %s", e.attempt_id)
            return None

    def _queue_progress(self, e: Entry, st: JobStatus) -> None:
        """Report how far a running attempt got (phase, file, bytes) when that changed, at most
        once per PROGRESS_EVERY_S per attempt; a report not yet sent is replaced, not added to."""
        if st.progress is None or st.state.terminal:
            return
        with self.lock:
            if self.last_state.get(e.attempt_id) != st.state:
                return  # _queue reports the new state (with its progress) first
            then, last = self.last_progress.get(e.attempt_id, (-PROGRESS_EVERY_S, None))
            t = time.monotonic()
            if last == st.progress or t - then < PROGRESS_EVERY_S:
                return
            self.last_progress[e.attempt_id] = (t, st.progress)
            at = _now()
            progress = st.progress.model_copy(update={"at": at})
            waiting = self.progress_queued.get(e.attempt_id)
            if waiting is not None:
                waiting.progress, waiting.at = progress, at
                return
            u = AttemptUpdate(attempt_id=e.attempt_id, state=st.state, at=at, progress=progress)
            self.progress_queued[e.attempt_id] = u
            self.pending.append(u)

    def poll_once(self, changed: set[Handle] | None = None) -> set[Handle]:
        """The backend's truth about every attempt held, or only those in `changed`, in one
        call (`Backend.poll_many`). Returns the handles in `changed` that no attempt held here
        has (yet: one whose start is under way on another thread), for the next tick."""
        with self.lock:
            held = [
                (e, handle)
                for e in self.entries.values()
                if not e.done
                and (handle := self.handles.get(e.attempt_id)) is not None
                and (changed is None or handle in changed)
            ]
        missed = set() if changed is None else changed - {h for _, h in held}
        statuses = self.backend.poll_many([handle for _, handle in held])
        for (e, _), st in zip(held, statuses, strict=True):
            if st.state is State.QUEUED:  # waiting inside the backend: already INITIALIZING to us
                continue
            self._queue(e, st)
            self._queue_progress(e, st)
        return missed

    def _coalesce(self) -> None:
        """(Under the lock.) Drop the reports a final report queued behind them makes moot: an
        attempt's RUNNING (or progress) report once the hub has, or is sent first, its
        INITIALIZING — the hub takes INITIALIZING → an end directly, and the end carries the
        times, logs and usage — so that an attempt seen starting and ending while the hub was
        busy costs the hub two reports, not three."""
        ending = {u.attempt_id for u in self.pending if u.state.terminal}
        if not ending:
            return
        kept: deque[AttemptUpdate] = deque()
        started: set[str] = set()  # attempts whose INITIALIZING is the hub's or goes first
        for aid in ending:
            e = self.entries.get(aid)
            if e is not None and e.reported in (State.INITIALIZING.value, State.RUNNING.value):
                started.add(aid)
        for u in self.pending:
            aid = u.attempt_id
            if aid in ending and not u.state.terminal:
                if u.state is State.INITIALIZING:
                    started.add(aid)
                elif aid in started:
                    if self.progress_queued.get(aid) is u:
                        del self.progress_queued[aid]
                    continue
            kept.append(u)
        self.pending = kept

    def flush(self) -> None:
        """Send pending updates in order; keep them if the hub cannot take them now."""
        while self.pending and not self.stop.is_set():
            batch: list[AttemptUpdate] = []
            parts: list[str] = []
            size = 0
            with self.lock:
                self._coalesce()
                while self.pending and len(batch) < MAX_BATCH:
                    text = _json(self.pending[0])
                    if batch and size + len(text) > BATCH_BYTES:
                        break
                    u = self.pending.popleft()
                    if self.progress_queued.get(u.attempt_id) is u:
                        del self.progress_queued[u.attempt_id]  # sent as it is now
                    batch.append(u)
                    parts.append(text)
                    size += len(text) + 1
            try:
                results = self._post_updates(parts)
            except HubRefused as exc:
                # Nothing of a refused batch was applied (one transaction): send its updates one
                # at a time, so that one bad update does not hold back every other attempt's.
                log.error(
                    "the hub refused %d updates at once (%s); sending them one by one",
                    len(batch),
                    exc,
                )
                results = self._send_alone(batch)
            except AgentError:
                self._requeue(batch)
                raise
            self.metrics.updates_sent.inc(sum(r is not None for r in results))
            # A dropped update (None) counts as sent: the attempt is not held here for ever; the
            # hub, not hearing of it in heartbeats, treats it as lost.
            for u, res in zip(batch, results, strict=True):
                e = self.entries.get(u.attempt_id)
                if e is None:
                    continue
                if res is not None and res.cancel:
                    self._cancel(u.attempt_id)
                if res is not None and res.usage and res.usage.get("verdict") not in _KEPT:
                    log.warning(
                        "the hub refused the usage record of %s (%s): %s",
                        u.attempt_id,
                        res.usage.get("verdict"),
                        res.usage.get("reason"),
                    )
                e.reported = u.state.value
                if u.state.terminal:
                    e.done = True
                    handle = self.handles.pop(e.attempt_id, None)
                    if handle is not None:
                        self.backend.forget(handle)
                    self.journal.remove(e.attempt_id)
                    if handle is not None and not self._keeps_work_dir(e):
                        # After the journal: a crash in between leaves a dir, never an entry
                        # whose files are gone.
                        now = time.monotonic()
                        self.leftovers[handle.work_dir] = (handle, now, now + REMOVE_FOR_S)
                    with self.lock:
                        self.entries.pop(e.attempt_id, None)
                        self.last_state.pop(e.attempt_id, None)
                        self.last_progress.pop(e.attempt_id, None)
                        self.ended[e.attempt_id] = None
                        while len(self.ended) > ENDED_MEMORY:
                            del self.ended[next(iter(self.ended))]

    def _keeps_work_dir(self, e: Entry) -> bool:
        return self.settings.keep_work_dirs or bool(e.job.get("spec", {}).get("keep_work_dir"))

    def remove_leftovers(self) -> None:
        """Remove the work dirs of attempts that ended (`leftovers`). One that cannot go yet (a
        runner still writing its last files) is tried again a second later, for REMOVE_FOR_S,
        then given up on with an error naming it."""
        now = time.monotonic()
        due = [(d, h, end) for d, (h, next_at, end) in self.leftovers.items() if now >= next_at]
        if not due:
            return
        errors = self.backend.remove_work_dirs([h for _, h, _ in due])  # all at once: cheaper
        for (work_dir, handle, give_up_at), exc in zip(due, errors, strict=True):
            if exc is not None:
                if now < give_up_at:
                    self.leftovers[work_dir] = (handle, now + 1.0, give_up_at)
                    continue
                log.error("giving up on removing %s: %s; remove it by hand", work_dir, exc)
            del self.leftovers[work_dir]

    def _post_updates(self, parts: list[str]) -> list[UpdateOutcome]:
        """POST updates already serialised (one JSON object each); the hub's per-update results."""
        return self._hub(self.hub.post_updates, self.site_id, parts).results

    def _requeue(self, batch: list[AttemptUpdate]) -> None:
        """Put unsent updates back at the front, in order."""
        with self.lock:
            self.pending.extendleft(reversed(batch))
            for u in batch:  # newer progress replaces these again, not piles up
                if (
                    u.model_fields_set == PROGRESS_ONLY
                    and self.last_state.get(u.attempt_id) == u.state
                ):
                    self.progress_queued.setdefault(u.attempt_id, u)

    def _send_alone(self, batch: list[AttemptUpdate]) -> list[UpdateOutcome | None]:
        """Send each update by itself; one the hub refuses is sent again without its details
        (logs, outputs, transfer records), with a system log saying why, so its state still
        gets through; one refused even so is dropped with an error in the agent's log (None)."""
        results: list[UpdateOutcome | None] = []
        for i, u in enumerate(batch):
            try:
                try:
                    res = self._post_updates([_json(u)])[0]
                except HubRefused as exc:
                    log.error("the hub refused the update of %s: %s", u.attempt_id, exc)
                    slim = without_details(u, f"the hub refused the full report: {exc}")
                    res = self._post_updates([_json(slim)])[0]
            except HubRefused as exc:
                log.error("dropping the update of %s (%s): %s", u.attempt_id, u.state.value, exc)
                res = None
            except AgentError:
                self._requeue(batch[i:])
                raise
            results.append(res)
        return results

    def run(self) -> None:
        if self.settings.probe_listen:
            try:
                self.listener = ProbeListener(*check_listen(self.settings.probe_listen)).start()
            except OSError as exc:
                raise AgentConfigError(
                    f"cannot answer probes on {self.settings.probe_listen}: {exc.strerror or exc};"
                    " choose a free port (or drop --probe-listen)"
                ) from None
            log.info("answering network probes on %s", self.settings.probe_listen)
        if self.settings.metrics_listen:
            host, port = check_bind(self.settings.metrics_listen, "metrics_listen")
            try:
                self.metrics_server, _ = start_http_server(
                    port, addr=host, registry=self.metrics.registry
                )
            except OSError as exc:
                raise AgentConfigError(
                    f"cannot serve metrics on {self.settings.metrics_listen}: "
                    f"{exc.strerror or exc}; choose a free port (or drop --metrics-listen)"
                ) from None
            log.info("serving metrics at http://%s/metrics", self.settings.metrics_listen)
        res = self.join()
        log.info("site %s joined with pools %s", self.site_id, res.pools)
        if self.settings.measure_on_join:  # in the background: tasks are taken meanwhile
            self.measure_in_background()
        self.heartbeat_once()
        threads = [
            threading.Thread(target=self.assignment_loop, name="assignments", daemon=True),
            threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True),
        ]
        if self.settings.network_probe_interval_s > 0:
            threads.append(
                threading.Thread(
                    target=self.netprobe.loop, args=(self.stop,), name="netprobe", daemon=True
                )
            )
        if not self.settings.pools:  # discovered pools follow the cluster; declared ones do not
            threads.append(
                threading.Thread(target=self.rediscover_loop, name="rediscover", daemon=True)
            )
        for t in threads:
            t.start()
        full_at = 0.0  # when every held attempt is read next (monotonic)
        missed: set[Handle] = set()  # changed before the agent held their handle: once more
        while not self.stop.is_set():
            try:
                # Each tick reads what the backend says changed (e.g. a runner's status.json
                # replaced); every attempt only every FULL_POLL_S (a runner that died says
                # nothing), or each tick when the backend cannot tell.
                fresh = self.backend.changed()
                changed = None if fresh is None else fresh | missed
                if time.monotonic() >= full_at:
                    changed = None
                    full_at = time.monotonic() + FULL_POLL_S
                # A handle missed twice in a row is not carried again (its attempt is gone).
                missed = self.poll_once(changed) - (missed - (fresh or set()))
                self.flush()
                self.remove_leftovers()
            except AgentError as exc:
                if not self.stop.is_set():
                    log.error("%s", exc)
            except Exception:
                log.exception("agent loop error")
            self.stop.wait(POLL_S)
        self.hub.close()
        if self.listener is not None:
            self.listener.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()


def run_agent(settings: AgentSettings) -> None:
    """Run an agent until SIGINT/SIGTERM. Running attempts keep running and are re-attached."""
    logs.setup(settings.log_format or "text", "info")
    agent = Agent(settings)

    def _stop(*_: object) -> None:
        agent.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        agent.run()
    finally:
        agent.backend.close()  # e.g. the Ray backend's --ray-local head


def _json(u: AttemptUpdate) -> str:
    return u.model_dump_json(exclude_none=True)


def without_details(u: AttemptUpdate, why: str) -> AttemptUpdate:
    """`u` with only its state, time, reason, usage and progress, and a system log saying why
    the rest was left out."""
    fields = u.model_dump(exclude=set(DETAIL_FIELDS), exclude_none=True)
    fields["reason"] = (u.reason or "")[:1000] or None
    fields["system_logs"] = [f"cpnet agent: {why}"[:4000]]
    try:
        return AttemptUpdate.model_validate(fields)
    except ValidationError:  # usage or progress were the trouble: the state alone, then
        bare = {k: fields[k] for k in ("attempt_id", "state", "at", "reason", "system_logs")}
        return AttemptUpdate.model_validate(bare)


def build_update(**fields: Any) -> AttemptUpdate:
    """An attempt update from what the backend reported; when that does not make a valid
    update (e.g. more output logs than an update may carry), the update without its details,
    saying why, so that the attempt's state still reaches the hub."""
    try:
        return AttemptUpdate(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        log.error(
            "the report of %s is not a valid update (%s: %s); sending it without details",
            fields.get("attempt_id"),
            where,
            first.get("msg"),
        )
        plain = {k: v for k, v in fields.items() if k not in DETAIL_FIELDS}
        try:
            u = AttemptUpdate(**plain)
        except ValidationError:
            plain = {k: plain.get(k) for k in ("attempt_id", "state", "at")}
            u = AttemptUpdate(**plain)
        return without_details(
            u, f"this attempt's report could not be sent whole ({where}: {first.get('msg')})"
        )
