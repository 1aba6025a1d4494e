"""Shipping benchmark: bytes on the wire per line, replay rate, the shipper's RSS and start-up.

    .venv/bin/python bench/bench_ship.py              # full run (1 M lines), about 40 s here
    .venv/bin/python bench/bench_ship.py --quick      # 100 k lines, smoke run
    .venv/bin/python bench/bench_ship.py --json FILE  # also write the results as JSON

bench/run_all.py renders the results into docs/BENCHMARKS.md.

1. Wire size. One generated corpus of realistic syslog lines, mixed: the
   project's rsyslog JSON template (`ts, host, facility, severity, app, pid,
   msg, uuid`, as in tests/fixtures) and the how-to's CustomLogFormat. The
   same lines are cut into batches of several sizes and each batch is
   encoded twice: as this project sends it (`transport.build_body`: gzip of
   `{"device_id", "batch_id", "timestamp", "logs"}`) and as the how-to sent
   it (uncompressed `json.dumps({"device_id", "timestamp", "logs"})`, its
   default separators and ASCII escaping). Ratio = project bytes / how-to
   bytes, bodies only; request headers (SigV4 with a session token, about
   the same for both) are reported separately, per request.

2. Replay. A 1 M-line spool (the same kind of lines) is written straight
   into ready/ with `spool.write_batch` in 4 MiB batches, the way ingest
   leaves it after an outage. `omprog-forwarder ship` runs as a child
   process against the loopback gateway (devstack/gateway.py), which
   verifies every SigV4 signature with botocore and gunzips and parses
   every body. Authentication is stubbed with static
   credentials (auth.StaticAuth) so Cognito is not what is measured; the
   child still imports boto3 and pycognito, as a real shipper does, so the
   RSS is realistic. lines/s = lines delivered / time spent in run_ship;
   peak RSS = the child's VmHWM (see vm_hwm_kib for why not ru_maxrss),
   cross-checked by sampling it with psutil.

3. Start-up. The same child on an empty spool, five times: from just before
   the parent spawns it to the moment it enters run_ship (interpreter, boto3,
   pycognito and the shipper's modules imported, configuration loaded), the
   fixed cost every shipper that ingest spawns pays before its first POST.

4. Format alternatives, measured on copies and not shipped: what the same
   batches would cost with the previous encoder setting (zlib's default
   strategy), and with changes to the wire format the Lambda would have to
   learn (the lines as text instead of JSON strings, a preset dictionary,
   xz).
"""

from __future__ import annotations

import argparse
import datetime
import json
import lzma
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from omprog_forwarder.ship.transport import GZIP_LEVEL, build_body  # noqa: E402
from omprog_forwarder.spool import Spool, window_label  # noqa: E402

MIB = 1024 * 1024
AKID, SECRET, TOKEN = "ASIABENCHKEY0000", "bench-secret-key", "bench-session-token-" + "x" * 800
REGION = "eu-west-1"
DEVICE = "1a2b3c4d"
BATCH_SIZES = (100, 300, 1000, 10000)

# ---------------------------------------------------------------- corpus

HOSTS = ["raspberrypi", "pi-garage", "pi-kitchen"]
SEVERITIES = ["info"] * 14 + ["notice"] * 3 + ["warning"] * 2 + ["err"]
SEV_NUM = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6}


def _ip(r: random.Random) -> str:
    return f"192.168.{r.randint(0, 3)}.{r.randint(2, 254)}"


def _port(r: random.Random) -> int:
    return r.randint(1024, 65535)


def _uptime(r: random.Random) -> str:
    return f"[{r.uniform(0, 99999):.6f}]"


UNITS = [
    ("apt-daily.service", "Daily apt download activities"),
    ("logrotate.service", "Rotate log files"),
    ("man-db.service", "Daily man-db regeneration"),
    ("fstrim.service", "Discard unused blocks"),
]

