"""Kill points (convsync.killpoints): a real SIGKILL right after a named durable step, and the enumerated
campaign at CI size."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from convsync.emulator import EmulatorOptions, EmulatorServer
from convsync.killpoints import KILL_AT_ENV, STEPS
from tests.campaign.crash import Daemon, Settings, run_campaign, write_config
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
KEY = "s4w_killpoints-key"
PROMPT_PATH = ("prompt.exchanged", "prompt.stored", "prompt.taken", "send.marked", "send.accepted", "outbox.done")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


def test_a_kill_point_kills_at_its_nth_time_and_nothing_runs_after_it() -> None:
    """CONVSYNC_KILL_AT=step@2: the second time the step is reached the process dies of SIGKILL at once."""
    code = (
        "from convsync import killpoints\n"
        "killpoints.reached('prompt.stored'); print('first', flush=True)\n"
        "killpoints.reached('prompt.taken'); print('other step', flush=True)\n"
        "killpoints.reached('prompt.stored'); print('second', flush=True)\n"
    )
    done = run_python(code, **{KILL_AT_ENV: "prompt.stored@2"})
    assert done.returncode == -9
    assert done.stdout.split() == ["first", "other", "step"]


def test_without_the_variable_kill_points_are_a_function_that_does_nothing() -> None:
    """In a normal run ``reached`` is the no-op chosen once at import: nothing is checked per call."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSYNC_KILL")}
    done = subprocess.run(
        [sys.executable, "-c", "from convsync import killpoints; print(killpoints.reached.__name__)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=REPO,
    )
    assert done.stdout.strip() == "_noop"


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(api_key=KEY)) as server:
        yield server


def test_a_repeated_save_killed_right_after_its_exchange_is_sent_after_the_restart(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    """Saves "ok 2", "ok 2"; `convsync run` is SIGKILLed right after the second exchange of prompt.txt (before its
    commit): after the restart the server has both, once each."""
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    (root / ".convsync-root").write_text("convsync root\n")
    aid = emu.agent_id("Demo Agent")
    cid = emu.create_conversation(aid, "Twice")
    config = tmp_path / "config.yaml"
    write_config(config, emu, root, state)
    env = {**os.environ, "CONVSYNC_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    daemon = Daemon(config, tmp_path / "daemon.log", {**env, KILL_AT_ENV: "prompt.exchanged@2"})
    folder = root / "Demo Agent" / "Twice"
    daemon.start()
    try:
        wait_until((folder / "prompt.txt").exists, 30, what="the folder")
        (folder / "prompt.txt").write_text("ok 2\n")
        wait_until(lambda: emu.user_messages(cid) == ["ok 2"], 30, what="the first ok 2")
        wait_until(lambda: (folder / "prompt.txt").read_text() == "", 30, what="prompt.txt taken")
        (folder / "prompt.txt").write_text("ok 2\n")
        wait_until(lambda: not daemon.alive(), 30, what="the daemon to kill itself after the exchange")
        assert daemon.kill() == -9
        assert (folder / ".prompt.taking").read_text() == "ok 2\n"
        daemon.env = env
        daemon.start()
        wait_until(lambda: emu.user_messages(cid) == ["ok 2", "ok 2"], 30, what="the second ok 2")
    finally:
        if daemon.alive():
            daemon.terminate()
    assert emu.user_messages(cid) == ["ok 2", "ok 2"]


@pytest.mark.timeout(300)
def test_a_kill_after_each_step_of_the_prompt_path_loses_and_duplicates_nothing(
    tmp_path: Path, campaign_seed: int
) -> None:
    """The enumerated campaign at CI size: a life ends right after each durable step of the prompt path (take,
    commit, send, done); after a clean run nothing is lost, doubled or torn."""
    seed = campaign_seed
    result = run_campaign(Settings(seed=seed, kills=0, steps=PROMPT_PATH, log=lambda _: None), tmp_path / "enum")
    detail = f"{result.figures()}\n(rerun with CONVSYNC_CAMPAIGN_SEED={seed}; daemon log in {tmp_path})"
    assert all(result.phases[step] == 1 for step in PROMPT_PATH), detail
    assert (result.lost, result.duplicated, result.torn) == (0, 0, 0), detail
    assert result.ok, detail


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_kill_after_every_durable_step_twice_loses_and_duplicates_nothing(tmp_path: Path, campaign_seed: int) -> None:
    """As `bench/crash_campaign.py --enumerate --rounds 2`: every step of STEPS killed at twice, then 0/0/0."""
    seed = campaign_seed
    steps = tuple(STEPS) * 2
    result = run_campaign(Settings(seed=seed, kills=0, steps=steps, settle_seconds=300.0), tmp_path / "enum")
    assert result.ok, f"{result.figures()}\n(rerun with CONVSYNC_CAMPAIGN_SEED={seed})"
