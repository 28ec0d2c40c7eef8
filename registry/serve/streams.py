"""The service's per-client frame streams: each keeps the last L frames of one client (a sequence matcher holding
their distance columns against the map) for sequence matching. Bounded: at most `max_streams` streams, each dropped
after `ttl` seconds without a frame; a new stream when all are taken and none has expired is refused
(`StreamsFull`, with the seconds until the stalest one expires)."""
from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

STREAM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class StreamsFull(RuntimeError):
    """Every stream slot is taken by a live stream: retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def check_stream_id(stream: str) -> str:
    """`stream`, or ValueError naming the allowed form."""
    if not STREAM_ID.fullmatch(stream):
        raise ValueError(f"stream id {stream[:80]!r} is not 1 to 64 letters, digits, '_' or '-' "
                         "([A-Za-z0-9_-]{1,64}); pick an id of that form per client")
    return stream


@dataclass
class Stream:
    """One client's frames: `matcher` (push(descriptor) -> matches; reset()), the frames pushed since the map
    version `version`, and a lock that orders that client's frames."""

    matcher: Any
    version: int
    frames: int = 0
    last_used: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class StreamBuffers:
    """id -> Stream, least recently used first; `new_matcher()` makes a stream's matcher."""

    def __init__(self, new_matcher: Callable[[], Any], max_streams: int = 256, ttl: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(max_streams, int) or max_streams < 1:
            raise ValueError(f"max_streams must be a whole number >= 1, got {max_streams!r}")
        if not ttl > 0:
            raise ValueError(f"the stream time-to-live must be > 0 seconds, got {ttl!r}")
        self.new_matcher, self.max_streams, self.ttl, self.clock = new_matcher, max_streams, float(ttl), clock
        self._streams: "OrderedDict[str, Stream]" = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire(self.clock())
            return len(self._streams)

    def _expire(self, now: float) -> None:
        while self._streams:
            oldest = next(iter(self._streams.values()))
            if now - oldest.last_used < self.ttl:
                return
            self._streams.popitem(last=False)

    def get(self, stream: str, version: int) -> Stream:
        """The live stream of this id (touched), reset if the map changed since its frames; a new one if there is
        none; StreamsFull when `max_streams` live streams exist already."""
        check_stream_id(stream)
        now = self.clock()
        with self._lock:
            self._expire(now)
            found: Optional[Stream] = self._streams.get(stream)
            if found is None:
                if len(self._streams) >= self.max_streams:
                    stalest = next(iter(self._streams.values()))
                    wait = max(1, int(self.ttl - (now - stalest.last_used) + 0.999))
                    raise StreamsFull(f"all {self.max_streams} streams (--max-streams) are in use and none has been "
                                      f"idle for {self.ttl:g} s (--stream-ttl); retry later or send frames without "
                                      "a stream", wait)
                found = Stream(self.new_matcher(), version)
                self._streams[stream] = found
            found.last_used = now
            self._streams.move_to_end(stream)
        if found.version != version:  # the map grew: the kept columns are against the old rows
            with found.lock:
                found.matcher.reset()
                found.frames, found.version = 0, version
        return found

    def drop(self, stream: str) -> bool:
        """Forget this stream; False when there is no live stream of that id."""
        with self._lock:
            self._expire(self.clock())
            return self._streams.pop(stream, None) is not None

    def snapshot(self) -> Dict[str, int]:
        """id -> frames seen, of the live streams."""
        with self._lock:
            self._expire(self.clock())
            return {k: s.frames for k, s in self._streams.items()}
