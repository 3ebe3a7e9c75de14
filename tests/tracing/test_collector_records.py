"""Trace records: checking what arrives (a rogue peer must not get anything past it), the
compact stored form (at most 300 bytes), latency buckets and the query summaries."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tracing_support import SID, TID, pack, wire_record

from gateway import trace_records
from gateway.trace_records import (
    BUCKETS,
    MAX_METHOD_BYTES,
    MAX_PACKED_BYTES,
    NAMES_KEPT,
    Outcome,
    Record,
    Side,
    Tally,
    TraceFilter,
    bucket_of,
    clip,
    decode_message,
    pack_compact,
    parse_record,
    quantile,
    recent_rate,
    stats_report,
    summarize,
    unpack_compact,
)
from rpccore import _tracing as tracing_impl
from rpccore.tracing import ROW_FIELDS


def test_a_valid_record_parses_to_its_fields() -> None:
    record = parse_record(wire_record(n=3, exc=None, unknown_key="ignored"))
    assert record == Record(
        TID,
        SID,
        None,
        Side.SERVER,
        "calc",
        "add",
        1_700_000_000.25,
        1_700_000_000.251,
        1_700_000_000.252,
        Outcome.OK,
        None,
        3,
        "calc-server",
        "app-1",
        4242,
    )
    assert record.to_dict() == {key: value for key, value in wire_record(n=3).items() if key != "v"}


@pytest.mark.parametrize(
    "overrides",
    [
        {"par": "1" * 16, "side": "client", "out": "error", "exc": "ValueError: no"},
        {"side": "http", "out": "abandoned", "t1": None},
        {"out": "stream", "n": 0},
        {"out": "timeout", "t0": 1_700_000_000, "t2": 1_700_000_030},  # ints are times too
        {"out": "lost", "pid": 0, "proc": "", "host": ""},
        {"t1": 1_700_000_000.25, "t2": 1_700_000_000.25},  # zero duration
    ],
)
def test_valid_variants(overrides: dict[str, Any]) -> None:
    assert parse_record(wire_record(**overrides)) is not None


INVALID = [
    {"v": 2},
    {"v": True},
    {"v": ...},
    {"tid": TID.upper()},
    {"tid": TID[:-1]},
    {"tid": 42},
    {"tid": ...},
    {"sid": "xyz" + SID[3:]},
    {"sid": SID + "00"},
    {"par": "short"},
    {"par": b"\x00" * 8},
    {"side": "proxy"},
    {"side": ["server"]},
    {"side": ...},
    {"svc": ""},
    {"svc": "calc\tfake"},
    {"svc": 7},
    {"svc": ["calc"]},  # unhashable: refused, never a TypeError
    {"m": {"add": 1}},
    {"m": "add\n"},
    {"m": None},
    {"t0": "now"},
    {"t0": float("nan")},
    {"t0": float("inf")},
    {"t0": -1.0},
    {"t0": True},
    {"t2": 1_699_999_999.0},  # before t0
    {"t2": None},
    {"t1": 1_700_000_001.0},  # after t2
    {"t1": 1_699_999_999.0},  # before t0
    {"out": "fine"},
    {"out": 0},
    {"exc": 3},
    {"n": -1},
    {"n": 2**64},
    {"n": 1.5},
    {"n": False},
    {"pid": -1},
    {"pid": 2**32},
    {"pid": "4242"},
    {"pid": ...},
    {"proc": None},
    {"host": 1},
]


@pytest.mark.parametrize("overrides", INVALID)
def test_invalid_records_are_refused(overrides: dict[str, Any]) -> None:
    assert parse_record(wire_record(**overrides)) is None


@pytest.mark.parametrize("item", [None, 1, "record", [wire_record()], b"\x80"])
def test_non_maps_are_refused(item: object) -> None:
    assert parse_record(item) is None


def test_a_message_keeps_its_valid_records_and_counts_the_others() -> None:
    frame = pack([wire_record(), wire_record(v=9), {"junk": 1}, 5, wire_record(sid="1" * 16)])
    records, refused = decode_message(frame)
    assert [record.sid for record in records] == [SID, "1" * 16]
    assert refused == 3


def row_batch(
    rows: list[Any], header: tuple[Any, ...] = (2, "calc-server", "app-1", 4242)
) -> bytes:
    """A version-2 batch, as rpccore's CollectorHandler sends it."""
    return msgpack.packb([*header, rows], use_bin_type=True)  # type: ignore[no-any-return]


