"""Data frames: the list with samples, a frame as records JSON or Parquet, and the slicer's parameters."""

from __future__ import annotations

import io
from datetime import datetime

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from convsync.emulator import EmulatorServer

CSV = b"product,sales,price\nWidget,100,2.5\nGadget,300,1.25\nbolt,200,0.5\n"


@pytest.fixture
def frame(api: httpx.Client, conv: str) -> str:
    """A frame ``sales`` made by the agent from an uploaded CSV; returns its route."""
    api.post(f"{conv}/files", files=[("files", ("sales.csv", CSV))])
    api.post(f"{conv}/messages", json={"content": "/frame sales.csv"})
    return f"{conv}/data-frames/sales"


def rows(api: httpx.Client, route: str, **params: object) -> list[dict[str, object]]:
    response = api.get(route, params=params)
    assert response.status_code == 200, response.text
    return list(response.json())


def test_list_is_a_bare_array_with_the_creation_fields(api: httpx.Client, conv: str, cid: str, frame: str) -> None:
    """GET data-frames answers a bare array of DataFrameCreationAPI objects."""
    [item] = api.get(f"{conv}/data-frames").json()
    assert item["name"] == "sales" and item["thread_id"] == cid
    assert item["num_rows"] == 3 and item["num_columns"] == 3
    assert item["column_headers"] == ["product", "sales", "price"]
    assert item["input_id_type"] == "file" and item["file_ref"] == "sales.csv"
    assert item["sample_rows"] == []
    assert {
        "data_frame_id",
        "sheet_name",
        "description",
        "created_at",
        "parent_data_frame_ids",
        "file_id",
    } <= set(item)
    assert item["sql_dialect"] is None and item["sql_query"] is None


def test_num_samples_n_gives_the_first_rows_as_lists(api: httpx.Client, conv: str, frame: str) -> None:
    """``num_samples=2`` gives the first two rows as lists in column order."""
    [item] = api.get(f"{conv}/data-frames", params={"num_samples": 2}).json()
    assert item["sample_rows"] == [["Widget", 100, 2.5], ["Gadget", 300, 1.25]]


def test_num_samples_minus_one_gives_every_row(api: httpx.Client, conv: str, frame: str) -> None:
    """``num_samples=-1`` gives all rows."""
    [item] = api.get(f"{conv}/data-frames", params={"num_samples": -1}).json()
    assert len(item["sample_rows"]) == 3


def test_frame_as_records_json(api: httpx.Client, frame: str) -> None:
    """The default output is an array of row objects with keys in column order."""
    response = api.get(frame)
    assert response.headers["content-type"] == "application/json"
    assert response.json()[0] == {"product": "Widget", "sales": 100, "price": 2.5}
    assert list(response.json()[0]) == ["product", "sales", "price"]


def test_offset_and_limit_slice(api: httpx.Client, frame: str) -> None:
    """``offset``/``limit`` select a window of rows."""
    assert [r["product"] for r in rows(api, frame, offset=1, limit=1)] == ["Gadget"]


def test_column_names_select_case_insensitively(api: httpx.Client, frame: str) -> None:
    """``column_names`` is comma-separated and matched ignoring case, in the order asked."""
    assert rows(api, frame, column_names="PRICE, product", limit=1) == [{"price": 2.5, "product": "Widget"}]


def test_order_by_descending_with_minus(api: httpx.Client, frame: str) -> None:
    """``order_by=-sales`` sorts descending; the sort happens before the slice."""
    assert [r["sales"] for r in rows(api, frame, order_by="-Sales")] == [300, 200, 100]
    assert [r["sales"] for r in rows(api, frame, order_by="sales", limit=1)] == [100]


def test_sort_select_then_slice(api: httpx.Client, frame: str) -> None:
    """Sorting by a column that is not selected still orders the rows."""
    assert rows(api, frame, order_by="-sales", column_names="product", offset=1) == [
        {"product": "bolt"},
        {"product": "Widget"},
    ]


def test_unknown_column_is_the_servers_500(api: httpx.Client, frame: str) -> None:
    """An unknown column becomes 500 ``unexpected`` "Internal server error while slicing data frame"."""
    response = api.get(frame, params={"column_names": "nope"})
    assert response.status_code == 500
    assert response.json()["error"] == {
        "error_id": response.json()["error"]["error_id"],
        "code": "unexpected",
        "message": "Internal server error while slicing data frame",
    }