# (facility, app, message maker)
TEMPLATES: list[tuple[str, str, Callable[[random.Random], str]]] = [
    ("daemon", "dhcpcd", lambda r: f"wlan0: Router Advertisement from fe80::{r.getrandbits(16):x}"),
    ("daemon", "dhcpcd", lambda r: f"wlan0: leased {_ip(r)} for {r.choice([3600, 86400])} seconds"),
    ("daemon", "systemd", lambda r: "Started {} - {}.".format(*r.choice(UNITS))),
    (
        "daemon",
        "systemd",
        lambda r: f"session-{r.randint(1, 900)}.scope: Deactivated successfully.",
    ),
    ("cron", "CRON", lambda r: "(root) CMD (cd / && run-parts --report /etc/cron.hourly)"),
    ("cron", "CRON", lambda r: "pam_unix(cron:session): session opened for user root(uid=0)"),
    (
        "auth",
        "sshd",
        lambda r: (
            f"Accepted publickey for pi from {_ip(r)} port {_port(r)} ssh2: ED25519 "
            f"SHA256:{uuid.UUID(int=r.getrandbits(128)).hex[:22]}"
        ),
    ),
    ("auth", "sshd", lambda r: f"Disconnected from user pi {_ip(r)} port {_port(r)}"),
    (
        "kern",
        "kernel",
        lambda r: f"{_uptime(r)} brcmfmac: brcmf_cfg80211_set_power_mgmt: power save",
    ),
    (
        "kern",
        "kernel",
        lambda r: (
            f"{_uptime(r)} usb 1-1.{r.randint(1, 4)}: new high-speed USB device number "
            f"{r.randint(2, 30)} using dwc_otg"
        ),
    ),
    (
        "daemon",
        "wpa_supplicant",
        lambda r: (
            f"wlan0: CTRL-EVENT-SIGNAL-CHANGE above=1 signal=-{r.randint(40, 80)} "
            f"noise=9999 txrate={r.choice([65000, 72200, 144400])}"
        ),
    ),
    ("daemon", "avahi-daemon", lambda r: f"Registering new address record for {_ip(r)} on wlan0."),
    (
        "daemon",
        "NetworkManager",
        lambda r: (
            f"<info>  [{r.uniform(1.7e9, 1.8e9):.4f}] device (wlan0): state change: "
            "activated -> activated (reason 'none', sys-iface-state: 'managed')"
        ),
    ),
    (
        "user",
        "sensor",
        lambda r: (
            f"temp={r.uniform(35, 70):.1f}'C throttled=0x0 load={r.uniform(0, 4):.2f} "
            f"mem_free={r.randint(100, 900)}M"
        ),
    ),
    ("daemon", "rngd", lambda r: f"stats: bits received from HRNG source: {r.randint(1, 10**7)}"),
    (
        "syslog",
        "rsyslogd",
        lambda r: (
            '[origin software="rsyslogd" swVersion="8.2302.0" '
            f'x-pid="{r.randint(300, 5000)}" x-info="https://www.rsyslog.com"] rsyslogd was HUPed'
        ),
    ),
]


def corpus(n: int, seed: int = 7, start: float = 1796339400.0) -> list[bytes]:
    """`n` lines, alternating runs of the JSON template and the how-to's format."""
    r = random.Random(seed)
    t = start
    out = []
    json_mode = True
    for i in range(n):
        if i % 500 == 0:
            json_mode = r.random() < 0.5
        t += r.expovariate(2.0)
        facility, app, msg_fn = r.choice(TEMPLATES)
        sev = r.choice(SEVERITIES)
        host = HOSTS[0] if r.random() < 0.9 else r.choice(HOSTS)
        pid = str(r.randint(100, 32000)) if app not in ("kernel", "CRON") else "-"
        msg = msg_fn(r)
        when = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
        if json_mode:
            fields = [
                f'"ts":"{when.isoformat(timespec="microseconds")}"',
                f'"host":"{host}"',
                f'"facility":"{facility}"',
                f'"severity":{SEV_NUM[sev]}',
                f'"app":"{app}"',
                f'"pid":"{pid}"',
                f'"msg":{json.dumps(" " + msg)}',
                f'"uuid":"{uuid.UUID(int=r.getrandbits(128)).hex.upper()}"',
            ]
            line = "{" + ", ".join(fields) + "}"
        else:
            tag = f"{app}[{pid}]:" if pid != "-" else f"{app}:"
            line = f"{when:%Y-%m-%d %H:%M:%S} {host} {facility}.{sev}: {tag} {msg}"
        out.append(line.encode())
    return out


def chunks(lines: list[bytes], size: int) -> list[list[bytes]]:
    return [lines[i : i + size] for i in range(0, len(lines), size)]