def as_row(record: dict[str, Any]) -> list[Any]:
    return [record[field] for field in ROW_FIELDS]


def test_a_batch_of_rows_gives_the_same_records_as_maps() -> None:
    maps = [wire_record(), wire_record(sid="1" * 16, out="error", exc="E: x")]
    from_rows, refused = decode_message(row_batch([as_row(record) for record in maps]))
    assert refused == 0
    assert from_rows == decode_message(pack(maps))[0]


def test_a_batch_of_rows_keeps_its_valid_rows_and_counts_the_others() -> None:
    good = as_row(wire_record())
    frame = row_batch([good, good[:-1], "row", [*good[:3], "sideways", *good[4:]], good])
    records, refused = decode_message(frame)
    assert len(records) == 2
    assert refused == 3


@pytest.mark.parametrize(
    "header",
    [(3, "p", "h", 1), (2, "p", "h", -1), (2, 7, "h", 1), (2, "p", None, 1)],
)
def test_a_bad_sender_header_refuses_its_rows(header: tuple[Any, ...]) -> None:
    records, refused = decode_message(row_batch([as_row(wire_record())] * 3, header))
    assert (records, refused) == ([], 3)


def test_a_real_sender_batch_decodes() -> None:
    """What rpccore's tracing queues for the collector, packed as it sends it."""
    sent: list[bytes] = []
    handler = tracing_impl.CollectorHandler("tcp://127.0.0.1:9")
    sock, handler._sock = handler._sock, _Capture(sent)
    try:
        t0 = time.time()
        handler.put(tuple(as_row(wire_record(t0=t0, t1=t0 + 0.001, t2=t0 + 0.001))))
        handler._send_queued()
    finally:
        handler._sock = sock
        handler.close()
    [record] = decode_message(sent[0])[0]
    assert (record.tid, record.sid, record.svc, record.m) == (TID, SID, "calc", "add")


class _Capture:
    def __init__(self, sent: list[bytes]) -> None:
        self.sent = sent

    def send(self, data: bytes, flags: int = 0) -> None:
        self.sent.append(data)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",  # never used in msgpack
        b"\x92\x01",  # a list of 2 with 1 item
        msgpack.packb({"v": 1}),  # a map, not a list
        msgpack.packb(wire_record()) + b"\x00",  # extra data
        b"\x91" * 10_000 + b"\xc0",  # nested past msgpack's stack
        msgpack.packb([{1: 2}]),  # a non-string key
        msgpack.packb("text"),
        b"\xa3\xff\xfe\xfd",  # invalid UTF-8
        b"\xdd\xff\xff\xff\xff",  # a list claiming 4 billion items
    ],
)
def test_garbage_messages_count_as_one_refused_record(frame: bytes) -> None:
    assert decode_message(frame) == ([], 1)


@given(st.binary(max_size=512))
def test_decoding_never_raises(frame: bytes) -> None:
    records, refused = decode_message(frame)
    assert refused >= 0
    assert all(isinstance(record, Record) for record in records)


@given(
    st.dictionaries(
        st.sampled_from([*sorted(wire_record()), "x"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=40),
            st.binary(max_size=20),
            st.lists(st.integers(), max_size=2),
        ),
    )
)
def test_parsing_any_map_never_raises(overrides: dict[str, Any]) -> None:
    record = parse_record(wire_record(**overrides))
    assert record is None or record.t0 <= record.t2


def test_long_strings_are_clipped_by_utf8_bytes_never_inside_a_character() -> None:
    assert clip("short", 10) == "short"
    assert clip("a" * 20, 10) == "a" * 10
    assert clip("é" * 10, 5) == "éé"  # 2 bytes each: the third would be cut
    assert clip("\U0001f600" * 3, 6) == "\U0001f600"
    record = parse_record(wire_record(svc="s" * 100, m="m" * 100, exc="x" * 1000))
    assert record is not None
    assert (len(record.svc), len(record.m), len(record.exc or "")) == (48, 64, 64)


