"""Bus framing: frame bodies survive any split of the byte stream; LocalBus defers delivery."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.bus import MAX_FRAME, FrameDecoder, LocalBus, encode_frame

bodies = st.lists(st.binary(max_size=64), max_size=5)


@given(bodies, st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_frames_survive_any_split(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(body) for body in frames)
    points = sorted({min(c, len(stream)) for c in cuts})
    dec = FrameDecoder()
    out: list[bytes] = []
    prev = 0
    for p in [*points, len(stream)]:
        out += dec.feed(stream[prev:p])
        prev = p
    assert out == frames


def test_an_oversized_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        FrameDecoder().feed((MAX_FRAME + 1).to_bytes(4, "big"))


async def test_local_bus_delivers_the_same_bytes_later() -> None:
    a, b = LocalBus.pair()
    got: list[bytes] = []
    b.on_message = got.append
    a.send(b'{"type":"ready","worker":0}')
    assert got == []  # never inside send
    await asyncio.sleep(0)
    assert got == [b'{"type":"ready","worker":0}']
    a.close()
    a.send(b"{}")
    await asyncio.sleep(0)
    assert len(got) == 1
