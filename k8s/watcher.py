"""Watch streams on one cluster: list, then watch from the list's resourceVersion, for six kinds.

`ClusterWatcher` holds one thread per kind (pods, nodes, deployments, replicasets, HPAs, jobs)
and one detector thread:

- a kind's thread lists it (paginated raw JSON, like the poll), then watches from the list's
  resourceVersion with `allowWatchBookmarks`; every event and bookmark moves its version on, so a
  stream that ends (the server's timeout, a restart) resumes where it stopped. A `410 Gone` (the
  server no longer holds that version) re-lists, and the diff between the held picture and the
  new list touches whatever changed in between: nothing is lost. Any other failure is retried
  with doubling back-off (capped), from the last version.
- events update the slim picture (`k8s.watch_state.ClusterState`) and mark the workloads they
  touched. Coalescing is adaptive: a workload with no detector pass in the last `window_s` is
  passed `lead_s` after its first mark (long enough to gather the other objects one change
  writes, which arrive on other streams), so a fault on a quiet workload is seen at once; a
  workload passed less than `window_s` ago waits until the window since that pass is over. A
  burst (a rollout of 300 pods) is so at most one detector pass per workload per window. While
  the picture is incomplete (a kind is listing, or its stream is down and will re-list), passes
  wait for it, at most `hold_max_s`: a workload whose Deployment was re-listed before its pods
  would otherwise open its incident on half the evidence (replication_failure, not the pods'
  image pull failure) and start the wrong rule. The
  findings of the due workloads, with where their failing pods run (`k8s.topology`), go to
  `on_detect` (the incident service); a failed hand-over is retried. Only what the incident service would act on is handed over: a workload whose
  findings (types, objects, severities, the node correlation names) are the ones handed over
  less than `refresh_s` ago is
  not (a crash-looping pod changes its status every restart: that was an incident UPDATE and a
  lock on the cluster row each time), and a workload with no finding is not (the watcher never
  resolves). The poll refreshes every open incident on its own interval anyway.

`streaming` is True while every kind's stream is open: the caller reports the cluster's
detection mode from it. Nothing here touches the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import structlog
from kubernetes import client as k8s_client

from k8s import metrics
from k8s.detectors import Finding
from k8s.listing import fetch_raw_pages, list_calls
from k8s.topology import Topology
from k8s.watch_state import ClusterState, Key

log = structlog.get_logger(__name__)

# Lists first the kinds that owner resolution needs, so pods are filed under their workloads at once.
LIST_ORDER = ("replicasets", "jobs", "deployments", "hpas", "nodes", "pods")


# Smaller pages than the poll's: each parsed page is transient garbage interleaved with the slim
# objects that stay, and the allocator keeps what it cannot hand back (measured at 10,000 pods:
# 500 a page peaked 18 MB above 100 a page).
LIST_PAGE_SIZE = 100


class Gone(Exception):
    """410: the resourceVersion is older than the server keeps; list again."""


class StreamError(Exception):
    """The API server ended a watch with an ERROR event other than 410."""


class ClusterWatcher:
    def __init__(self, name: str, api: k8s_client.ApiClient, *,
                 on_detect: Callable[[set[Key], list[Finding], Topology], None],
                 window_s: float = 0.5, lead_s: float = 0.05, refresh_s: float = 10.0, hold_max_s: float = 10.0,
                 stream_timeout_s: int = 300,
                 read_timeout_s: float = 120,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self.name = name
        self.api = api
        self.on_detect = on_detect
        self.window_s = window_s
        self.lead_s = min(lead_s, window_s)
        self.refresh_s = refresh_s
        self.hold_max_s = hold_max_s
        self._listing: set[str] = set()  # kinds being (re-)listed, or about to be after a 410
        self.stream_timeout_s = stream_timeout_s
        self.read_timeout_s = read_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.state = ClusterState()
        self.calls = list_calls(api)
        self.error = ""
        self._state_lock = threading.Lock()
        self._dirty: dict[Key, float] = {}  # workload -> when it was first marked since its last pass
        self._passed: dict[Key, float] = {}  # workload -> when its last detector pass began (recent ones)
        self._handed: dict[Key, tuple[frozenset[tuple[str, ...]], float]] = {}  # workload -> its last findings handed over, when
        self._dirty_changed = threading.Condition()
        self._stop = threading.Event()
        self._up = dict.fromkeys(LIST_ORDER, False)
        self._listed = {kind: threading.Event() for kind in LIST_ORDER}
        self._responses: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self._event_counters: dict[tuple[str, str], Any] = {}

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> ClusterWatcher:
        for index, kind in enumerate(LIST_ORDER):
            after = self._listed[LIST_ORDER[index - 1]] if index else None
            self._threads.append(threading.Thread(target=self._run_kind, args=(kind, after), name=f"watch-{self.name}-{kind}",
                                                  daemon=True))
        self._threads.append(threading.Thread(target=self._run_detector, name=f"detect-{self.name}", daemon=True))
        for thread in self._threads:
            thread.start()
        log.info("watch_started", cluster=self.name)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._dirty_changed:
            self._dirty_changed.notify_all()
        for response in list(self._responses.values()):
            try:
                response.shutdown()  # unblocks the thread reading it
            except Exception:  # noqa: BLE001, S110 -- already closed
                pass
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        self.api.close()
        log.info("watch_stopped", cluster=self.name)

    @property
    def streaming(self) -> bool:
        return all(self._up.values())

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def pending(self) -> int:
        with self._dirty_changed:
            return len(self._dirty)

    # --- one kind --------------------------------------------------------------------------------
    def _run_kind(self, kind: str, after: threading.Event | None) -> None:
        if after is not None:
            after.wait(30)  # a kind whose list keeps failing must not hold the others back for long
        rv: str | None = None
        reason = "start"
        failures = 0
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list(kind, reason)
                    self._listed[kind].set()
                rv = self._stream(kind, rv)
                failures = 0
            except Gone:
                rv, reason = None, "gone"
                self._listing.add(kind)  # until the re-list is in: passes wait for the whole picture
                log.info("watch_gone", cluster=self.name, kind=kind)
            except Exception as exc:  # noqa: BLE001 -- any failure: back off, resume from the last version
                if self._stop.is_set():
                    break
                failures += 1
                self._up[kind] = False
                self.error = f"{kind}: {_describe(exc)}"[:500]
                metrics.WATCH_STREAM_ERRORS.labels(self.name, kind).inc()
                wait = min(self.backoff_initial_s * 2 ** (failures - 1), self.backoff_max_s)
                log.warning("watch_stream_failed", cluster=self.name, kind=kind, error=self.error, failures=failures,
                            retry_in_s=round(wait, 2))
                self._stop.wait(wait)
        self._up[kind] = False

    def _list(self, kind: str, reason: str) -> str:
        self._listing.add(kind)
        try:
            return self._list_pages(kind, reason)
        finally:
            self._listing.discard(kind)
            with self._dirty_changed:
                self._dirty_changed.notify()

    def _list_pages(self, kind: str, reason: str) -> str:
        rv = ""
        seen: set[tuple[str, str]] = set()
        touched: set[Key] = set()
        # Page by page: the cluster's full objects are never held at once, only their slim forms.
        for body in fetch_raw_pages(self.calls[kind], page_size=LIST_PAGE_SIZE):
            rv = rv or str((body.get("metadata") or {}).get("resourceVersion") or "")
            with self._state_lock:
                touched |= self.state.put_listed(kind, body.get("items") or [], seen)
        with self._state_lock:
            touched |= self.state.drop_unlisted(kind, seen)
            count = len(self.state.objects[kind])
        metrics.WATCH_RELISTS.labels(self.name, kind, reason).inc()
        metrics.WATCH_OBJECTS.labels(self.name, kind).set(count)
        log.info("watch_listed", cluster=self.name, kind=kind, reason=reason, objects=count, touched=len(touched),
                 resource_version=rv)
        self._mark(touched)
        return rv

    def _stream(self, kind: str, rv: str) -> str:
        response = self.calls[kind](
            watch=True, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=self.stream_timeout_s,
            _preload_content=False, _request_timeout=(10, self.read_timeout_s),
        )
        self._responses[kind] = response
        self._up[kind] = True
        if self.streaming:
            self.error = ""
        try:
            for line in _lines(response):
                if self._stop.is_set():
                    break
                event = orjson.loads(line)
                event_type = event.get("type") or ""
                obj = event.get("object") or {}
                self._count(kind, event_type)
                if event_type == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(obj.get("message") or "")
                    raise StreamError(f"{obj.get('code')} {obj.get('reason')}: {obj.get('message')}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if event_type == "BOOKMARK":
                    continue
                with self._state_lock:
                    touched = self.state.apply(kind, event_type, obj)
                    count = len(self.state.objects[kind])
                if touched:
                    metrics.WATCH_OBJECTS.labels(self.name, kind).set(count)
                    self._mark(touched)
        finally:
            self._responses.pop(kind, None)
            response.release_conn()
        return rv

    def _count(self, kind: str, event_type: str) -> None:
        counter = self._event_counters.get((kind, event_type))
        if counter is None:
            counter = self._event_counters[(kind, event_type)] = metrics.WATCH_EVENTS.labels(self.name, kind, event_type)
        counter.inc()

    # --- coalescing and detection ------------------------------------------------------------------
    def _mark(self, keys: set[Key]) -> None:
        if not keys:
            return
        now = time.monotonic()
        with self._dirty_changed:
            for key in keys:
                self._dirty.setdefault(key, now)
            self._dirty_changed.notify()

    def _due_at(self, key: Key, marked: float) -> float:
        passed = self._passed.get(key)
        return marked + self.lead_s if passed is None else max(marked + self.lead_s, passed + self.window_s)

    def _take_due(self) -> dict[Key, float]:
        """The workloads due for a pass, each with when it was first marked."""
        with self._dirty_changed:
            while not self._stop.is_set():
                if not self._dirty:
                    self._dirty_changed.wait(1.0)
                    continue
                now = time.monotonic()
                if (self._listing or not self.streaming) and now - min(self._dirty.values()) < self.hold_max_s:
                    self._dirty_changed.wait(0.1)  # the picture is incomplete: wait for it (bounded)
                    continue
                due_at = {key: self._due_at(key, marked) for key, marked in self._dirty.items()}
                due = {key for key, moment in due_at.items() if moment <= now}
                if not due:
                    self._dirty_changed.wait(min(due_at.values()) - now)
                    continue
                taken = {key: self._dirty.pop(key) for key in due}
                for key in due:
                    self._passed[key] = now
                if len(self._passed) > 4096:  # forget passes older than the window: they no longer hold a workload back
                    self._passed = {key: moment for key, moment in self._passed.items() if moment + self.window_s > now}
                return taken
        return {}

    def _to_hand_over(self, due: set[Key], findings: list[Finding], now: float, topology: Topology | None = None
                      ) -> tuple[set[Key], list[Finding], dict[Key, frozenset[tuple[str, ...]]]]:
        """The workloads (and their findings) the incident service would act on: new or changed
        findings (or node the correlation blames), or the same ones last handed over `refresh_s`
        ago or more."""
        by_key: dict[Key, list[Finding]] = {}
        for finding in findings:
            by_key.setdefault((finding.owner_kind, finding.namespace, finding.owner_name), []).append(finding)
        for key in due - by_key.keys():
            self._handed.pop(key, None)  # healthy now: the fault, if it comes back, is news
        keys: set[Key] = set()
        kept: list[Finding] = []
        signatures: dict[Key, frozenset[tuple[str, ...]]] = {}
        for key, group in by_key.items():
            signature = frozenset({(f.type, f.severity, f.kind, f.name) for f in group}
                                  | {("cause_node", (topology.cause_node(key) if topology else None) or "")})
            last = self._handed.get(key)
            if last is not None and last[0] == signature and now - last[1] < self.refresh_s:
                continue
            keys.add(key)
            kept.extend(group)
            signatures[key] = signature
        return keys, kept, signatures

    def _run_detector(self) -> None:
        failures = 0
        while not self._stop.is_set():
            taken = self._take_due()
            if not taken:
                continue
            due = set(taken)
            started = time.monotonic()
            with self._state_lock:
                findings = self.state.findings_for(due)
                topology = self.state.topology_for(due)
            detected = time.monotonic()
            metrics.WATCH_PASSES.labels(self.name).inc(len(due))
            metrics.WATCH_MARK_TO_PASS.labels(self.name).observe(started - min(taken.values()))
            keys, kept, signatures = self._to_hand_over(due, findings, detected, topology)
            if not keys:
                continue
            try:
                self.on_detect(keys, kept, topology)
                failures = 0
            except Exception as exc:  # noqa: BLE001 -- the database may be away: keep the work, retry
                failures += 1
                log.warning("watch_ingest_failed", cluster=self.name, workloads=len(keys), error=_describe(exc),
                            failures=failures)
                self._mark(keys)
                self._stop.wait(min(0.5 * 2 ** failures, 10.0))
                continue
            done = time.monotonic()
            for key, signature in signatures.items():
                self._handed[key] = (signature, detected)
            metrics.WATCH_INGEST_SECONDS.labels(self.name).observe(done - detected)
            log.info("watch_pass", cluster=self.name, workloads=len(due), handed_over=len(keys), findings=len(kept),
                     waited_ms=round((started - min(taken.values())) * 1000, 1),
                     detect_ms=round((detected - started) * 1000, 1), ingest_ms=round((done - detected) * 1000, 1))


def _lines(response: Any) -> Iterator[bytes]:
    """The newline-delimited JSON of a watch response, as chunks arrive (a line may span chunks)."""
    pending = b""
    for chunk in response.stream(65536):
        pending += chunk
        if b"\n" not in pending:
            continue
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _describe(exc: BaseException) -> str:
    if isinstance(exc, k8s_client.ApiException):
        return f"API answered {exc.status} {exc.reason}".strip()
    return f"{type(exc).__name__}: {exc}"