# -- the stored form -------------------------------------------------------------------------


def test_names_are_remembered_up_to_a_bound_and_read_back_the_same() -> None:
    long_name = "m" * (MAX_METHOD_BYTES + 10)
    first = parse_record(wire_record(m=long_name))
    again = parse_record(wire_record(m=long_name))  # from what was remembered
    assert first is not None
    assert again is not None
    assert first.m == again.m == "m" * MAX_METHOD_BYTES
    for number in range(NAMES_KEPT + 10):
        record = parse_record(wire_record(m=f"method_{number}"))
        assert record is not None
        assert record.m == f"method_{number}"
    assert len(trace_records._methods) <= NAMES_KEPT
    assert parse_record(wire_record(m="method\n")) is None  # never remembered as valid


def test_the_compact_form_round_trips() -> None:
    original = parse_record(
        wire_record(par="1" * 16, side="client", out="error", exc="KeyError: 'x'", n=7)
    )
    assert original is not None
    restored = unpack_compact(TID, pack_compact(original))
    assert restored is not None
    assert restored.to_dict() == pytest.approx(original.to_dict())
    assert restored.t1 == pytest.approx(original.t1, abs=1e-6)
    assert restored.t2 == pytest.approx(original.t2, abs=1e-6)


def test_a_typical_record_takes_under_a_hundred_bytes() -> None:
    record = parse_record(wire_record())
    assert record is not None
    size = len(pack_compact(record))
    assert size <= 80, size  # 61 for this one
    wire = len(msgpack.packb(wire_record()))
    assert size < wire / 2  # the wire map with hex ids takes more than twice as much


def test_the_largest_possible_record_fits_in_300_bytes() -> None:
    four_bytes = "\U0001f600" * 200
    record = parse_record(
        wire_record(
            par="f" * 16,
            svc="s" * 300,
            m="m" * 300,
            exc=four_bytes,
            proc="p" * 300,
            host=four_bytes,
            t0=1_700_000_000.123456,
            t1=1_700_000_000.123456 + 40_000_000,  # a stream of more than a year
            t2=1_700_000_000.123456 + 50_000_000,
            n=2**63 - 1,
            pid=2**32 - 1,
        )
    )
    assert record is not None
    assert len(pack_compact(record)) <= MAX_PACKED_BYTES


@pytest.mark.parametrize("data", [b"", b"\x90", msgpack.packb([1, 2, 3]), b"\xc1"])
def test_unpacking_something_else_gives_none(data: bytes) -> None:
    assert unpack_compact(TID, data) is None


# -- buckets, summaries, statistics ----------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "bucket"),
    [(0.0, 0), (0.00025, 0), (0.0003, 1), (0.001, 2), (1.0, 11), (30.0, 15), (31.0, 16)],
)
def test_bucket_of(duration: float, bucket: int) -> None:
    assert bucket_of(duration) == bucket


def test_quantiles_interpolate_inside_a_bucket() -> None:
    buckets = [0] * (len(BUCKETS) + 1)
    assert quantile(buckets, 0.5) is None
    buckets[bucket_of(0.004)] = 100  # (0.0025, 0.005]
    assert quantile(buckets, 0.5) == pytest.approx(0.00375)
    assert quantile(buckets, 0.99) == pytest.approx(0.0025 + 0.0025 * 0.99)
    buckets[-1] = 100  # as many over 30 s
    assert quantile(buckets, 0.99) == 30.0
    assert quantile(buckets, 0.5) == pytest.approx(0.005)


def record_of(**overrides: Any) -> Record:
    record = parse_record(wire_record(**{"t1": None, **overrides}))
    assert record is not None
    return record


def test_a_summary_names_the_root_and_counts_spans_and_errors() -> None:
    records = [
        record_of(sid="2" * 16, par="1" * 16, side="client", t0=10.1, t2=10.4, out="error"),
        record_of(sid="2" * 16, par="1" * 16, side="server", t0=10.2, t2=10.3, out="error"),
        record_of(sid="1" * 16, side="http", svc="gw", m="POST /rpc", t0=10.0, t2=10.5),
        record_of(sid="1" * 16, side="client", svc="calc", m="add", t0=10.0, t2=10.45),
    ]
    assert summarize(TID, records) == {
        "trace_id": TID,
        "start": 10.0,
        "duration": 0.5,
        "spans": 2,
        "errors": 1,  # the failed call, recorded by both its sides
        "root": {"svc": "gw", "m": "POST /rpc"},
    }


