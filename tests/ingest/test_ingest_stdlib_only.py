"""The ingest path imports the standard library only, and never the ship half.

The ingest path is a folder, not a list: every module in
`omprog_forwarder/ingest/` plus the shared modules at the package's top
(`SHARED`). Each case runs a fresh interpreter (`sys.executable`, the venv's python). The
probe snapshots `sys.modules` first: what the interpreter's own start-up loaded
(site hooks such as setuptools' `_distutils_hack` or an editable-install
finder) is not the ingest path's doing. Everything imported after that must be
in the standard library (`sys.stdlib_module_names`, or its folders on 3.9) or
be `omprog_forwarder.*`. The report goes to a
file, never to stdout, which belongs to the omprog protocol.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.ingest_helpers import DEADLINE, json_line, ready_lines, run_env

PROBE = r"""
import sys
import sysconfig  # before the snapshot: the 3.9 fallback below needs it
baseline = set(sys.modules)
mode, report = sys.argv[1], sys.argv[2]


def is_stdlib(top):
    names = getattr(sys, "stdlib_module_names", None)  # Python 3.10+
    if names is not None:
        return top in names
    # Python 3.9 (Raspberry Pi OS 11): a built-in, or a file of the standard
    # library's own folders and not of site-packages.
    mod = sys.modules.get(top)
    where = getattr(mod, "__file__", None)
    if where is None:
        return top in sys.builtin_module_names or mod is None
    roots = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
    return "site-packages" not in where and any(where.startswith(r) for r in roots)


def third_party():
    return sorted(
        name for name in list(sys.modules)
        if name not in baseline
        and not is_stdlib(name.split(".")[0])
        and name.split(".")[0] != "omprog_forwarder"
    )


def write_report():
    ours = sorted(n for n in sys.modules if n.split(".")[0] == "omprog_forwarder")
    with open(report, "w") as fh:
        fh.write(__import__("json").dumps({"third_party": third_party(), "ours": ours}))


if mode == "run":
    import atexit
    import runpy

    atexit.register(write_report)
    sys.argv = ["omprog-forwarder", "run", *sys.argv[3:]]
    runpy.run_module("omprog_forwarder", run_name="__main__", alter_sys=True)
else:
    exec(mode)
    write_report()
"""

PACKAGE = Path(__file__).resolve().parents[2] / "omprog_forwarder"
#: The modules at the top of the package that both halves use.
SHARED = ("cli", "config", "envfile", "errors", "spool", "status")


def ingest_modules() -> list[str]:
    """Every module of the ingest folder, found on disk (a new one is checked too)."""
    found = sorted(p.stem for p in (PACKAGE / "ingest").glob("*.py") if p.stem != "__init__")
    assert {"protocol", "batcher", "dedup", "launcher", "run"} <= set(found)
    return [f"omprog_forwarder.ingest.{name}" for name in found]


def ingest_path() -> list[str]:
    return [f"omprog_forwarder.{name}" for name in SHARED] + ingest_modules()


IMPORTS = "import " + ", ".join(ingest_path())


def probe(
    tmp_path: Path, mode: str, *args: str, stdin: bytes = b""
) -> tuple[list[str], bytes, list[str]]:
    report = tmp_path / "third-party.json"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, mode, str(report), *args],
        input=stdin,
        capture_output=True,
        env=run_env(),
        timeout=DEADLINE * 2,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    found = json.loads(report.read_text())
    return found["third_party"], proc.stdout, found["ours"]


def test_the_whole_ingest_path_loads_no_third_party_module_and_not_the_ship_half(
    tmp_path: Path,
) -> None:
    third_party, _, ours = probe(tmp_path, IMPORTS)
    assert third_party == []
    assert set(ingest_path()) <= set(ours), "the probe imported what it checks"
    assert [m for m in ours if m.startswith("omprog_forwarder.ship")] == []


def test_a_real_run_session_loads_no_third_party_module(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    lines = [
        json_line("hello", uuid="00D86F880BD84D4E8F21B1497FAB6951"),
        json_line("hello", uuid="00D86F880BD84D4E8F21B1497FAB6951"),  # dedup path
        json_line("urgent", severity=2, uuid="00D86F880BD84D4E8F21B1497FAB6952"),  # urgent seal
        b"BEGIN TRANSACTION",
        b"\xff\xfe in a transaction",
        b"COMMIT TRANSACTION",
        b"x" * 5000,
    ]
    stdin = b"".join(x + b"\n" for x in lines)
    third_party, stdout, ours = probe(tmp_path, "run", "--spool-dir", str(spool), stdin=stdin)
    assert stdout == b"OK\nOK\nOK\nOK\nOK\nDEFER_COMMIT\nOK\nOK\n", "the session really ran"
    assert len(ready_lines(spool)) == 4, "hello, urgent, the transaction line, the long one"
    assert third_party == []
    assert [m for m in ours if m.startswith("omprog_forwarder.ship")] == []


def test_status_command_loads_no_third_party_module(tmp_path: Path) -> None:
    code = (
        "import sys; from omprog_forwarder.cli import main; "
        f"main(['status', '--json', '--spool-dir', {str(tmp_path / 'spool')!r}])"
    )
    third_party, _, _ = probe(tmp_path, code)
    assert third_party == []


@pytest.mark.parametrize("module", ["pytest", "hypothesis"])
def test_the_probe_does_flag_a_third_party_import(tmp_path: Path, module: str) -> None:
    """Control: the check above is not vacuous."""
    third_party, _, _ = probe(tmp_path, f"{IMPORTS}; import {module}")
    assert module in third_party


def test_the_probe_does_see_the_ship_half(tmp_path: Path) -> None:
    """Control: importing the ship half is noticed."""
    _, _, ours = probe(tmp_path, f"{IMPORTS}; import omprog_forwarder.ship.retry")
    assert "omprog_forwarder.ship.retry" in ours
