#!/usr/bin/env python3
"""`make run`: the daemon on the sample orders, with one local Unbound per operator to prove it.

Starts Unbound on 127.0.0.1:5301-5304 (one per default operator, each loading that operator's
published zone, with a tiny authoritative zone for the sample names so unblocked names get
real answers), then runs `blocker run` in the foreground with configs/blocker.yaml. Ctrl-C
stops the daemon and every Unbound this script started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
ZONES = VAR / "zones"
OPERATORS = {"orange": 5301, "sfr": 5302, "bouygues": 5303, "free": 5304}
CONTROL_BASE = 5310
DEMO_ZONES = {  # answers for the sample names, so a lifted or unblocked name resolves
    "example.": "* 300 IN A 192.0.2.1\n",
    "example.gg.": "@ 300 IN A 192.0.2.2\n* 300 IN A 192.0.2.2\n",
}

UNBOUND_CONF = """\
server:
  interface: 127.0.0.1
  port: {port}
  do-daemonize: no
  use-syslog: no
  logfile: ""
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: "{dir}/unbound.pid"
  access-control: 127.0.0.0/8 allow
  module-config: "respip iterator"
  do-not-query-localhost: no
{auth}
rpz:
  name: "{op}.rpz.blocker."
  zonefile: "{zone}"
  rpz-log: yes
remote-control:
  control-enable: yes
  control-interface: 127.0.0.1
  control-port: {control}
  control-use-cert: no
"""

AUTH = """\
auth-zone:
  name: "{origin}"
  zonefile: "{file}"
  for-upstream: yes
  for-downstream: no
  fallback-enabled: no
"""


def write_demo_zones(base: Path) -> str:
    parts = []
    for origin, records in DEMO_ZONES.items():
        path = base / f"{origin.rstrip('.')}.zone"
        path.write_text(f"$ORIGIN {origin}\n@ 300 IN SOA localhost. hostmaster.localhost. 1 300 300 86400 60\n"
                        f"@ 300 IN NS localhost.\n{records}")
        parts.append(AUTH.format(origin=origin, file=path))
    return "".join(parts)


def start_unbound(op: str, port: int, control: int) -> subprocess.Popen[bytes]:
    base = VAR / "unbound" / op
    base.mkdir(parents=True, exist_ok=True)
    conf = base / "unbound.conf"
    conf.write_text(UNBOUND_CONF.format(port=port, dir=base, auth=write_demo_zones(base), op=op,
                                        zone=ZONES / f"{op}.rpz", control=control))
    log = (base / "unbound.log").open("ab")
    return subprocess.Popen(["unbound", "-d", "-c", str(conf)], stdout=log, stderr=log, cwd=ROOT)


def main() -> int:
    blocker = [sys.executable, "-m", "blocker"]
    ZONES.mkdir(parents=True, exist_ok=True)
    # Unbound refuses to start without its zone file: publish once before starting it (`apply`,
    # recorded and audited like any publish; its reload fails with no Unbound yet, and the
    # daemon retries that reload at start).
    subprocess.run([*blocker, "apply"], cwd=ROOT, check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    children = [start_unbound(op, port, CONTROL_BASE + i + 1) for i, (op, port) in enumerate(OPERATORS.items())]
    time.sleep(0.5)
    for proc, op in zip(children, OPERATORS, strict=True):
        if proc.poll() is not None:
            print(f"unbound for {op} failed to start: see var/unbound/{op}/unbound.log", file=sys.stderr)
    print("local Unbound per operator on 127.0.0.1:5301-5304; blocker daemon on http://127.0.0.1:9731 "
          "(/metrics, /healthz); Ctrl-C stops everything", file=sys.stderr)
    subprocess.run([*blocker, "status"], cwd=ROOT, check=False)
    daemon = subprocess.Popen([*blocker, "run"], cwd=ROOT)
    signal.signal(signal.SIGTERM, lambda *_: daemon.send_signal(signal.SIGTERM))
    try:
        code = daemon.wait()
    except KeyboardInterrupt:
        daemon.send_signal(signal.SIGINT)
        code = daemon.wait()
    finally:
        for proc in children:
            proc.terminate()
        for proc in children:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return 0 if code in (0, -signal.SIGINT, 130) else code


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
