"""What the engine tells about itself: the ``STATUS=`` summary and the report of one ``convsync sync`` pass."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    """A snapshot for ``STATUS=`` and the log."""

    conversations: int
    queued_prompts: int
    queued_uploads: int
    last_error: str | None

    def __str__(self) -> str:
        def plural(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 else 's'}"

        text = (
            f"{plural(self.conversations, 'conversation')}, {plural(self.queued_prompts, 'prompt')} and "
            f"{plural(self.queued_uploads, 'upload')} queued"
        )
        return f"{text}; last error: {self.last_error}" if self.last_error else text


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one ``run_once`` pass did."""

    agents: int
    conversations: int
    queued_prompts: int
    queued_uploads: int
    errors: tuple[str, ...]

    def __str__(self) -> str:
        text = (
            f"{self.agents} agent(s), {self.conversations} conversation(s); "
            f"{self.queued_prompts} prompt(s) and {self.queued_uploads} upload(s) still queued"
        )
        return text + (f"; {len(self.errors)} problem(s): {self.errors[0]}" if self.errors else "")