def test_unknown_order_by_column_is_500(api: httpx.Client, frame: str) -> None:
    """``order_by`` on a missing column fails the same way."""
    assert api.get(frame, params={"order_by": "-ghost"}).status_code == 500


def test_unknown_frame_is_404(api: httpx.Client, conv: str, cid: str) -> None:
    """An unknown frame name gives 404 naming the frame and the thread."""
    response = api.get(f"{conv}/data-frames/ghost")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == f"Data frame ghost not found in thread {cid}"


@pytest.mark.parametrize("limit", [-2, 100_001])
def test_limit_outside_bounds_is_422(api: httpx.Client, frame: str, limit: int) -> None:
    """``limit`` must be within -1..100000."""
    response = api.get(frame, params={"limit": limit})
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("Request validation failed: query -> limit: ")


def test_unknown_output_format_is_422(api: httpx.Client, frame: str) -> None:
    """Only ``json`` and ``parquet`` exist; ``csv`` gives 422."""
    response = api.get(frame, params={"output_format": "csv"})
    assert response.status_code == 422
    assert response.json()["error"]["message"] == (
        "Request validation failed: query -> output_format: Input should be 'json' or 'parquet'"
    )


def test_parquet_output(api: httpx.Client, frame: str) -> None:
    """``output_format=parquet`` answers a Parquet file as an octet-stream attachment."""
    response = api.get(frame, params={"output_format": "parquet", "order_by": "-sales"})
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == "attachment; filename=sales.parquet"
    table = pq.read_table(io.BytesIO(response.content))
    assert table.column_names == ["product", "sales", "price"]
    assert table.column("sales").to_pylist() == [300, 200, 100]


def test_parquet_switched_off_is_422_like_an_older_server(api: httpx.Client, emu: EmulatorServer, frame: str) -> None:
    """With ``parquet_output=False`` only ``json`` is valid."""
    emu.configure(parquet_output=False)
    response = api.get(frame, params={"output_format": "parquet"})
    assert response.status_code == 422
    assert response.json()["error"]["message"].endswith("Input should be 'json'")


def test_default_limit_is_1000_and_minus_one_is_all(api: httpx.Client, conv: str) -> None:
    """Without ``limit`` 1000 rows come back; ``limit=-1`` gives them all."""
    api.post(f"{conv}/messages", json={"content": "/bigframe big 1500 2"})
    assert len(rows(api, f"{conv}/data-frames/big")) == 1000
    assert len(rows(api, f"{conv}/data-frames/big", limit=-1)) == 1500


def test_row_cap_applies_to_minus_one(api: httpx.Client, emu: EmulatorServer, conv: str) -> None:
    """The slicer never returns more than its cap, even for ``limit=-1``."""
    emu.configure(frame_row_cap=10)
    api.post(f"{conv}/messages", json={"content": "/bigframe capped 50 1"})
    assert len(rows(api, f"{conv}/data-frames/capped", limit=-1)) == 10


def test_values_are_made_json_safe(api: httpx.Client, conv: str) -> None:
    """NaN and infinities become null, datetimes isoformat strings, bytes text."""
    table = pa.table(
        {
            "x": pa.array([1.5, float("nan"), float("inf")]),
            "at": pa.array([datetime(2026, 1, 10, 12, 0, 0, 5)] * 3),
            "raw": pa.array([b"abc", b"\xff", None]),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    api.post(f"{conv}/files", files=[("files", ("odd.parquet", buffer.getvalue()))])
    api.post(f"{conv}/messages", json={"content": "/frame odd.parquet"})
    assert rows(api, f"{conv}/data-frames/odd") == [
        {"x": 1.5, "at": "2026-01-10T12:00:00.000005", "raw": "abc"},
        {"x": None, "at": "2026-01-10T12:00:00.000005", "raw": "ÿ"},
        {"x": None, "at": "2026-01-10T12:00:00.000005", "raw": None},
    ]


def test_frame_names_are_matched_exactly(api: httpx.Client, conv: str, frame: str) -> None:
    """Frame names are case-sensitive."""
    assert api.get(f"{conv}/data-frames/SALES").status_code == 404
