"""data-frames/: a CSV uploaded through inbox/ and made a frame comes back as Parquet with the CSV's types."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from convsync.mirror import rowgroups
from convsync.mirror.dataframes import export_frame, frame_file_name, plan_exports
from convsync.mirror.inbox import InboxTracker, upload
from tests.files.conftest import Conv

CSV = b"""order_id,amount,customer,paid,ordered_at
1001,19.99,Ada Lovelace,true,2025-11-03T09:15:00
1002,5,Grace Hopper,false,2025-11-03T10:00:30
1003,,"Hopper, Grace",true,
1004,120.5,,false,2025-12-31T23:59:59
"""


def as_parquet_holds(table: pa.Table) -> pa.Table:
    """``table`` after a Parquet round trip (Parquet has no second unit: timestamp[s] comes back as [ms])."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return pq.read_table(pa.BufferReader(sink.getvalue()))


def make_frame(conv: Conv) -> None:
    (conv.inbox / "orders.csv").write_bytes(CSV)
    ready = InboxTracker(quiet_seconds=0, unhinted_quiet_seconds=0).scan(conv.inbox).ready
    assert upload(conv.client, conv.aid, conv.cid, conv.folder, ready).moved == ("orders.csv",)
    assert "Created data frame" in conv.say("/frame orders.csv orders")


def export_all(conv: Conv, parquet_supported: bool | None = None) -> list[str]:
    methods = []
    for info in plan_exports(conv.client.list_data_frames(conv.aid, conv.cid), {}):
        result = export_frame(
            conv.client,
            conv.aid,
            conv.cid,
            info,
            conv.folder / "data-frames",
            parquet_supported=parquet_supported,
        )
        methods.append(result.method)
    return methods


def test_the_parquet_path_gives_the_csv_table(conv: Conv) -> None:
    """Through the server's own Parquet output, the frame equals the CSV read by pyarrow, types included."""
    make_frame(conv)
    assert export_all(conv) == ["parquet"]
    got = pq.read_table(conv.folder / "data-frames" / "orders.parquet")
    assert got.equals(as_parquet_holds(pacsv.read_csv(io.BytesIO(CSV))))


def test_the_json_path_gives_the_csv_table(conv_json_only: Conv) -> None:
    """Without Parquet output (422), paging JSON rows gives the same table, types included."""
    conv = conv_json_only
    make_frame(conv)
    assert export_all(conv) == ["json"]
    got = pq.read_table(conv.folder / "data-frames" / "orders.parquet")
    assert got.equals(as_parquet_holds(pacsv.read_csv(io.BytesIO(CSV))))


def test_a_big_frame_pages_through_the_json_path(conv_json_only: Conv) -> None:
    """A synthesised frame of several pages is exported whole through JSON pages, in column order."""
    conv = conv_json_only
    conv.say("/bigframe big 2500 7")
    (info,) = conv.client.list_data_frames(conv.aid, conv.cid)
    result = export_frame(conv.client, conv.aid, conv.cid, info, conv.folder / "data-frames", page_rows=1000)
    got = pq.read_table(result.path)
    assert got.num_rows == 2500 and got.column_names == list(info.column_headers)
    assert [str(t) for t in got.schema.types][:5] == ["int64", "double", "string", "bool", "timestamp[ms]"]


def test_both_paths_agree_on_a_big_frame(conv: Conv) -> None:
    """The same synthesised frame exported natively and through JSON has the same values."""
    conv.say("/bigframe same 3000 5")
    (info,) = conv.client.list_data_frames(conv.aid, conv.cid)
    out = conv.folder / "data-frames"
    native = export_frame(conv.client, conv.aid, conv.cid, info, out, file_name="native.parquet")
    rows = export_frame(
        conv.client,
        conv.aid,
        conv.cid,
        info,
        out,
        file_name="json.parquet",
        parquet_supported=False,
        page_rows=1000,
    )
    assert (native.method, rows.method) == ("parquet", "json")
    a, b = pq.read_table(native.path), pq.read_table(rows.path)
    assert a.to_pylist() == b.to_pylist()


