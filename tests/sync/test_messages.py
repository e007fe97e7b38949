"""Version vectors decoded without the engine agree with Loro; subscription filtering."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loro import ExportMode, LoroDoc, VersionVector

from syncd.errors import RemoteProtocolError
from syncd.sync.messages import decode_vv, in_subscription, vv_covers

U = "ab" * 16


def doc_with(ops: list[tuple[int, int]]) -> LoroDoc:
    doc = LoroDoc()  # type: ignore[no-untyped-call]
    for peer, count in ops:
        doc.peer_id = peer
        for i in range(count):
            doc.get_list("l").push(i)
        doc.commit()
    return doc


low_peers = st.integers(min_value=1, max_value=2**63 - 1)
high_peers = st.integers(min_value=2**63, max_value=2**64 - 2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(low_peers, st.integers(1, 300)), max_size=4, unique_by=lambda t: t[0]),
       st.lists(st.tuples(high_peers, st.integers(1, 300)), max_size=4, unique_by=lambda t: t[0]),
       st.booleans())
def test_vv_decoding_and_cover_agree_with_loro(a_ops: list[tuple[int, int]], b_ops: list[tuple[int, int]],
                                                merged: bool) -> None:
    a, b = doc_with(a_ops), doc_with(b_ops)
    if merged:
        b.import_(a.export(ExportMode.Snapshot()))
    for x, y in ((a, b), (b, a), (a, a)):
        va, vb = x.oplog_vv, y.oplog_vv
        decoded = decode_vv(va.encode())
        assert decoded == {p: (va.get_last(p) or 0) + 1 for p in decoded}
        assert vv_covers(va.encode(), vb.encode()) == va.includes_vv(vb)


def test_empty_vv() -> None:
    assert decode_vv(LoroDoc().oplog_vv.encode()) == {}  # type: ignore[no-untyped-call]
    assert decode_vv(VersionVector().encode()) == {}   # type: ignore[no-untyped-call]


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x05", b"\x01\x05\x03", b"\x00\x00", b"\x02\x05\x02\x05\x02",
                                  b"\x01" + b"\xff" * 11 + b"\x01\x02", b"\x01\x05\x80\x80\x80\x80\x80\x01",
                                  b"\x00" * 70_000])
def test_malformed_vvs_are_refused(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_vv(data)


def test_subscription_filter() -> None:
    assert in_subscription("user:" + U, "all") and in_subscription("anon:" + "c" * 64, "all")
    assert in_subscription("user:" + U, frozenset({U}))
    assert not in_subscription("user:" + "cd" * 16, frozenset({U}))
    assert not in_subscription("anon:" + "c" * 64, frozenset({U}))
