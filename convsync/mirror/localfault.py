"""A conversation folder convsync cannot write (read-only mount, full disk, permissions): probe, not back off.

A pass that failed to write backs off exponentially (it may have asked the server, and a disk that stays full
fails the same way), but after a few seconds of a read-only root that backoff would hold the conversation back
for up to half a minute once the root is writable again. So the folder is also probed every ``PROBE_SECONDS``
with a tiny file of its own (no request): when the probe, having failed, succeeds, the fault has cleared, the
backoff is reset and the pass runs at once. (A full disk usually still takes one small file: there the probe
never fails and the backoff alone decides.) ``errors.log`` cannot be written
while the fault lasts, so the episode is recorded there when it ends: when it began, how long it lasted, what
failed.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from convsync.mirror.atomic import TEMP_PREFIX

PROBE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class LocalFault:
    since: float  # wall clock, when the first write failed
    error: str
    retry_at: float  # monotonic: the backoff's next pass, unless a probe sees the fault clear before
    probe_failed: bool = False  # a probe failed since: its next success means the fault cleared

    def episode(self, folder: Path, now: float) -> str:
        """The ``errors.log`` line of the episode, written once writing works again."""
        began = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since))
        return (
            f"could not write in {folder} from {began} for {now - self.since:.0f} s ({self.error}); "
            "it works again and convsync caught up, nothing was lost"
        )


def writable(folder: Path) -> bool:
    """Whether a small file can be created, written and removed in ``folder`` now."""
    probe = folder / f"{TEMP_PREFIX}probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        return False
    try:
        os.write(fd, b"x")
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            probe.unlink()
