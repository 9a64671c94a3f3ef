"""The crash campaign at CI size: SIGKILL `convsync run` at 24 points of real work; nothing is lost or doubled."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.campaign.crash import Settings, run_campaign

KILLS = 24


@pytest.mark.timeout(300)
def test_sigkill_at_random_points_loses_nothing_and_sends_nothing_twice(tmp_path: Path, campaign_seed: int) -> None:
    """After 24 SIGKILLs (mid-send, mid-stream, mid-transfer, mid-export, mid-write) and a clean run, every
    prompt and upload reached the server exactly once and in order, and no file is torn or left behind."""
    seed = campaign_seed
    lines: list[str] = []
    result = run_campaign(Settings(seed=seed, kills=KILLS, log=lines.append), tmp_path / "campaign")
    print(result.figures())  # the seed and figures show with -s and in the failure report
    detail = f"{result.figures()}\n(rerun with CONVSYNC_CAMPAIGN_SEED={seed}; daemon log in {tmp_path})"
    assert result.kills == KILLS, detail
    assert result.lost == 0, detail
    assert result.duplicated == 0, detail
    assert result.out_of_order == 0, detail
    assert result.torn == 0, detail
    assert result.temp_files == 0, detail
    assert result.ok, detail


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_long_campaign_of_200_kills_loses_and_duplicates_nothing(tmp_path: Path, campaign_seed: int) -> None:
    """The long run (as bench/crash_campaign.py): 200 SIGKILLs, then nothing lost, duplicated or torn."""
    seed = campaign_seed
    result = run_campaign(Settings(seed=seed, kills=200, new_folders=4, settle_seconds=300.0), tmp_path / "long")
    assert result.ok, f"{result.figures()}\n(rerun with CONVSYNC_CAMPAIGN_SEED={seed})"