def test_without_its_root_record_a_trace_is_named_by_its_earliest() -> None:
    records = [
        record_of(par="1" * 16, m="late", t0=11.0, t2=11.5),
        record_of(par="1" * 16, m="early", t0=10.0, t2=10.5),
    ]
    assert summarize(TID, records)["root"] == {"svc": "calc", "m": "early"}


def test_statistics_come_from_servers_then_clients_then_the_gateway() -> None:
    def tally(*durations: float) -> Tally:
        result = Tally()
        for duration in durations:
            result.add(record_of(t0=1.0, t2=1.0 + duration))
        return result

    tallies = {
        (Side.SERVER, "calc", "add"): tally(0.001, 0.002),
        (Side.CLIENT, "calc", "add"): tally(0.003),
        (Side.CLIENT, "users", "get"): tally(0.2),
        (Side.HTTP, "users", "get"): tally(0.3),
        (Side.HTTP, "shop", "buy"): tally(1.0),
    }
    report = stats_report(tallies, {(Side.SERVER, "calc", "add"): 0.5})
    assert {svc: {m: e["side"] for m, e in methods.items()} for svc, methods in report.items()} == {
        "calc": {"add": "server"},
        "users": {"get": "client"},
        "shop": {"buy": "http"},
    }
    add = report["calc"]["add"]
    assert (add["count"], add["errors"], add["rate"]) == (2, 0, 0.5)
    assert 0.0005 < add["p50"] <= 0.001 < add["p90"] <= 0.0025
    assert add["buckets"][2] == [0.001, 1]
    assert add["buckets"][-1] == [None, 0]
    assert report["users"]["get"]["rate"] == 0.0


def test_the_recent_rate_weighs_the_previous_window_by_what_is_left_of_it() -> None:
    assert recent_rate(60, 0, 120.0) == 1.0
    assert recent_rate(30, 60, 150.0) == pytest.approx((30 + 30) / 60)
    assert recent_rate(0, 60, 179.99) == pytest.approx(0.0, abs=0.01)


def test_a_full_batch_of_the_longest_records_fits_in_one_collector_message() -> None:
    from gateway.collector import DEFAULT_MAX_MESSAGE_SIZE

    span = [TID, SID, SID, "server", "s" * 500, "m" * 500, 1.5, 1.5, 2.5, "error", "e" * 500]
    span += [None, False, None]
    row = tracing_impl.row_of(span)  # its names shortened to keep to MAX_RECORD_BYTES
    count = tracing_impl.BATCH_SIZE
    message = b"".join(
        [
            tracing_impl._ident.batch_header,
            msgpack.Packer().pack_array_header(count),
            *[msgpack.packb(row)] * count,
        ]
    )
    assert len(message) <= DEFAULT_MAX_MESSAGE_SIZE
    records, refused = decode_message(message)
    assert (len(records), refused) == (count, 0)


def test_a_trace_filter_is_checked_and_matches_one_span_of_its_parts() -> None:
    assert not TraceFilter()
    assert TraceFilter.checked("calc", None, True) == TraceFilter("calc", None, failed=True)
    for wrong in ((7, None, False), (None, b"add", False), ("s" * 201, None, False)):
        with pytest.raises(ValueError, match=r"service|method"):
            TraceFilter.checked(*wrong)
    with pytest.raises(ValueError, match="failed"):
        TraceFilter.checked(None, None, 1)
    ok = record_of(svc="calc", m="add")
    failed = record_of(sid="2" * 16, svc="shop", m="buy", out="error")
    assert TraceFilter("calc", "add").matches([failed, ok])
    assert not TraceFilter("calc", "add", failed=True).matches([failed, ok])
    assert TraceFilter(failed=True).matches([failed, ok])
    assert not TraceFilter("calc", "buy").matches([failed, ok])  # one span has both
    assert TraceFilter().matches([ok])