def test_an_unchanged_frame_is_not_exported_again(conv: Conv) -> None:
    """Once exported with its fingerprint, a frame is not planned again until it changes."""
    conv.say("/bigframe once 10")
    (info,) = conv.client.list_data_frames(conv.aid, conv.cid)
    result = export_frame(conv.client, conv.aid, conv.cid, info, conv.folder / "data-frames")
    exported = {info.name: result.fingerprint}
    assert plan_exports(conv.client.list_data_frames(conv.aid, conv.cid), exported) == []
    assert result.path.name == frame_file_name("once")


def test_a_frame_bigger_than_one_answer_comes_in_parquet_pages(conv_small_cap: Conv) -> None:
    """When the server caps an answer below the frame's size, the native path appends Parquet pages."""
    conv = conv_small_cap
    conv.say("/bigframe paged 2500 5")
    (info,) = conv.client.list_data_frames(conv.aid, conv.cid)
    out = conv.folder / "data-frames"
    native = export_frame(conv.client, conv.aid, conv.cid, info, out, file_name="native.parquet")
    assert native.method == "parquet" and native.rows == 2500
    got = pq.read_table(native.path)
    assert got.column("id").to_pylist() == list(range(2500))
    assert [p.name for p in out.iterdir()] == ["native.parquet"]


def test_parquet_pages_are_copied_into_the_file_not_decoded(conv_small_cap: Conv) -> None:
    """Each page's column chunks land in the exported file byte for byte: no value was decoded and re-encoded."""
    conv = conv_small_cap
    conv.say("/bigframe copied 2500 5")
    (info,) = conv.client.list_data_frames(conv.aid, conv.cid)
    result = export_frame(conv.client, conv.aid, conv.cid, info, conv.folder / "data-frames")
    exported = result.path.read_bytes()
    for offset in (0, 1000, 2000):
        page = io.BytesIO()
        conv.client.download_data_frame_parquet(conv.aid, conv.cid, info.name, page, offset=offset, limit=1000)
        data = page.getvalue()
        footer = int.from_bytes(data[-8:-4], "little")
        assert data[4 : len(data) - 8 - footer] in exported
    assert pq.ParquetFile(result.path).metadata.num_row_groups == 3


def test_pages_that_cannot_be_copied_are_decoded_instead(conv_small_cap: Conv, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a page cannot be joined by copying (here: the joiner refuses the second), every row still arrives."""
    conv = conv_small_cap
    conv.say("/bigframe refused 2500 5")
    (info,) = conv.client.list_data_frames(conv.aid, conv.cid)
    taken = 0
    real_take = rowgroups.Joiner.take

    def refuse_second(self: rowgroups.Joiner) -> int:
        nonlocal taken
        taken += 1
        if taken == 2:
            raise rowgroups.NotJoinable("refused by the test")
        return real_take(self)

    monkeypatch.setattr(rowgroups.Joiner, "take", refuse_second)
    out = conv.folder / "data-frames"
    result = export_frame(conv.client, conv.aid, conv.cid, info, out, file_name="decoded.parquet")
    assert taken == 2 and result.method == "parquet" and result.rows == 2500
    assert pq.read_table(result.path).column("id").to_pylist() == list(range(2500))
    assert [p.name for p in out.iterdir()] == ["decoded.parquet"]


def test_json_pages_larger_than_the_servers_cap_still_get_every_row(conv_small_cap: Conv) -> None:
    """Short JSON pages do not end the export before the listed row count is reached."""
    conv = conv_small_cap
    conv.say("/bigframe capped 2500 5")
    (info,) = conv.client.list_data_frames(conv.aid, conv.cid)
    result = export_frame(
        conv.client, conv.aid, conv.cid, info, conv.folder / "data-frames", parquet_supported=False, page_rows=1500
    )
    assert result.rows == 2500
    assert pq.read_table(result.path).column("id").to_pylist() == list(range(2500))
