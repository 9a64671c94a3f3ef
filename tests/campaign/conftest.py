"""The campaign's shared fixture: a ``Rig`` on the module's own ``emu`` fixture (each module picks its key and
emulator options)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.emulator import EmulatorServer
from tests.campaign.rig import Rig


@pytest.fixture
def rig(emu: EmulatorServer, tmp_path: Path) -> Iterator[Rig]:
    r = Rig.make(emu, tmp_path)
    try:
        yield r
    finally:
        r.stop()
