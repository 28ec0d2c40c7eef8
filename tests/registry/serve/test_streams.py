"""The service's frame streams: bounded in number (a new stream beyond max_streams is refused with the seconds until
one expires), dropped after their time-to-live without a frame, reset when the map version changes, and their ids
checked."""
from __future__ import annotations

import pytest

from registry.serve.streams import StreamBuffers, StreamsFull, check_stream_id


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Matcher:
    def __init__(self):
        self.pushed = []

    def push(self, x):
        self.pushed.append(x)
        return list(self.pushed)

    def reset(self):
        self.pushed.clear()


def test_streams_are_kept_per_id_bounded_in_number_and_expire_when_idle():
    clock = Clock()
    buffers = StreamBuffers(Matcher, max_streams=2, ttl=60, clock=clock)
    a = buffers.get("robot-a", version=1)
    a.matcher.push(1)
    assert buffers.get("robot-a", version=1) is a and a.matcher.pushed == [1]
    clock.now += 30
    buffers.get("robot_b", version=1)
    with pytest.raises(StreamsFull, match=r"all 2 streams \(--max-streams\) are in use") as full:
        buffers.get("robot-c", version=1)
    assert full.value.retry_after == 30  # robot-a, the stalest, expires 30 s from now
    clock.now += 31
    c = buffers.get("robot-c", version=1)  # robot-a expired and made room
    assert c.matcher.pushed == [] and sorted(buffers.snapshot()) == ["robot-c", "robot_b"]
    clock.now += 1000
    assert len(buffers) == 0


def test_a_stream_is_reset_when_the_map_version_changes():
    buffers = StreamBuffers(Matcher, max_streams=4, ttl=60, clock=Clock())
    s = buffers.get("s1", version=1)
    s.matcher.push(1)
    s.frames = 1
    again = buffers.get("s1", version=2)
    assert again is s and s.matcher.pushed == [] and s.frames == 0 and s.version == 2


def test_a_stream_id_outside_its_form_is_refused_naming_the_form():
    for bad in ("", "a" * 65, "../etc", "a b", "ü"):
        with pytest.raises(ValueError, match=r"\[A-Za-z0-9_-\]\{1,64\}"):
            check_stream_id(bad)
    assert check_stream_id("Robot_7-a") == "Robot_7-a"
    assert not StreamBuffers(Matcher).drop("never-made")


def test_stream_settings_outside_their_range_are_refused():
    with pytest.raises(ValueError, match="max_streams"):
        StreamBuffers(Matcher, max_streams=0)
    with pytest.raises(ValueError, match="time-to-live"):
        StreamBuffers(Matcher, ttl=0)
