"""The message bus between edge nodes and the central matcher: Redis Streams.

    edge:    fogreid run --publish redis://HOST:PORT/STREAM
             XADD STREAM  event=<the event's JSON>  embedding=<float32 bytes>  model=<checkpoint SHA-256>
    central: fogreid associate --bus redis://HOST:PORT/STREAM --gallery G.npz
             consumer group `fogreid-matcher` on STREAM -> CrossCameraAssociator -> STREAM:global

Exactly once. Each input entry's result is XADDed to the results stream and the entry is
XACKed in one MULTI/EXEC transaction: a matcher killed at any instant has done both or
neither. A restarted matcher first takes over what a dead consumer left pending
(XAUTOCLAIM, entries idle for `claim_idle_ms`), then reads new entries; and before either,
it rebuilds the association state by replaying, in their processing order, the input
entries the results stream records as done (the associator is deterministic), so global
ids continue as if it had never stopped. One matcher per stream at a time: the association
state lives in that one process.

Redis commands as documented at redis.io (XADD, XGROUP CREATE ... MKSTREAM, XREADGROUP,
XAUTOCLAIM (Redis >= 6.2), XACK, MULTI/EXEC); client: redis-py.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

from fogreid.errors import FogreidError

GROUP = "fogreid-matcher"


@dataclass(frozen=True)
class BusURL:
    host: str
    port: int
    stream: str
    db: int = 0

    @property
    def results(self) -> str:
        return f"{self.stream}:global"


def parse_bus_url(text: str, option: str = "--bus") -> BusURL:
    """redis://HOST[:PORT]/STREAM (a db number as ?db=N)."""
    url = urlparse(text)
    stream = url.path.lstrip("/")
    if url.scheme != "redis" or not url.hostname or not stream:
        raise FogreidError(f"{option} {text!r}: expected redis://HOST:PORT/STREAM, e.g. redis://127.0.0.1:6379/fogreid")
    try:
        port = url.port or 6379
        db = int(dict(p.split("=", 1) for p in url.query.split("&") if "=" in p).get("db", 0))
    except ValueError:
        raise FogreidError(f"{option} {text!r}: the port and ?db= must be numbers") from None
    return BusURL(url.hostname, port, stream, db)