def chunks_by_bytes(lines: list[bytes], limit: int) -> list[list[bytes]]:
    """Cut like ingest seals at max_batch_bytes: records are `CRC SP line LF` (10 bytes more)."""
    out, cur, size = [], [], 0
    for x in lines:
        if cur and size + len(x) + 10 > limit:
            out.append(cur)
            cur, size = [], 0
        cur.append(x)
        size += len(x) + 10
    if cur:
        out.append(cur)
    return out


def howto_body(lines: list[bytes]) -> bytes:
    """The how-to's POST body for the same lines (json.dumps defaults, uncompressed)."""
    payload = {
        "device_id": DEVICE,
        "timestamp": datetime.datetime.now().isoformat(),
        "logs": [x.decode("utf-8", "replace") for x in lines],
    }
    return json.dumps(payload).encode()


# ---------------------------------------------------------------- 1. wire size


def batch_id(i: int) -> str:
    return f"20261126T231000Z-{i:016x}"


STAMP = "2026-11-26T23:10:00+00:00"


def wire_sizes(lines: list[bytes]) -> list[dict]:
    rows = []
    plans = [(f"{n} lines", n, chunks(lines, n)) for n in BATCH_SIZES]
    plans.append(("4 MiB (max_batch_bytes)", None, chunks_by_bytes(lines, 4 * MIB)))
    for label, size, batches in plans:
        ours = theirs = 0
        started = time.process_time()
        for i, b in enumerate(batches):
            ours += len(build_body(DEVICE, batch_id(i), STAMP, b).data)
        cpu = time.process_time() - started
        for b in batches:
            theirs += len(howto_body(b))
        n = sum(len(b) for b in batches)
        rows.append(
            {
                "batch": label,
                "lines_per_batch": size,
                "requests": len(batches),
                "lines": n,
                "ours_per_line": ours / n,
                "howto_per_line": theirs / n,
                "ratio": ours / theirs,
                "build_lines_per_s": n / cpu if cpu else 0.0,
            }
        )
    return rows


# ---------------------------------------------------------------- format alternatives


def compact_json(lines: list[bytes], i: int) -> bytes:
    """What build_body compresses: the documented object, compact separators."""
    doc = {
        "device_id": DEVICE,
        "batch_id": batch_id(i),
        "timestamp": STAMP,
        "logs": [x.decode("utf-8", "replace") for x in lines],
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def as_text(lines: list[bytes], i: int) -> bytes:
    """A format change: a JSON header line, then the lines as they are (no escaping)."""
    head = json.dumps({"device_id": DEVICE, "batch_id": batch_id(i), "timestamp": STAMP})
    return head.encode() + b"\n" + b"\n".join(lines) + b"\n"


def deflate(data: bytes, strategy: int = zlib.Z_DEFAULT_STRATEGY, zdict: bytes = b"") -> bytes:
    if zdict:  # a preset dictionary needs the zlib container (gzip has no field for it)
        comp = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 15, 8, strategy, zdict)
    else:
        comp = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31, 8, strategy)
    return comp.compress(data) + comp.flush()


def sample_dictionary(size: int = 32 * 1024) -> bytes:
    """A naive preset dictionary: the tail of a body of lines from another seed."""
    body = compact_json(corpus(2000, seed=99), 0)
    return body[-size:]


#: preset 9e with a dictionary the size of a batch: the preset's 64 MiB would only
#: cost allocation time per body.
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 4 * MIB}]


