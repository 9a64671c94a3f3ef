"""Bad configs: each is one short problem naming the key, the line and the fix; convsync exits 78."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from convsync.config import load_config
from convsync.errors import ConfigError

KEY = "s4w_bad-config-test-key-0123456789"
URL = "https://agents.example.com/tenants/t1/api/v2"


@dataclass(frozen=True)
class Case:
    id: str
    yaml: str  # "{dir}" is replaced by the test's temp dir
    expect: tuple[str, ...]  # substrings of the one problem: the key (or line/column), the fix
    key_file: tuple[str, int] | None = None  # (content, mode) written to {dir}/key
    key_dir: bool = False  # {dir}/key is a folder
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    Case(
        "broken-yaml-tab",
        f"server:\n  url: {URL}\n\tapi_key_env: X\n",
        ("line 3, column 1", "not valid YAML", "Fix: indent with spaces, never tabs"),
    ),
    Case(
        "broken-yaml-unclosed-quote",
        f'server:\n  url: "{URL}\nroot: x\n',
        ("line 4, column 1", "not valid YAML", "from line 2", "Fix: correct the YAML there"),
    ),
    Case(
        "unknown-key-typo",
        f"server:\n  url: {URL}\n  verify_tsl: false\n",
        ("line 3", "server.verify_tsl", "unknown key", "did you mean server.verify_tls?"),
    ),
    Case(
        "unknown-key-wrong-level",
        f"server:\n  url: {URL}\ntimeout_seconds: 5\n",
        ("line 3", "timeout_seconds: unknown key", "it belongs at server.timeout_seconds"),
    ),
    Case(
        "unknown-key-the-key-itself",
        f"server:\n  url: {URL}\n  api_key: s4w_pasted-secret-value\n",
        ("line 3", "server.api_key", "do not put the key itself in the config", "api_key_file"),
    ),
    Case(
        "wrong-type-number",
        f"server:\n  url: {URL}\n  timeout_seconds: soon\n",
        ("line 3", "server.timeout_seconds", 'expected a number, got the text "soon"', "timeout_seconds: 30"),
    ),
    Case(
        "wrong-type-bool",
        f"server:\n  url: {URL}\n  verify_tls: 1\n",
        ("line 3", "server.verify_tls", "expected true or false", "verify_tls: true"),
    ),
    Case(
        "wrong-type-mapping",
        f"server:\n  url: {URL}\npoll: 5\n",
        ("line 3", "poll", "expected a mapping", "indent the keys of poll"),
    ),
    Case(
        "wrong-type-whole-number",
        f"server:\n  url: {URL}\ndebounce_ms: 0.5\n",
        ("line 3", "debounce_ms", "expected a whole number", "debounce_ms: 100"),
    ),
    Case(
        "bad-value-negative",
        f"server:\n  url: {URL}\npoll:\n  active_seconds: -1\n",
        ("line 4", "poll.active_seconds", "out of range", "greater than 0"),
    ),
    Case(
        "bad-value-rate-limit",
        f"server:\n  url: {URL}\n  rate_limit: {{requests: 0}}\n",
        ("line 3", "server.rate_limit.requests", "out of range", "at least 1"),
    ),
    Case(
        "bad-value-background-share",
        f"server:\n  url: {URL}\n  rate_limit: {{background_share: 1.5}}\n",
        ("line 3", "server.rate_limit.background_share", "out of range", "at most 1"),
    ),
    Case(
        "bad-enum-on-local-delete",
        f"server:\n  url: {URL}\non_local_delete: delete\n",
        ("line 3", "on_local_delete", '"delete" is not allowed', "detach, delete_remote"),
    ),
    Case(
        "bad-enum-server-auth",
        f"server:\n  url: {URL}\n  auth: basic\n",
        ("line 3", "server.auth", '"basic" is not allowed', "bearer, snowflake, none"),
    ),
    Case(
        "bad-enum-log-level",
        f"server:\n  url: {URL}\nlog_level: loud\n",
        ("line 3", "log_level", '"loud" is not allowed', "debug, info, warning, error, critical"),
    ),
    Case(
        "bad-agents-word",
        f"server:\n  url: {URL}\nagents: some\n",
        ("line 3", "agents", "agents: all"),
    ),
    Case(
        "bad-agent-id",
        f"server:\n  url: {URL}\nagents:\n  - id: 42x\n",
        ("line 4", "agents[0].id", "is not an agent id", "select the agent with `name:`"),
    ),
    Case(
        "bad-agent-folder",
        f"server:\n  url: {URL}\nagents:\n  - name: Sales\n    folder: ../elsewhere\n",
        ("line 5", "agents[0].folder", "plain folder name"),
    ),
    Case(
        "duplicate-key",
        f"server:\n  url: {URL}\nroot: /a\nroot: /b\n",
        ("line 4", "root: appears twice", "keep one of them"),
    ),
    Case(
        "missing-url",
        "server:\n  verify_tls: true\n",
        ("line 1", "server.url: missing", "url: https://HOST/tenants/TENANT/api/v2"),
    ),
    Case(
        "missing-server-section",
        "root: ~/Mirror\n",
        ("server.url: missing", "add `server:`"),
    ),
    Case(
        "empty-file",
        "",
        ("server.url: missing", "add `server:`"),
    ),
    Case(
        "url-without-scheme",
        "server:\n  url: agents.example.com/tenants/t1/api/v2\n",
        ("line 2", "server.url", "does not start with https://", "url: https://"),
    ),
    Case(
        "url-without-host",
        "server:\n  url: https:///api/v2\n",
        ("line 2", "server.url", "no host name"),
    ),
    Case(
        "two-key-sources",
        f"server:\n  url: {URL}\n  api_key_env: CONVSYNC_API_KEY\n  api_key_file: /k\n",
        ("server.api_key_file", "only one key source", "keep one of them"),
    ),
    Case(
        "key-file-missing",
        f"server:\n  url: {URL}\n  api_key_file: {{dir}}/missing-key\n",
        ("line 3", "server.api_key_file", "does not exist", "umask 077"),
    ),
    Case(
        "key-file-unreadable-folder",
        f"server:\n  url: {URL}\n  api_key_file: {{dir}}/key\n",
        ("line 3", "server.api_key_file", "not a regular file"),
        key_dir=True,
    ),
    Case(
        "key-file-readable-by-group",
        f"server:\n  url: {URL}\n  api_key_file: {{dir}}/key\n",
        ("line 3", "server.api_key_file", "accessible by group or others (mode 0640)", "chmod 600 {dir}/key"),
        key_file=(KEY, 0o640),
    ),
    Case(
        "key-file-readable-by-others",
        f"server:\n  url: {URL}\n  api_key_file: {{dir}}/key\n",
        ("line 3", "server.api_key_file", "mode 0604", "chmod 600 {dir}/key"),
        key_file=(KEY, 0o604),
    ),
    Case(
        "key-file-empty",
        f"server:\n  url: {URL}\n  api_key_file: {{dir}}/key\n",
        ("line 3", "server.api_key_file", "empty key", "put the API key there"),
        key_file=("\n", 0o600),
    ),
    Case(
        "key-env-unset",
        f"server:\n  url: {URL}\n  api_key_env: CONVSYNC_TEST_UNSET_VARIABLE\n",
        ("line 3", "server.api_key_env", "is not set", "export CONVSYNC_TEST_UNSET_VARIABLE="),
    ),
    Case(
        "key-env-empty",
        f"server:\n  url: {URL}\n  api_key_env: CONVSYNC_TEST_EMPTY\n",
        ("line 3", "server.api_key_env", "is empty", "export CONVSYNC_TEST_EMPTY="),
        env={"CONVSYNC_TEST_EMPTY": " "},
    ),
    Case(
        "key-env-holds-the-key",
        f"server:\n  url: {URL}\n  api_key_env: {KEY}\n",
        ("line 3", "server.api_key_env", "looks like an API key itself", "api_key_env: CONVSYNC_API_KEY"),
    ),
    Case(
        "key-command-fails",
        f"server:\n  url: {URL}\n  api_key_command: [sh, -c, 'echo locked >&2; exit 3']\n",
        ("line 3", "server.api_key_command", "failed with exit status 3: locked", "run the command yourself"),
    ),
    Case(
        "key-command-not-found",
        f"server:\n  url: {URL}\n  api_key_command: convsync-no-such-command --print\n",
        ("line 3", "server.api_key_command", "command not found", "full path"),
    ),
]


def _write(case: Case, directory: Path) -> Path:
    if case.key_file is not None:
        key = directory / "key"
        key.write_text(case.key_file[0])
        key.chmod(case.key_file[1])
    if case.key_dir:
        (directory / "key").mkdir()
    path = directory / "config.yaml"
    path.write_text(case.yaml.replace("{dir}", str(directory)))
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_config_gives_one_short_problem_with_key_and_fix(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad config raises ConfigError with exactly one short problem naming the key/line and the fix."""
    monkeypatch.setenv("CONVSYNC_API_KEY", KEY)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    path = _write(case, tmp_path)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    problems = caught.value.problems
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.startswith(str(path)), problem
    for expected in case.expect:
        assert expected.replace("{dir}", str(tmp_path)) in problem, problem
    assert "Fix:" in problem
    assert len(problem.replace(str(tmp_path), "DIR")) < 240, problem
    assert KEY not in problem


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_config_makes_convsync_exit_78(case: Case, tmp_path: Path) -> None:
    """`convsync sync --config BAD` prints the problem with its fix on stderr and exits with status 78."""
    path = _write(case, tmp_path)
    env = {**os.environ, "CONVSYNC_API_KEY": KEY, **case.env}

    done = subprocess.run(
        [sys.executable, "-m", "convsync", "sync", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert done.returncode == 78, done.stderr
    assert "configuration problem" in done.stderr
    assert case.expect[0].replace("{dir}", str(tmp_path)) in done.stderr
    assert "Fix:" in done.stderr
    assert KEY not in done.stderr + done.stdout


def test_every_problem_is_reported_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config with several problems reports all of them, in file order, in one ConfigError."""
    monkeypatch.delenv("CONVSYNC_API_KEY", raising=False)
    path = tmp_path / "config.yaml"
    path.write_text(
        "server:\n  url: ftp://x\n  timeout_seconds: never\n  verfy_tls: false\non_local_delete: shred\nlog_level: 7\n"
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    problems = caught.value.problems
    keys = ["server.url", "server.timeout_seconds", "server.verfy_tls", "on_local_delete", "log_level"]
    assert len(problems) == 6
    for key, problem in zip(keys, problems, strict=False):
        assert f": {key}" in problem
    assert "CONVSYNC_API_KEY is not set" in problems[-1]
    lines = [int(p.split(" line ")[1].split(":")[0]) for p in problems if " line " in p]
    assert lines == sorted(lines)


def test_missing_config_file_names_where_it_looked_and_how_to_create_one(tmp_path: Path) -> None:
    """Without a config file the error says which file was looked for and suggests convsync init."""
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")

    (problem,) = caught.value.problems
    assert str(tmp_path / "nope.yaml") in problem
    assert "--config" in problem
    assert "convsync init --url" in problem
