"""Bus framing: messages survive any split of the byte stream."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lb.bus import FrameDecoder, encode_frame

messages = st.lists(
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.text(max_size=20),
            st.booleans(),
        ),
    ),
    max_size=5,
)


@given(messages, st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_frames_survive_any_split(msgs: list[dict[str, object]], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(m) for m in msgs)
    points = sorted({min(c, len(stream)) for c in cuts})
    dec = FrameDecoder()
    out: list[dict[str, object]] = []
    prev = 0
    for p in [*points, len(stream)]:
        out += dec.feed(stream[prev:p])
        prev = p
    assert out == msgs