def alternatives(lines: list[bytes], sizes: tuple[int, ...] = BATCH_SIZES) -> dict:
    """Bytes per line of the same batches under other encodings (copies, not shipped)."""
    zdict = sample_dictionary()
    variants: list[tuple[str, str, Callable[[list[bytes], int], bytes]]] = [
        (
            "previous",
            "gzip 9, zlib's default strategy (build_body before Z_FILTERED)",
            lambda b, i: deflate(compact_json(b, i)),
        ),
        (
            "text",
            "format change: the lines as text after a JSON header line, gzip 9 Z_FILTERED",
            lambda b, i: deflate(as_text(b, i), zlib.Z_FILTERED),
        ),
        (
            "zdict",
            "format change: the same JSON, zlib 9 Z_FILTERED with a 32 KiB preset dictionary",
            lambda b, i: deflate(compact_json(b, i), zlib.Z_FILTERED, zdict),
        ),
        (
            "text+zdict",
            "format change: lines as text and the preset dictionary",
            lambda b, i: deflate(as_text(b, i), zlib.Z_FILTERED, zdict),
        ),
        (
            "xz",
            "format change: the same JSON, xz (lzma preset 9e, 4 MiB dictionary)",
            lambda b, i: lzma.compress(compact_json(b, i), filters=XZ_FILTERS),
        ),
    ]
    rows = []
    for size in sizes:
        batches = chunks(lines, size)
        n = sum(len(b) for b in batches)
        theirs = sum(len(howto_body(b)) for b in batches)
        row: dict = {"lines_per_batch": size}
        for key, _, encode in variants:
            ours = sum(len(encode(b, i)) for i, b in enumerate(batches))
            row[key] = {"per_line": ours / n, "ratio": ours / theirs}
        rows.append(row)
    return {"variants": [{"key": k, "what": w} for k, w, _ in variants], "rows": rows}


# ---------------------------------------------------------------- 2. replay


def write_spool(root: str, lines_total: int, seed: int) -> tuple[int, int, int]:
    spool = Spool(root).create()
    written = batches = size = 0
    window = 1796339400.0
    step = 200_000
    for start in range(0, lines_total, step):
        block = corpus(min(step, lines_total - start), seed=seed + start, start=window)
        for b in chunks_by_bytes(block, 4 * MIB):
            batch = spool.write_batch(f"{window_label(window)}-{batches:016x}", b)
            written += len(b)
            size += batch.size
            batches += 1
            window += 300
    return written, batches, size


def child(spool_dir: str, url: str) -> int:
    """The shipper under test: `ship` with static credentials."""
    import logging

    import boto3  # noqa: F401  -- as loaded by a real shipper (auth)
    import pycognito  # noqa: F401

    from omprog_forwarder import config
    from omprog_forwarder.ship import shipper as ship
    from omprog_forwarder.ship.auth import Credentials, StaticAuth

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    cfg = config.load(
        None,
        {
            "spool_dir": spool_dir,
            "endpoint_url": url,
            "region": REGION,
            "device_id": DEVICE,
            "ship_max_seconds": "3600",
        },
        environ={},
    )
    auth = StaticAuth(Credentials(AKID, SECRET, TOKEN, time.time() + 3600))
    entered = time.time()  # the parent took its time just before spawning us
    started = time.monotonic()
    rc = ship.run_ship(cfg, auth=auth)
    elapsed = time.monotonic() - started
    print(json.dumps({"rc": rc, "entered": entered, "elapsed": elapsed, "vmhwm_kib": vm_hwm_kib()}))
    return rc


def vm_hwm_kib() -> int:
    """This process's peak RSS since its exec (Linux VmHWM).

    Not ru_maxrss: Linux carries the parent's high-water mark into a child's
    ru_maxrss across fork+exec, so a child of a big parent reports the parent's
    size (it did here: both read 77 MiB on a --quick run).
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def baseline_rss() -> int:
    """KiB: the interpreter plus the shipper's imports, doing nothing."""
    code = (
        "import boto3, pycognito, requests, requests_aws4auth, tenacity; "
        "import omprog_forwarder.ship.shipper, omprog_forwarder.ship.transport; "
        "import omprog_forwarder.ship.auth; "
        "import sys; sys.path.insert(0, 'bench'); from bench_ship import vm_hwm_kib; "
        "print(vm_hwm_kib())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        check=True,
    )
    return int(out.stdout.strip())


