"""A private, real `rsyslogd -n` running the project's rsyslog.d config.

It listens with imtcp on 127.0.0.1 (port chosen by rsyslog, read back from
`listenPortFileName`), loads `rsyslog.d/60-omprog-forwarder.conf` with only
its paths replaced (and any action parameter a test overrides), and keeps its
queue files in its own work folder, so a stop and a start with the same
folder behave like a real restart. Used by the end-to-end tests and benches.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RSYSLOGD = shutil.which("rsyslogd") or (
    "/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None
)


def render_project_conf(params: Mapping[str, str], text: Optional[str] = None) -> str:
    """The project's config with `name="value"` parameters replaced (devstack's)."""
    from devstack.rsyslog import render_snippet

    return render_snippet(params, text)


def forwarder_binary(spool_dir: str, config_path: Optional[str] = None) -> str:
    """The `binary=` value that starts this checkout's forwarder (no spaces allowed)."""
    parts = [sys.executable, "-m", "omprog_forwarder", "run", "--spool-dir", spool_dir]
    if config_path:
        parts += ["--config", config_path]
    for p in parts:
        if " " in p:
            raise ValueError(f"rsyslog 8.2302 cannot quote spaces in binary=: {p!r}")
    return " ".join(parts)


class Rsyslogd:
    """Start/stop a private rsyslogd. `binary` is the omprog program command line."""

    def __init__(
        self,
        workdir: str,
        binary: str,
        overrides: Optional[Mapping[str, str]] = None,
        env: Optional[Mapping[str, str]] = None,
        internal_log: bool = True,
        tee_file: Optional[str] = None,
    ) -> None:
        if RSYSLOGD is None:
            raise RuntimeError("rsyslogd is not installed")
        self.workdir = workdir
        self.queue_dir = os.path.join(workdir, "queue")
        self.port_file = os.path.join(workdir, "port")
        self.conf_path = os.path.join(workdir, "rsyslog.conf")
        self.pid_file = os.path.join(workdir, "rsyslogd.pid")
        self.forwarder_log = os.path.join(workdir, "forwarder.log")
        self.internal_log = os.path.join(workdir, "rsyslogd-internal.log")
        os.makedirs(self.queue_dir, exist_ok=True)
        params = {
            "binary": binary,
            "queue.spoolDirectory": self.queue_dir,
            "output": self.forwarder_log,
        }
        params.update(overrides or {})
        body = render_project_conf(params)
        head = [
            f'global(workDirectory="{workdir}" processInternalMessages="on")',
            'module(load="imtcp")',
            f'input(type="imtcp" port="0" listenPortFileName="{self.port_file}"'
            ' address="127.0.0.1")',
        ]
        if internal_log:
            # rsyslog's own messages (omprog warnings, restarts) to a file too.
            head.append(
                f'if $programname == "rsyslogd" then action(type="omfile" '
                f'file="{self.internal_log}")'
            )
        if tee_file:
            # What rsyslog accepted, written from its main ruleset (not the
            # omprog action's queue): the reliability suite's independent record.
            head += [
                'template(name="TestTee" type="string" string="%msg%\\n")',
                f'if $programname == "fwdtest" then action(type="omfile" file="{tee_file}" '
                'template="TestTee")',
            ]
        with open(self.conf_path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(head) + "\n" + body)
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.port = 0

    def start(self, timeout: float = 15.0) -> Rsyslogd:
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        with open(os.path.join(self.workdir, "rsyslogd.stderr"), "ab") as stderr:
            self.proc = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", self.conf_path, "-i", self.pid_file],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=self.env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited with {self.proc.returncode}: {self.stderr()}")
            try:
                with open(self.port_file) as fh:
                    text = fh.read().strip()
                if text:
                    self.port = int(text)
                    return self
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"rsyslogd did not open its port: {self.stderr()}")

    def stderr(self) -> str:
        try:
            with open(os.path.join(self.workdir, "rsyslogd.stderr"), errors="replace") as fh:
                return fh.read()[-4000:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (an orderly stop, like systemd's) and wait for rsyslogd to exit."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            raise RuntimeError("rsyslogd did not stop within the timeout") from None
        finally:
            self.proc = None
        return rc

    def __enter__(self) -> Rsyslogd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.stop()


def forwarder_pids(spool_dir: str) -> list[int]:
    """Pids of the forwarder processes rsyslogd started for this spool."""
    from devstack.processes import cmdlines

    return [
        pid for pid, cmd in cmdlines() if b"omprog_forwarder" in cmd and spool_dir.encode() in cmd
    ]


def send_lines(port: int, lines: Iterable[bytes], chunk: int = 1000) -> None:
    """Send LF-framed syslog messages over one TCP connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        batch: list[bytes] = []
        for line in lines:
            batch.append(line + b"\n")
            if len(batch) >= chunk:
                sock.sendall(b"".join(batch))
                batch.clear()
        if batch:
            sock.sendall(b"".join(batch))


def syslog_line(seq: int, tag: str = "fwdtest", severity: int = 6, text: str = "") -> bytes:
    """An RFC 3164 message with a sequence number the tests count by."""
    pri = 8 + severity  # facility user
    stamp = time.strftime("%b %d %H:%M:%S")
    return f"<{pri}>{stamp} testhost {tag}[4242]: seq={seq:08d} {text}".encode()