def connect(url: BusURL):
    """A redis-py client, checked with PING: an unreachable server is a clear error (exit 1)."""
    try:
        import redis
    except ImportError:
        raise BusUnavailable("the Redis bus needs redis-py: pip install 'fogreid[bus]'") from None
    client = redis.Redis(host=url.host, port=url.port, db=url.db, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BusUnavailable(f"cannot reach Redis at {url.host}:{url.port} ({exc}); is redis-server running?") from None
    return client


class BusUnavailable(Exception):
    """An environment problem (no server, no client library): the verbs exit 1."""


class RedisPublisher:
    """Sends every event with its embedding; one XADD each, pipelined per batch of events."""

    def __init__(self, url: BusURL, model_identity: str | None = None) -> None:
        self.url, self.client = url, connect(url)
        self.model = model_identity or ""
        self.sent = 0
        self._pipe = self.client.pipeline(transaction=False)

    def __call__(self, event: dict, embedding: np.ndarray) -> None:
        try:
            text = json.dumps(event, allow_nan=False)   # strict JSON: never `NaN`
        except ValueError:
            raise FogreidError(f"--publish: an event of {event.get('source')} holds a non-finite number; "
                               f"not sent") from None
        self._pipe.xadd(self.url.stream, {"event": text, "model": self.model,
                                          "embedding": np.ascontiguousarray(embedding, np.float32).tobytes()})
        self.sent += 1

    def end(self, source: str) -> None:
        """This source publishes no more: the matcher stops waiting for its clock."""
        self({"event": "source_end", "source": source, "time": round(time.time(), 3)}, np.zeros(0, np.float32))

    def flush(self) -> None:
        import redis

        try:
            self._pipe.execute()
        except redis.RedisError as exc:   # the broker went away mid-run: end the run, say why (exit 1)
            raise BusUnavailable(f"publishing to {self.url.host}:{self.url.port}/{self.url.stream} failed "
                                 f"({exc}); {self.sent} events were queued so far") from None

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.client.close()


def decode(fields: dict) -> tuple[dict, np.ndarray, str]:
    event = json.loads(fields[b"event"])
    return event, np.frombuffer(fields[b"embedding"], np.float32), fields.get(b"model", b"").decode()


@dataclass
class MatcherOptions:
    group: str = GROUP
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    claim_idle_ms: int = 5_000        # a pending entry idle this long belongs to a dead consumer
    count: int = 64                   # entries per read
    block_ms: int = 500               # wait for new entries this long per read
    idle_exit: float | None = None    # stop after this many seconds without a new entry (None: run until stopped)
    max_entries: int | None = None    # stop after processing this many
    max_delay: float = 10.0           # seconds an entry may wait for the other sources' clocks
    expect_sources: int = 1           # hold everything until this many sources have published


class EventFeed:
    """Bus events to global ids, the way the edge's own pipeline makes them (pipeline.py): a
    tracked detection goes to a `TrackBook` (quality-weighted track embedding, identity and
    global id decided after `min_crops` crops), a `track_end` ends its track, and an untracked
    detection (fixed regions, full frame) is a one-crop track of its own."""

    def __init__(self, associator, tracking=None, gallery=None) -> None:
        from fogreid.runtime.tracking import TrackBook, TrackingConfig

        self.associator = associator
        self.book = TrackBook(tracking or TrackingConfig(), gallery, associator)

    def global_id(self, entry_id: str, event: dict, embedding: np.ndarray) -> int | None:
        from fogreid.runtime.association import TrackSummary

        camera, track_id = str(event.get("source")), event.get("track_id")
        if event.get("event") == "track_end":
            alive = {tid for cam, tid in self.book.tracks if cam == camera and tid != track_id}
            self.book.end(camera, alive)
            return event.get("global_id")
        if event.get("event", "detection") != "detection":
            return event.get("global_id")
        clock = float(event.get("clock", event.get("time", 0.0)))
        if track_id is None:
            return self.associator.update(TrackSummary(camera, entry_id, clock, clock, embedding)).global_id
        self.book.observe(camera, track_id, int(event.get("frame", 0)), clock, embedding,
                          float(event.get("quality", 1.0)))
        return self.book.tracks[(camera, track_id)].global_id


class Matcher:
    """The central matcher: a consumer in the group, the one owner of the association state.

    Edge nodes run at their own pace, so the stream interleaves cameras out of event-time
    order; association decisions depend on that order (a vehicle must leave one camera before
    it enters the next). Entries are therefore held (read, not yet acknowledged: still in the
    group's pending list, safe from a crash) and processed in order of their source clock,
    up to the watermark: the oldest latest-clock among the sources still publishing (a source
    that ends says so), and no later than an entry another consumer holds (until it is re-claimed).
    Entries held longer than `max_delay` seconds, or when the stream falls idle, go through
    regardless (a camera that stopped publishing does not stall the city)."""

    def __init__(self, url: BusURL, associator, opts: MatcherOptions | None = None,
                 model_identity: str | None = None, tracking=None, gallery=None) -> None:
        self.url, self.opts = url, opts or MatcherOptions()
        self.client = connect(url)
        self.associator, self.feed = associator, EventFeed(associator, tracking, gallery)
        self.model = model_identity
        self.processed = self.claimed = self.replayed = 0
        self.invalid = 0   # entries whose embedding held NaN / inf: given no global id, never associated
        self.held: dict[str, tuple[float, object, dict, float]] = {}   # key -> (clock, id, fields, arrival)
        self.latest: dict[str, float] = {}       # source -> newest clock seen
        self.ended: set[str] = set()
        self._clocks: dict[str, float] = {}     # clocks of entries other consumers hold

    # ------------------------------------------------------------------ start-up
    def prepare(self) -> None:
        import redis

        try:
            self.client.xgroup_create(self.url.stream, self.opts.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._replay()

    def _replay(self) -> None:
        """Rebuild the state from the results stream: the done entries, in the order done."""
        done = [fields[b"input_id"].decode() for _, fields in self._xrange(self.url.results)]
        if not done:
            return
        wanted, entries = set(done), {}
        for entry_id, fields in self._xrange(self.url.stream):
            key = entry_id.decode()
            if key in wanted:
                entries[key] = fields
        for key in done:
            self._note(json.loads(entries[key][b"event"]))
            self._associate(key, entries[key])
            self.replayed += 1

    def _xrange(self, stream: str, count: int = 1000):
        start = "-"
        while True:
            batch = self.client.xrange(stream, min=start, max="+", count=count)
            yield from batch
            if len(batch) < count:
                return
            last = batch[-1][0].decode()
            ms, seq = last.split("-")
            start = f"{ms}-{int(seq) + 1}"

    # ------------------------------------------------------------------ the loop
    def run(self, stop=None) -> int:
        """Process until stopped, idle for `idle_exit` seconds, or `max_entries` are done."""
        self.prepare()
        self._read("0")                       # this consumer's own pending entries (a restart under one name)
        last_new = last_claim = time.monotonic()
        self._claim()
        while not (stop is not None and stop.is_set()) and not self._done():
            if time.monotonic() - last_claim >= self.opts.claim_idle_ms / 2000:
                self._claim()                 # a consumer died while this one runs
                last_claim = time.monotonic()
            if self._read(">"):
                last_new = time.monotonic()
            idle = time.monotonic() - last_new
            self._drain(force=idle >= self.opts.block_ms / 1000)
            if self.opts.idle_exit is not None and idle >= self.opts.idle_exit and not self.held:
                break
        return self.processed

    def _claim(self) -> None:
        """Entries a dead consumer read but never acknowledged."""
        start = "0-0"
        while True:
            reply = self.client.xautoclaim(self.url.stream, self.opts.group, self.opts.consumer,
                                           self.opts.claim_idle_ms, start_id=start, count=self.opts.count)
            start, entries = reply[0], reply[1]
            self.claimed += self._hold(entries)
            if start in (b"0-0", "0-0"):
                return

    def _read(self, which: str) -> int:
        """'0': this consumer's own pending entries; '>': new ones (waits up to block_ms)."""
        reply = self.client.xreadgroup(self.opts.group, self.opts.consumer, {self.url.stream: which},
                                       count=self.opts.count, block=self.opts.block_ms if which == ">" else None)
        return sum(self._hold(entries) for _, entries in reply)

    def _done(self) -> bool:
        return self.opts.max_entries is not None and self.processed >= self.opts.max_entries

    def _note(self, event: dict) -> float:
        """Track each source's clock and end; returns the event's clock."""
        source = str(event.get("source"))
        if event.get("event") == "source_end":
            self.ended.add(source)
            return self.latest.get(source, 0.0)
        clock = float(event.get("clock", event.get("time", 0.0)))
        self.latest[source] = max(self.latest.get(source, clock), clock)
        return clock

    def _hold(self, entries) -> int:
        n = 0
        for entry_id, fields in entries:
            key = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            if not fields:   # trimmed from the stream while pending: nothing to process, only acknowledge
                self.client.xack(self.url.stream, self.opts.group, entry_id)
                continue
            if key in self.held:
                continue
            self.held[key] = (self._note(json.loads(fields[b"event"])), entry_id, fields, time.monotonic())
            n += 1
        return n

    def _foreign_clock(self) -> float:
        """The earliest clock among entries other consumers hold (a live one's in flight, a dead
        one's until re-claimed): nothing later is associated before them."""
        summary = self.client.xpending(self.url.stream, self.opts.group)
        earliest = float("inf")
        for consumer in summary.get("consumers") or []:
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
            if name == self.opts.consumer:
                continue
            for entry in self.client.xpending_range(self.url.stream, self.opts.group, min="-", max="+",
                                                    count=self.opts.count, consumername=name):
                key = entry["message_id"].decode()
                if key not in self._clocks:
                    found = self.client.xrange(self.url.stream, min=key, max=key)
                    self._clocks[key] = (float(json.loads(found[0][1][b"event"]).get("clock", 0.0))
                                         if found and found[0][1] else float("inf"))
                earliest = min(earliest, self._clocks[key])
        return earliest

    def _drain(self, force: bool = False) -> None:
        live = [clock for source, clock in self.latest.items() if source not in self.ended]
        watermark = float("inf") if force or not live else min(live)
        if len(self.latest) < self.opts.expect_sources and not force:
            watermark = float("-inf")          # not every camera has spoken yet
        if watermark > float("-inf"):
            watermark = min(watermark, self._foreign_clock())
        now = time.monotonic()
        ready = sorted((clock, _order(key), key) for key, (clock, _, _, arrived) in self.held.items()
                       if clock <= watermark or now - arrived >= self.opts.max_delay)
        for _, _, key in ready:
            if self._done():
                return
            _, entry_id, fields, _ = self.held.pop(key)
            result = self._associate(key, fields)
            pipe = self.client.pipeline(transaction=True)   # MULTI: the result and the ack, or neither
            pipe.xadd(self.url.results, {"input_id": key, "result": json.dumps(result, allow_nan=False)})
            pipe.xack(self.url.stream, self.opts.group, entry_id)
            pipe.execute()
            self.processed += 1

    def _associate(self, key: str, fields: dict) -> dict:
        event, embedding, model = decode(fields)
        if self.model and model and model != self.model:
            raise FogreidError(f"entry {key} of {self.url.stream} comes from model {model[:12]}, the gallery from "
                               f"{self.model[:12]}: publish with the gallery's model or rebuild the gallery")
        if not np.isfinite(embedding).all():   # from a damaged model on some node: it would poison identities
            self.invalid += 1
            global_id = None
        else:
            global_id = self.feed.global_id(key, event, embedding)
        return {"input_id": key, "event": event.get("event", "detection"), "source": event.get("source"),
                "frame": event.get("frame"), "time": event.get("time"), "track_id": event.get("track_id"),
                "box": event.get("box"), "global_id": global_id}

    def results(self) -> list[dict]:
        return [json.loads(fields[b"result"]) for _, fields in self._xrange(self.url.results)]


def _order(key: str) -> tuple[int, int]:
    ms, seq = key.split("-")
    return int(ms), int(seq)
