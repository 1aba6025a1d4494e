"""The README is true: its tables are the code's, its commands exist and run, and the
troubleshooting messages are the ones the code prints.

* The configuration table lists exactly the config keys, each with its real
  default and environment variable; the Lambda's table exactly the variables
  settings.py reads.
* Every `omprog-forwarder COMMAND` and every `--option` the README names exists,
  and every command and option of the CLI is named in the README.
* The shell lines of "Operating it" run, in order, against the local stack
  (device paths replaced by a sandbox's); `make demo` / `make test` are targets
  whose recipes run what the README says (the demo test runs the demo, CI runs
  make test).
* Each troubleshooting message is produced for real by the code, and matches
  the README's text (`…` standing for what varies).
"""

from __future__ import annotations

import argparse
import collections
import errno
import logging
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omprog_forwarder import cli, config
from omprog_forwarder.errors import (
    AuthError,
    ConfigError,
    CredentialsRejectedError,
    DiskFullError,
    PermanentSendError,
    SpoolFullError,
    TransientSendError,
)
from omprog_forwarder.ingest.batcher import Batcher

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
DEVICE_CONF = "/etc/omprog-forwarder/forwarder.conf"


def section(title: str) -> str:
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 4)
    return README[start : end if end > 0 else None]


def table_rows(text: str, first_header: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
        rows.append([cell.strip() for cell in cells])
    return rows


def unquote(cell: str) -> str:
    return cell.strip("`")


# ---------------------------------------------------------------- configuration


CONFIG_ROWS = table_rows(section("Configuration"), "key")


def test_the_configuration_table_has_every_key_once_and_nothing_else() -> None:
    keys = [unquote(row[0]) for row in CONFIG_ROWS]
    assert collections.Counter(keys) == collections.Counter(config.KEYS)


@pytest.mark.parametrize("row", CONFIG_ROWS, ids=lambda row: unquote(row[0]))
def test_each_documented_default_and_variable_is_the_codes(row: list[str]) -> None:
    key, default, variable = unquote(row[0]), unquote(row[1]), unquote(row[2])
    assert variable == config.ENV_PREFIX + key.upper()
    real = getattr(config.Config(), key)
    if default:
        assert config.load(None, {key: default}, environ={}) == config.Config(**{key: real})
        assert config._PARSERS[key](default) == real
    else:
        assert real == "", f"{key} has a default the README does not show"


def lambda_variables_read() -> set[str]:
    source = (REPO / "lambda" / "settings.py").read_text(encoding="utf-8")
    return set(re.findall(r"""get\(\s*"([A-Z_]+)\"""", source)) | set(
        re.findall(r"""environ\.get\(\s*"([A-Z_]+)\"""", source)
    )


def test_the_lambda_table_names_exactly_the_variables_the_function_reads() -> None:
    rows = table_rows(section("Configuration"), "variable")
    named = {v.strip() for row in rows for v in unquote(row[0]).replace("`", "").split(",")}
    assert named == lambda_variables_read()


# ---------------------------------------------------------------- commands and options


def cli_surface() -> dict[str, set[str]]:
    """command -> its options, from the real parser."""
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, command in sub.choices.items():
        out[name] = {
            opt
            for action in command._actions
            for opt in action.option_strings
            if opt.startswith("--")
        } - {"--help"}
    return out


def readme_commands() -> dict[str, set[str]]:
    """command -> the options the README uses with it (in code spans and blocks)."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    for m in re.finditer(r"omprog-forwarder ([a-z]+)((?:[^`\n|])*)", README):
        command, rest = m.group(1), m.group(2)
        found[command] |= set(re.findall(r"(--[a-z][a-z-]*)", rest))
    return found


def test_every_command_the_readme_names_exists_and_every_command_is_named() -> None:
    surface, named = cli_surface(), readme_commands()
    assert set(named) - {"forwarder"} <= set(surface), set(named) - set(surface)
    assert set(surface) <= set(named)


def test_every_option_the_readme_names_exists_for_its_command() -> None:
    surface = cli_surface()
    for command, options in readme_commands().items():
        if command in surface:
            assert options <= surface[command], (command, options - surface[command])


def test_every_option_of_the_cli_is_in_the_readme() -> None:
    mentioned = set(re.findall(r"(--[a-z][a-z-]*)", README))
    everything = set().union(*cli_surface().values()) | {"--version"}
    assert everything <= mentioned, everything - mentioned


# ---------------------------------------------------------------- the commands run


def shell_blocks(text: str) -> list[str]:
    return [
        line.strip()
        for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_the_first_screens_commands_are_make_targets_that_do_what_it_says() -> None:
    first = shell_blocks(README[: README.index("\n## ")])
    assert [line.split("#")[0].strip() for line in first] == ["make demo", "make test"]
    recipe = subprocess.run(
        ["make", "-n", "demo", "test", "VENV=.venv"], cwd=REPO, capture_output=True, text=True
    )
    assert recipe.returncode == 0, recipe.stderr
    assert "-m devstack.demo" in recipe.stdout  # run for real by tests/devstack/test_demo.py
    assert "-m pytest" in recipe.stdout  # run for real by CI


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from devstack.stack import LocalStack

    with LocalStack() as stack:
        yield stack


def test_the_operating_commands_run_against_the_local_stack(local_stack, tmp_path) -> None:
    """Operator lines first (they provision pi-0001), then the device lines, then the rest."""
    lines = shell_blocks(section("Operating it"))
    assert lines, "the section has commands"
    operator = [line for line in lines if "--stack" in line]
    device = [line for line in lines if DEVICE_CONF in line]
    assert sorted(operator + device) == sorted(lines), "every line is one or the other"
    conf = tmp_path / "pi-0001.conf"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OMPROG_"))}
    env.update(local_stack.operator_environ())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    from support.rsyslogd import render_project_conf

    snippet = tmp_path / "60-omprog-forwarder.conf"
    snippet.write_text(
        render_project_conf(
            {
                "binary": f"/opt/omprog-forwarder/bin/omprog-forwarder run --config {conf}",
                "queue.spoolDirectory": str(tmp_path),
                "output": str(tmp_path / "out.log"),
            }
        )
    )
    main = tmp_path / "rsyslog.conf"
    main.write_text(f'global(workDirectory="{tmp_path}")\ninclude(file="{snippet}")\n')
    extra = {"check": ["--rsyslog-conf", str(main), "--rsyslog-snippet", str(snippet)]}
    order = [operator[0], *device, *operator[1:]]
    for line in order:
        argv = shlex.split(line)
        argv = [str(conf) if a in (DEVICE_CONF, "pi-0001.conf") else a for a in argv]
        argv += extra.get(argv[1], [])
        if argv[1] in ("check", "status", "ship", "replay"):
            argv += ["--spool-dir", str(tmp_path / "spool")]
        proc = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"{line}\n{proc.stdout}{proc.stderr}"


# ---------------------------------------------------------------- troubleshooting


def documented_messages() -> list[str]:
    text = section("Troubleshooting")
    items = re.findall(r"^\s*\d+\.\s+(.*?)(?=^\s*\d+\.\s|\n\n)", text, re.M | re.S)
    messages = []
    for item in items:
        first = re.match(r"`([^`]*)`", " ".join(item.split()))
        assert first, item
        messages.append(first.group(1))
    return messages


def as_pattern(documented: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in documented.split("…")]
    return re.compile(".*".join(parts), re.S)


class Scripted:
    """A Sender that answers from a script (an exception is raised), then 200."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)

    def post(self, body: bytes, creds: Any, sign_time: float) -> Any:
        from omprog_forwarder.ship.transport import Sent

        answer = self.answers.pop(0) if self.answers else Sent(200, 0.0, len(body))
        if isinstance(answer, Exception):
            raise answer
        return answer


class Cases:
    """Each troubleshooting case made to happen, in the README's order."""

    def __init__(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        from omprog_forwarder.ship.auth import Credentials, StaticAuth
        from omprog_forwarder.spool import Spool

        self.tmp = tmp_path
        self.caplog = caplog
        caplog.set_level(logging.INFO)
        self.cfg = config.load(
            None,
            {
                "endpoint_url": "https://api.invalid/prod/logs",
                "region": "eu-west-1",
                "user_pool_id": "eu-west-1_x",
                "client_id": "c",
                "identity_pool_id": "eu-west-1:i",
                "username": "pi-0001",
                "password": "p",
                "spool_dir": str(tmp_path / "spool"),
            },
            environ={},
        )
        self.spool = Spool(self.cfg.spool_dir).create()
        self.auth = StaticAuth(Credentials("AKID", "s", "t", 2e9))

    def logged(self, words: str) -> str:
        return next(r.getMessage() for r in self.caplog.records if words in r.getMessage())

    def ship(self, *answers: Any, **deps: Any) -> None:
        from omprog_forwarder.ship import shipper

        shipper.run_ship(self.cfg, auth=self.auth, transport=Scripted(*answers), **deps)

    def case1(self) -> str:
        conf = self.tmp / "forwarder.conf"
        conf.write_text("[forwarder]\npassword = secret\n")
        os.chmod(conf, 0o644)
        with pytest.raises(ConfigError) as err:
            config.load(str(conf), environ={})
        return str(err.value).replace(str(conf), DEVICE_CONF)

    def case2(self) -> str:
        with pytest.raises(ConfigError) as err:
            config.load(None, {"window_seconds": "soon"}, environ={})
        return str(err.value)

    def case3(self) -> str:
        from omprog_forwarder.ship import shipper

        with pytest.raises(ConfigError) as err:
            shipper.check_config(self.cfg._replace(user_pool_id="", client_id=""))
        return str(err.value)

    def case4(self) -> str:
        """Cognito's own refusal, as botocore raises it, through the shipper's translation."""
        from botocore.exceptions import ClientError

        from omprog_forwarder.ship.auth import CognitoAuth

        auth = CognitoAuth(self.cfg, str(self.tmp / "c.json"), str(self.tmp / "c.lock"))
        refusal = ClientError(
            {
                "Error": {
                    "Code": "NotAuthorizedException",
                    "Message": "Incorrect username or password.",
                },
                "ResponseMetadata": {"HTTPStatusCode": 400},
            },
            "InitiateAuth",
        )
        with pytest.raises(AuthError) as err, auth._translated("login"):
            raise refusal
        return str(err.value)

    def case5(self) -> str:
        denied = "HTTP 403 from the API: device_id does not match the caller's identity"
        self.spool.write_batch("20261126T231000Z-00000000000000a1", [b"x"])
        self.ship(CredentialsRejectedError(denied), CredentialsRejectedError(denied))
        return self.logged("refused the credentials again")

    def case6(self) -> str:
        from omprog_forwarder.ship import shipper

        ship = shipper.Shipper(
            self.cfg, self.spool, auth=self.auth, transport=Scripted(), wall=lambda: 0.0
        )
        ship._set_offset(3600.0)
        return self.logged("clock is off")

    def case7(self) -> str:
        from support.ingest_helpers import make_rig

        rig = make_rig(self.tmp / "ingest", max_spool_bytes="100")
        with pytest.raises(SpoolFullError):
            Batcher.on_message(rig.batcher, b"x" * 200, 0)  # not the loop's answer: the raise
        return self.logged("spool full")

    def case8(self, monkeypatch: pytest.MonkeyPatch) -> str:
        from support.ingest_helpers import make_rig

        rig = make_rig(self.tmp / "ingest2")

        def no_space(*args: Any) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "posix_fallocate", no_space)
        with pytest.raises(DiskFullError):
            Batcher.on_message(rig.batcher, b"x", 0)
        monkeypatch.undo()
        return self.logged("disk full")

    def case9(self) -> str:
        for n in range(12):
            self.spool.write_batch(f"20261126T2315{n:02d}Z-00000000000000b{n:x}", [b"y"])
        ticks = iter(range(0, 100_000, 300))
        self.ship(
            *[TransientSendError("cannot reach the API: ConnectionError")] * 50,
            clock=lambda: float(next(ticks)),
            sleep=lambda s: None,
        )
        return self.logged("time budget")

    def case10(self) -> str:
        for batch in self.spool.ready_batches():
            self.spool.delete(batch)
        self.spool.write_batch("20261126T232000Z-00000000000000c1", [b"z"])
        self.ship(PermanentSendError("HTTP 400 from the API: logs is missing or not a list", 400))
        return self.logged("moved to dead/")


@pytest.mark.parametrize("n", range(1, 11))
def test_each_troubleshooting_message_is_what_the_code_prints(n, tmp_path, caplog, monkeypatch):
    documented = documented_messages()
    assert len(documented) == 10
    cases = Cases(tmp_path, caplog)
    case = getattr(cases, f"case{n}")
    real = case(monkeypatch) if n == 8 else case()
    assert as_pattern(documented[n - 1]).search(real), (
        f"troubleshooting {n}:\n README: {documented[n - 1]}\n code:   {real}"
    )


def test_the_message_match_is_not_vacuous() -> None:
    """Control: `…` stands for what varies, nothing else."""
    assert as_pattern("spool full: … bytes used").search("spool full: 5 of 9 bytes used")
    assert not as_pattern("spool full: … bytes used").search("disk full: 5 of 9 bytes used")
    assert not as_pattern("time budget of 240 s").search("time budget of 300 s")