def sample_rss(proc: subprocess.Popen) -> int:
    """KiB: the largest RSS psutil saw in the child, every 20 ms (a cross-check)."""
    import psutil

    peak = 0
    try:
        p = psutil.Process(proc.pid)
        while proc.poll() is None:
            peak = max(peak, p.memory_info().rss // 1024)
            time.sleep(0.02)
    except psutil.Error:
        pass
    return peak


def replay(lines_total: int) -> dict:
    from devstack.gateway import Caller, Gateway

    tmp = tempfile.mkdtemp(prefix="bench-ship-")
    try:
        t0 = time.monotonic()
        written, batches, size = write_spool(os.path.join(tmp, "spool"), lines_total, seed=11)
        write_s = time.monotonic() - t0
        with Gateway({AKID: Caller(SECRET, TOKEN)}, keep_events=False, keep_payloads=False) as gw:
            t1 = time.monotonic()
            spawned = time.time()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--child",
                    os.path.join(tmp, "spool"),
                    gw.url,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            sampled = sample_rss(proc)
            out, err = proc.communicate()
            wall = time.monotonic() - t1
            if proc.returncode != 0:
                raise SystemExit(f"shipper child failed ({proc.returncode}): {err[-2000:]}")
            result = json.loads(out.strip().splitlines()[-1])
            accepted = gw.accepted
            delivered = sum(r.payload["lines"] for r in accepted)
            ids = [r.payload["batch_id"] for r in accepted]
            header_bytes = sum(r.header_bytes for r in accepted) / max(1, len(accepted))
            body_bytes = sum(r.body_bytes for r in accepted)
        base = baseline_rss()  # after the shipper: RUSAGE_CHILDREN above is the shipper's alone
        assert delivered == written, (delivered, written)
        assert ids == sorted(ids) and len(set(ids)) == batches, "not once each, in order"
        return {
            "lines": written,
            "batches": batches,
            "spool_bytes": size,
            "write_s": write_s,
            "ship_s": result["elapsed"],
            "startup_s": result["entered"] - spawned,
            "wall_s": wall,
            "lines_per_s": written / result["elapsed"],
            "peak_rss_kib": result["vmhwm_kib"],
            "sampled_rss_kib": sampled,
            "baseline_rss_kib": base,
            "header_bytes": header_bytes,
            "body_bytes": body_bytes,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def startup(runs: int = 5) -> dict:
    """Spawn to run_ship, on an empty spool: what every spawned shipper pays first."""
    from devstack.gateway import Caller, Gateway

    times, walls = [], []
    with tempfile.TemporaryDirectory(prefix="bench-ship-start-") as tmp:
        Spool(os.path.join(tmp, "spool")).create()
        with Gateway({AKID: Caller(SECRET, TOKEN)}, keep_events=False) as gw:
            for _ in range(runs):
                spawned = time.time()
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--child", tmp + "/spool", gw.url],
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                    check=True,
                    timeout=120,
                ).stdout
                walls.append(time.time() - spawned)
                times.append(json.loads(out.strip().splitlines()[-1])["entered"] - spawned)
    return {
        "runs": runs,
        "startup_s": statistics.median(times),
        "startup_min_s": min(times),
        "startup_max_s": max(times),
        "exit_s": statistics.median(walls),
    }


def stop_on_sigterm() -> None:
    """SIGTERM (bench/run_all.py stopping us) unwinds like Ctrl-C: every `with` stops
    the rsyslogd and programs it started."""

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="100 k lines of replay instead of 1 M")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--child", nargs=2, metavar=("SPOOL", "URL"), help=argparse.SUPPRESS)
    args = p.parse_args()
    stop_on_sigterm()
    if args.child:
        return child(*args.child)
    started = time.monotonic()
    total = 100_000 if args.quick else 1_000_000
    corpus_n = 100_000
    print(f"wire sizes on {corpus_n} lines ...", file=sys.stderr)
    lines = corpus(corpus_n)
    wire = wire_sizes(lines)
    alt = alternatives(lines, (300,) if args.quick else BATCH_SIZES)
    print(f"replay of {total} lines ...", file=sys.stderr)
    rep = replay(total)
    print("shipper start-up ...", file=sys.stderr)
    start = startup()
    for r in wire:
        print(f"{r['batch']:<26} {r['ours_per_line']:6.1f} B/line  ratio {r['ratio']:.4f}")
    for r in alt["rows"]:
        shown = "  ".join(f"{k} {v['ratio']:.4f}" for k, v in r.items() if isinstance(v, dict))
        print(f"alternatives at {r['lines_per_batch']} lines: {shown}")
    print(
        f"replay {rep['lines_per_s']:,.0f} lines/s, peak RSS {rep['peak_rss_kib'] / 1024:.0f} MiB; "
        f"start-up {start['startup_s']:.2f} s (median of {start['runs']})"
    )
    if args.json:
        result = {
            "quick": args.quick,
            "corpus_lines": corpus_n,
            "wire": wire,
            "alternatives": alt,
            "replay": rep,
            "startup": start,
            "wall_s": time.monotonic() - started,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
