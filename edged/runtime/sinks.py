"""The event stream and its sinks: every output of the daemon is a sink on one stream.

The daemon emits `StreamItem`s (identity events, presence changes, the enrolled people, health)
to an `EventStream`. Each sink gets its own `SinkWorker`: a bounded queue that drops the oldest item
when full (counted) and a thread that hands items to the sink one by one. So a slow or failing sink
never stalls the frame loop or the other sinks: `emit()` only appends to queues.

Adding an output (access control, an unknown-face store, an audit log, a web page...) means writing
an `EventSink` and adding it to the list `build_sinks()` returns (`edged.runtime.outputs`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from edged.types import Frame, IdentityEvent, Observation, StreamItem

log = logging.getLogger(__name__)

#: Items a sink's queue holds before the oldest is dropped.
DEFAULT_QUEUE_MAX = 1000
#: Sinks that ask for images hold fewer items (each may reference a whole frame).
IMAGE_QUEUE_MAX = 64


class EventSink:
    """An output of the daemon. `handle()` runs on the sink's own thread, one item at a time.

    Override `start()` (connect, open files) and `close()` (flush, disconnect) as needed; both run on
    the daemon's thread. `ready` tells the daemon when the sink can deliver (systemd READY=1 waits for
    every sink), `status` is its part of the status line.
    """

    #: Short name for logs and statistics.
    name = "sink"
    #: Receive `IdentityEvent.image` (the frame of the decision); without it the stream strips it.
    wants_images = False
    #: Queue length before the oldest item is dropped.
    queue_max = DEFAULT_QUEUE_MAX
    #: Receive every processed frame through `offer_frame()` (a live view).
    wants_frames = False

    def start(self) -> None:
        """Called once before the first item."""

    def handle(self, item: StreamItem) -> None:
        """Deliver one item (on the sink's thread); an exception is logged and counted, never fatal."""
        raise NotImplementedError

    def offer_frame(self, frame: Frame, observations: Sequence[Observation], camera: str = "") -> None:
        """A processed frame and its tracked faces (`wants_frames`) of `camera` ("": the only one), on the frame
        loop's thread: keep a reference and return at once (no copy, no encoding: the frame is never written
        again)."""

    def close(self, timeout: float) -> None:
        """Called once after the last item was handled (or `timeout` passed)."""

    @property
    def ready(self) -> bool:
        return True

    @property
    def status(self) -> str:
        return ""

    def stats(self) -> dict[str, object]:
        """The sink's own counters for the run statistics."""
        return {}


@dataclass
class SinkStats:
    """What one sink's queue saw."""

    received: int = 0
    handled: int = 0
    dropped: int = 0
    errors: int = 0
    queue_peak: int = 0
    seconds: float = 0.0


class SinkWorker:
    """One sink's bounded queue and thread."""

    def __init__(self, sink: EventSink, queue_max: int | None = None) -> None:
        self.sink = sink
        self.queue_max = max(1, queue_max or sink.queue_max)
        self.stats = SinkStats()
        self._queue: deque[StreamItem] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.sink.start()
        self._thread = threading.Thread(target=self._run, name=f"edged-sink-{self.sink.name}", daemon=True)
        self._thread.start()

    def offer(self, item: StreamItem) -> None:
        """Queue an item (never blocks); beyond `queue_max` the oldest waiting item is dropped."""
        if not self.sink.wants_images and isinstance(item, IdentityEvent) and item.image is not None:
            item = dataclasses.replace(item, image=None)
        with self._cond:
            self.stats.received += 1
            self._queue.append(item)
            if len(self._queue) > self.queue_max:
                self._queue.popleft()
                self.stats.dropped += 1
                if self.stats.dropped == 1 or self.stats.dropped % 100 == 0:
                    log.warning("sink %s: queue full (%d); dropped %d oldest item(s) so far", self.sink.name,
                                self.queue_max, self.stats.dropped)
            self.stats.queue_peak = max(self.stats.queue_peak, len(self._queue))
            self._cond.notify()

    @property
    def pending(self) -> int:
        """Items queued or being handled."""
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    def drain(self, timeout: float) -> bool:
        """Wait until every queued item was handled; False when `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float) -> None:
        """Handle what is queued (within `timeout`), stop the thread, close the sink."""
        deadline = time.monotonic() + timeout
        self.drain(max(0.0, timeout * 0.5))
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.05, deadline - time.monotonic()))
        left = self.pending
        if left:
            log.warning("sink %s: stopping with %d item(s) not handled", self.sink.name, left)
        try:
            self.sink.close(max(0.05, deadline - time.monotonic()))
        except Exception:
            log.exception("sink %s: close failed", self.sink.name)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                item = self._queue.popleft()
                self._busy = True
            start = time.perf_counter()
            try:
                self.sink.handle(item)
            except Exception:
                self.stats.errors += 1
                if self.stats.errors == 1 or self.stats.errors % 100 == 0:
                    log.exception("sink %s: failed on %s (%d failure(s) so far)", self.sink.name,
                                  type(item).__name__, self.stats.errors)
            finally:
                with self._cond:
                    self._busy = False
                    self.stats.handled += 1
                    self.stats.seconds += time.perf_counter() - start
                    self._cond.notify_all()


class EventStream:
    """Fans items out to every sink's worker; `emit()` returns at once."""

    def __init__(self, sinks: Iterable[EventSink] = ()) -> None:
        self.workers = [SinkWorker(s) for s in sinks]
        self._started = False

    @property
    def sinks(self) -> list[EventSink]:
        return [w.sink for w in self.workers]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        self._started = True

    def emit(self, item: StreamItem) -> None:
        for worker in self.workers:
            worker.offer(item)

    def offer_frame(self, frame: Frame, observations: Sequence[Observation], camera: str = "") -> None:
        """Hand a processed frame of `camera` to the sinks that show frames (a reference each; returns at once)."""
        for worker in self.workers:
            if worker.sink.wants_frames:
                worker.sink.offer_frame(frame, observations, camera)

    def emit_all(self, items: Sequence[StreamItem]) -> None:
        for item in items:
            self.emit(item)

    @property
    def ready(self) -> bool:
        return all(s.ready for s in self.sinks)

    @property
    def status(self) -> str:
        return "; ".join(s.status for s in self.sinks if s.status)

    def drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(w.drain(max(0.0, deadline - time.monotonic())) for w in self.workers)

    def close(self, timeout: float) -> None:
        """Close every sink, each within `timeout` (they close one after another)."""
        if not self._started:
            return
        for worker in self.workers:
            worker.close(timeout)
        self._started = False

    def stats(self) -> dict[str, dict[str, object]]:
        """Sink name -> {"queue": its `SinkStats`, ...the sink's own counters}."""
        return {w.sink.name: {"queue": dataclasses.asdict(w.stats), **w.sink.stats()} for w in self.workers}


class RecordingSink(EventSink):
    """Keeps every item with the monotonic time it was handled (tests, the bench, programmatic users)."""

    name = "recording"

    def __init__(self, keep: int = 100_000, wants_images: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.wants_images = wants_images
        self.items: deque[tuple[float, StreamItem]] = deque(maxlen=keep)
        self._clock = clock
        self._lock = threading.Lock()

    def handle(self, item: StreamItem) -> None:
        with self._lock:
            self.items.append((self._clock(), item))

    def of_type(self, kind: type) -> list:
        """The recorded items of one type, in order."""
        with self._lock:
            return [item for _, item in self.items if isinstance(item, kind)]

    @property
    def events(self) -> list[IdentityEvent]:
        """The identity events announced (as MQTT publishes them: without `resumed` recognitions)."""
        return [e for e in self.of_type(IdentityEvent) if not e.resumed]
