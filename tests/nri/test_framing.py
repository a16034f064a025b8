"""The framers on their own: any message, cut at any byte boundaries, comes out whole and unchanged."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nri_plugin.framing import (
    MAX_OUT_FRAME,
    MAX_TTRPC_DATA,
    MUX_HEADER,
    TTRPC_HEADER,
    TYPE_REQUEST,
    FramingError,
    MuxDecoder,
    TtrpcDecoder,
    encode_mux,
    encode_ttrpc,
)


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


messages = st.lists(
    st.tuples(st.integers(1, 1000).map(lambda n: 2 * n - 1), st.binary(max_size=20_000)),
    min_size=1,
    max_size=5,
)


@given(messages, st.lists(st.integers(0, 10**6), max_size=40))
def test_any_split_reassembles(msgs: list[tuple[int, bytes]], cuts: list[int]) -> None:
    wire = b"".join(
        frame for sid, body in msgs for frame in encode_mux(1, encode_ttrpc(sid, TYPE_REQUEST, body))
    )
    mux, ttrpc = MuxDecoder(), TtrpcDecoder()
    out = []
    for piece in _cut(wire, cuts):
        for conn_id, payload in mux.feed(piece):
            assert conn_id == 1
            out.extend(ttrpc.feed(payload))
    assert [(m.stream_id, m.data) for m in out] == msgs
    assert mux.pending == 0 and ttrpc.pending == 0


@given(st.binary(max_size=50_000))
def test_outgoing_frames_never_exceed_4096(body: bytes) -> None:
    frames = encode_mux(2, body)
    sizes = [MUX_HEADER.unpack_from(f)[1] for f in frames]
    assert all(0 <= s <= MAX_OUT_FRAME for s in sizes)
    assert b"".join(f[MUX_HEADER.size :] for f in frames) == body


def test_reserved_and_oversized_mux_frames_are_protocol_errors() -> None:
    dec = MuxDecoder()
    # the good frame before the broken one is still delivered
    assert dec.feed(MUX_HEADER.pack(1, 2) + b"ok" + MUX_HEADER.pack(0, 1) + b"x") == [(1, b"ok")]
    assert dec.error is not None and "reserved connection id 0" in str(dec.error)
    with pytest.raises(FramingError):
        dec.feed(b"more")
    dec = MuxDecoder()
    assert dec.feed(MUX_HEADER.pack(1, (1 << 24) + 1)) == []
    assert dec.error is not None and "over the" in str(dec.error)


def test_truncated_frame_stays_pending() -> None:
    dec = MuxDecoder()
    assert dec.feed(MUX_HEADER.pack(1, 10) + b"abc") == []
    assert dec.pending == MUX_HEADER.size + 3


def test_oversized_ttrpc_message_is_skipped_and_stream_stays_in_sync() -> None:
    big = MAX_TTRPC_DATA + 5
    dec = TtrpcDecoder()
    out = dec.feed(TTRPC_HEADER.pack(big, 1, TYPE_REQUEST, 0))
    assert [(m.stream_id, m.oversized) for m in out] == [(1, big)]
    # the skipped body arrives in pieces, then a normal message follows
    for _ in range(big // 1_000_000):
        assert dec.feed(b"\0" * 1_000_000) == []
    out = dec.feed(b"\0" * (big % 1_000_000) + encode_ttrpc(3, TYPE_REQUEST, b"next"))
    assert [(m.stream_id, m.data) for m in out] == [(3, b"next")]
