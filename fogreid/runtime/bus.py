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
        self._pipe.xadd(self.url.stream, {"event": json.dumps(event), "model": self.model,
                                          "embedding": np.ascontiguousarray(embedding, np.float32).tobytes()})
        self.sent += 1

    def flush(self) -> None:
        self._pipe.execute()

    def close(self) -> None:
        self.flush()
        self.client.close()


def decode(fields: dict) -> tuple[dict, np.ndarray, str]:
    event = json.loads(fields[b"event"])
    return event, np.frombuffer(fields[b"embedding"], np.float32), fields.get(b"model", b"").decode()


@dataclass
class MatcherOptions:
    group: str = GROUP
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    claim_idle_ms: int = 10_000       # a pending entry idle this long belongs to a dead consumer
    count: int = 64                   # entries per read
    block_ms: int = 500               # wait for new entries this long per read
    idle_exit: float | None = None    # stop after this many seconds without a new entry (None: run until stopped)
    max_entries: int | None = None    # stop after processing this many (tests: a matcher that dies mid-stream)


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
    """The central matcher: a consumer in the group, the one owner of the association state."""

    def __init__(self, url: BusURL, associator, opts: MatcherOptions | None = None,
                 model_identity: str | None = None, tracking=None, gallery=None) -> None:
        self.url, self.opts = url, opts or MatcherOptions()
        self.client = connect(url)
        self.associator, self.feed = associator, EventFeed(associator, tracking, gallery)
        self.model = model_identity
        self.processed = self.claimed = self.replayed = 0

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
        """Rebuild the associator from the results stream: the done entries, in the order done."""
        done = [fields[b"input_id"].decode() for _, fields in self._xrange(self.url.results)]
        if not done:
            return
        wanted, entries = set(done), {}
        for entry_id, fields in self._xrange(self.url.stream):
            key = entry_id.decode()
            if key in wanted:
                entries[key] = fields
        for key in done:
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
        last_new = time.monotonic()
        while not (stop is not None and stop.is_set()):
            got = self._claim() or self._read("0") or self._read(">")
            if got:
                last_new = time.monotonic()
            elif self.opts.idle_exit is not None and time.monotonic() - last_new >= self.opts.idle_exit:
                break
            if self.opts.max_entries is not None and self.processed >= self.opts.max_entries:
                break
        return self.processed

    def _claim(self) -> int:
        """Entries a dead consumer read but never acknowledged."""
        start, n = "0-0", 0
        while True:
            reply = self.client.xautoclaim(self.url.stream, self.opts.group, self.opts.consumer,
                                           self.opts.claim_idle_ms, start_id=start, count=self.opts.count)
            start, entries = reply[0], reply[1]
            n += self._handle(entries)
            self.claimed += len(entries)
            if start in (b"0-0", "0-0") or self._done():
                return n

    def _read(self, which: str) -> int:
        """'0': this consumer's own pending entries; '>': new ones (waits up to block_ms)."""
        reply = self.client.xreadgroup(self.opts.group, self.opts.consumer, {self.url.stream: which},
                                       count=self.opts.count, block=self.opts.block_ms if which == ">" else None)
        return sum(self._handle(entries) for _, entries in reply)

    def _done(self) -> bool:
        return self.opts.max_entries is not None and self.processed >= self.opts.max_entries

    def _handle(self, entries) -> int:
        n = 0
        for entry_id, fields in entries:
            if self._done():
                break
            if not fields:   # trimmed from the stream while pending: nothing to process, only acknowledge
                self.client.xack(self.url.stream, self.opts.group, entry_id)
                continue
            key = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            result = self._associate(key, fields)
            pipe = self.client.pipeline(transaction=True)   # MULTI: the result and the ack, or neither
            pipe.xadd(self.url.results, {"input_id": key, "result": json.dumps(result)})
            pipe.xack(self.url.stream, self.opts.group, entry_id)
            pipe.execute()
            self.processed += 1
            n += 1
        return n

    def _associate(self, key: str, fields: dict) -> dict:
        event, embedding, model = decode(fields)
        if self.model and model and model != self.model:
            raise FogreidError(f"entry {key} of {self.url.stream} comes from model {model[:12]}, the gallery from "
                               f"{self.model[:12]}: publish with the gallery's model or rebuild the gallery")
        global_id = self.feed.global_id(key, event, embedding)
        return {"input_id": key, "event": event.get("event", "detection"), "source": event.get("source"),
                "frame": event.get("frame"), "time": event.get("time"), "track_id": event.get("track_id"),
                "box": event.get("box"), "global_id": global_id}

    def results(self) -> list[dict]:
        return [json.loads(fields[b"result"]) for _, fields in self._xrange(self.url.results)]
