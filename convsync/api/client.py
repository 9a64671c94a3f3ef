"""The Agent API client (interface skeleton: implementation in progress).

Every public method translates httpx errors into ``convsync.errors`` and returns typed models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from convsync.api.models import (
    Agent,
    Conversation,
    DataFrameInfo,
    Message,
    RemoteFile,
    StreamEvent,
)

# Called with (bytes done, bytes total) while a transfer runs; total is 0 when unknown.
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``requests`` requests in any ``per_seconds`` window (client side)."""

    requests: int = 30
    per_seconds: float = 10.0


class AgentClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        verify: bool | str = True,
        use_truststore: bool = False,
        rate_limit: RateLimit | None = RateLimit(),
        max_retries: int = 4,
        transport: Any = None,
    ) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def list_agents(self, name: str | None = None) -> list[Agent]:
        raise NotImplementedError

    def get_agent(self, aid: str) -> Agent:
        raise NotImplementedError

    def list_conversations(self, aid: str) -> list[Conversation]:
        raise NotImplementedError

    def create_conversation(self, aid: str, name: str) -> Conversation:
        raise NotImplementedError

    def delete_conversation(self, aid: str, cid: str) -> Conversation:
        raise NotImplementedError

    def get_messages(self, aid: str, cid: str) -> list[Message]:
        raise NotImplementedError

    def post_message(self, aid: str, cid: str, content: str) -> list[Message]:
        raise NotImplementedError

    def stream_message(self, aid: str, cid: str, content: str) -> Iterator[StreamEvent]:
        raise NotImplementedError

    def list_files(self, aid: str, cid: str) -> list[RemoteFile]:
        raise NotImplementedError

    def upload_files(
        self, aid: str, cid: str, files: Sequence[tuple[str, Path]], progress: Progress | None = None
    ) -> list[RemoteFile]:
        raise NotImplementedError

    def download_file(
        self, aid: str, cid: str, file_ref: str, out: BinaryIO, progress: Progress | None = None
    ) -> int:
        raise NotImplementedError

    def list_data_frames(self, aid: str, cid: str, num_samples: int = 0) -> list[DataFrameInfo]:
        raise NotImplementedError

    def get_data_frame_rows(
        self,
        aid: str,
        cid: str,
        name: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        column_names: Sequence[str] | None = None,
        order_by: str | None = None,
    ) -> list[dict[str, Any]]:
        raise NotImplementedError

    def download_data_frame_parquet(
        self, aid: str, cid: str, name: str, out: BinaryIO, progress: Progress | None = None
    ) -> int:
        raise NotImplementedError
