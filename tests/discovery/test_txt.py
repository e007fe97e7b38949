"""The advert format: strict, bounded, never raising anything but InvalidAdvertError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.discovery.txt import (
    MAX_TXT_KEYS,
    SERVICE_TYPE,
    Advert,
    InvalidAdvertError,
    build_txt,
    instance_name,
    is_instance_of_service,
    parse_txt,
    server_name,
    try_parse_txt,
)
from syncd.errors import RemoteProtocolError

TAG = "0123456789abcdef"


def test_round_trip_with_and_without_tag() -> None:
    assert parse_txt(build_txt(version=1, port=7737, tag=TAG)) == Advert(1, 7737, TAG)
    assert parse_txt(build_txt(version=3, port=1, tag=None)) == Advert(3, 1, None)
    assert build_txt(version=1, port=7737, tag=TAG) == {b"v": b"1", b"port": b"7737", b"tag": TAG.encode()}


def test_no_identity_in_the_advert() -> None:
    txt = build_txt(version=1, port=7737, tag=TAG)
    assert set(txt) == {b"v", b"port", b"tag"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"version": 0, "port": 1, "tag": None},
        {"version": 65536, "port": 1, "tag": None},
        {"version": True, "port": 1, "tag": None},
        {"version": 1, "port": 0, "tag": None},
        {"version": 1, "port": 70000, "tag": None},
        {"version": 1, "port": 1, "tag": TAG.upper()},
        {"version": 1, "port": 1, "tag": TAG[:-1]},
        {"version": 1, "port": 1, "tag": ""},
        {"version": 1, "port": 1, "tag": "é" * 16},
    ],
)
def test_build_refuses_what_parse_would_refuse(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_txt(**kwargs)  # type: ignore[arg-type]


GOOD = {b"v": b"1", b"port": b"7737", b"tag": TAG.encode()}


@pytest.mark.parametrize(
    "change, needle",
    [
        ({b"v": None}, "v is missing"),
        ({b"port": None}, "port is missing"),
        ({b"v": b"+1"}, "v must be"),
        ({b"v": b" 1"}, "v must be"),
        ({b"v": b"01"}, "v must be"),
        ({b"v": b"0"}, "v must be"),
        ({b"v": b"1.0"}, "v must be"),
        ({b"port": b"65536"}, "port must be"),
        ({b"port": b"99999"}, "port must be"),
        ({b"port": b"\xff"}, "port must be"),
        ({b"tag": TAG.upper().encode()}, "tag must be"),
        ({b"tag": TAG[:15].encode()}, "tag must be"),
        ({b"tag": (TAG + "0").encode()}, "tag must be"),
        ({b"tag": None}, "tag must be"),
        ({b"tag": b""}, "tag must be"),
    ],
)
def test_parse_refuses_bad_values(change: dict[bytes, bytes | None], needle: str) -> None:
    props: dict[bytes, bytes | None] = {**GOOD, **change}
    if change.get(b"v", b"x") is None and b"v" in change:
        del props[b"v"]
    if change.get(b"port", b"x") is None and b"port" in change:
        del props[b"port"]
    with pytest.raises(InvalidAdvertError, match=needle):
        parse_txt(props)


def test_parse_refuses_oversized_records() -> None:
    with pytest.raises(InvalidAdvertError, match="keys"):
        parse_txt({**GOOD, **{f"k{i}".encode(): b"x" for i in range(MAX_TXT_KEYS)}})
    with pytest.raises(InvalidAdvertError, match="bytes, at most 255"):
        parse_txt({**GOOD, b"junk": b"x" * 300})
    with pytest.raises(InvalidAdvertError, match="record is"):
        parse_txt({**GOOD, **{f"k{i}".encode(): b"x" * 200 for i in range(10)}})


def test_unknown_keys_are_ignored() -> None:
    assert parse_txt({**GOOD, b"future": b"yes", b"flag": None}) == Advert(1, 7737, TAG)


def test_invalid_advert_is_a_remote_protocol_error() -> None:
    assert issubclass(InvalidAdvertError, RemoteProtocolError)


@pytest.mark.parametrize("junk", [None, [], "v=1", {1: 2}, {b"v": 1, b"port": 2}, {"v": "1", "port": "2"}])
def test_try_parse_never_raises_on_junk(junk: object) -> None:
    advert, reason = try_parse_txt(junk)
    assert advert is None and reason


@given(
    st.dictionaries(
        st.one_of(st.sampled_from([b"v", b"port", b"tag"]), st.binary(max_size=20)),
        st.one_of(st.none(), st.binary(max_size=300), st.from_regex(rb"[0-9]{1,7}", fullmatch=True)),
        max_size=40,
    )
)
def test_parse_raises_only_invalid_advert(props: dict[bytes, bytes | None]) -> None:
    try:
        advert = parse_txt(props)
    except InvalidAdvertError:
        assert try_parse_txt(props)[0] is None
    else:
        assert 1 <= advert.port <= 65535 and 1 <= advert.version <= 65535
        assert advert.tag is None or len(advert.tag) == 16


def test_instance_and_server_names() -> None:
    assert instance_name("a1b2c3d4e5f60718") == "syncd-a1b2c3d4e5f60718._syncd._tcp.local."
    assert server_name("a1b2c3d4e5f60718") == "syncd-a1b2c3d4e5f60718.local."
    for bad in ["", "xyz", "ABCDEF0123", "a" * 33, "0123456"]:
        with pytest.raises(ValueError):
            instance_name(bad)
    assert is_instance_of_service("anything here." + SERVICE_TYPE)
    assert is_instance_of_service("X._SYNCD._tcp.local.")
    assert not is_instance_of_service(SERVICE_TYPE)
    assert not is_instance_of_service("x._http._tcp.local.")
    assert not is_instance_of_service("a" * 64 + "." + SERVICE_TYPE)
