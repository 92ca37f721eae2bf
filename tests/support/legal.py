"""The legal scenario: four orders (alpha, bravo, charlie, delta) applied at known instants, with
first-seen instants and probe records, as the `scenario` fixture (built once per module) and its
writable `copy`; shared by the legal CLI tests and the output-file tests.
"""

from __future__ import annotations

import functools
import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from blocker.record.audit import AuditLog
from blocker.record.state import State
from tests.clock import apply_at
from tests.legal_samples import ALPHA, BRAVO
from tests.support.cli import blocker as run_blocker

PARIS = ZoneInfo("Europe/Paris")
T = "2091-03-24T12:00:00+01:00"  # the report instant of most tests (the eve of the DST change)

CONFIG = """\
timezone: Europe/Paris
state_dir: state
publish: {check: structural}
operators:
  orange: {name: Orange, reload: {kind: none}}
  sfr: {name: SFR, reload: {kind: none}}
"""

ORDERS = {
    "alpha": ALPHA,
    "bravo": BRAVO,
    # Pending at T: 10 days from 2091-06-01 (start day not counted), lifts 2091-06-12 00:00.
    "charlie": """\
id: charlie
court: Tribunal judiciaire de Paris
case_number: RG 91/00003
decision_date: 2091-05-20
operators: [sfr]
start: 2091-06-01
duration: 10 days
targets: [charlie.example]
""",
    # Lifted early, on 2091-02-01 at noon.
    "delta": """\
id: delta
court: Tribunal judiciaire de Paris
case_number: RG 91/00004
decision_date: 2091-01-14
applicant: Ligue de football professionnel
operators: [orange, sfr]
start: 2091-01-15
duration: 1 year
targets: [delta.example]
lifted:
  at: 2091-02-01T12:00:00+01:00
  reason: mainlevée, ordonnance du 2091-01-31
""",
}
APPLY_AT = ["2091-01-10T12:00:00+01:00", "2091-01-15T12:00:00+01:00", "2091-02-02T00:00:00+01:00",
            "2091-03-01T10:00:00+01:00", "2091-03-21T01:00:00+01:00"]


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)


blocker = functools.partial(run_blocker, config="config.yaml")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("legal")
    (root / "config.yaml").write_text(CONFIG)
    (root / "orders").mkdir()
    for name, text in ORDERS.items():
        (root / "orders" / f"{name}.yaml").write_text(text, encoding="utf-8")
    for at in APPLY_AT:
        # Run as if the clock read `at` (tests/clock.py): apply refuses an --at far from the clock.
        code, out, err = apply_at(at, ["--config", "config.yaml", "apply", "--orders", "orders", "--out", "zones",
                                       "--state-dir", "state"], cwd=root)
        assert code == 0, out + err
    # What the daemon's probe passes record (blocker/daemon.py _record_probe), at known instants.
    state = State(root / "state")
    state.record_first("alpha", "orange", "blocked", paris(2091, 1, 10, 12, 7))
    state.record_first("alpha", "sfr", "blocked", paris(2091, 1, 10, 12, 9))
    state.record_first("delta", "orange", "blocked", paris(2091, 1, 15, 12, 5))
    state.record_first("delta", "sfr", "blocked", paris(2091, 1, 15, 12, 6))
    state.record_first("delta", "orange", "lifted", paris(2091, 2, 2, 0, 5))
    state.record_first("bravo", "orange", "blocked", paris(2091, 3, 1, 10, 2))
    state.record_probe_outcome("alpha", "orange", False, paris(2091, 2, 24, 11))
    state.record_probe_outcome("alpha", "orange", True, paris(2091, 3, 24, 11))
    state.close()
    audit = AuditLog(root / "state", actor="daemon")
    audit.append("order-verified", {"order": "alpha", "operator": "orange", "kind": "blocked",
                                    "at": "2091-01-10T11:07:00+00:00", "after_seconds": 43620.0},
                 at=paris(2091, 1, 10, 12, 7))
    audit.append("probe-verdict-change", {"operator": "orange", "name": "alpha.example", "kind": "exact",
                                          "resolver": "r1", "transport": "udp", "from": "blocked",
                                          "to": "not-blocked", "orders": ["alpha"], "reason": "answer"},
                 at=paris(2091, 2, 24, 11))
    audit.append("probe-pass", {"operator": "orange", "reason": "interval", "checks": 4, "verdicts": {},
                                "orders": ["alpha"], "verified": [], "failing": ["alpha"]}, at=paris(2091, 2, 24, 11))
    audit.append("probe-verdict-change", {"operator": "orange", "name": "alpha.example", "kind": "exact",
                                          "resolver": "r1", "transport": "udp", "from": "not-blocked",
                                          "to": "blocked", "orders": ["alpha"], "reason": "answer"},
                 at=paris(2091, 2, 24, 11, 5))
    audit.append("probe-pass", {"operator": "orange", "reason": "interval", "checks": 4, "verdicts": {},
                                "orders": ["alpha"], "verified": ["alpha"], "failing": []}, at=paris(2091, 3, 24, 11))
    return root


@pytest.fixture
def copy(scenario: Path, tmp_path: Path) -> Path:
    shutil.copytree(scenario, tmp_path / "w")
    return tmp_path / "w"
