"""The distribution config, the key file checks, the printed configs and the follower, without daemons."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blocker.config.distribution import Secondary, read_key
from blocker.config.load import load_config
from blocker.config.model import ConfigError
from blocker.fleet.follow import FleetState
from blocker.fleet.primary import primary_config
from blocker.fleet.secondary import secondary_config
from blocker.fleet.status import follow
from tests.fleet.fleetlib import SECRET, bind_key


def _setup(tmp_path: Path, mode: int = 0o600, extra: str = "") -> Path:
    key = tmp_path / "xfr.key"
    key.write_text(bind_key())
    os.chmod(key, mode)
    cfg = tmp_path / "blocker.yaml"
    cfg.write_text(f"""state_dir: {tmp_path}/var
zones_dir: {tmp_path}/zones
distribution:
  primary: {{kind: knot, listen: 127.0.0.1:5399, control: {tmp_path}/knot.sock}}
  tsig_key: {key}
{extra}operators:
  orange:
    secondaries:
      - {{address: 192.0.2.53:53, name: orange-par-1}}
      - {{address: 192.0.2.54, name: orange-lyo-1, tsig: false}}
""")
    return cfg


def test_the_issue_contract_parses(tmp_path: Path) -> None:
    config = load_config(_setup(tmp_path))
    assert config.distribution is not None and config.distribution.key_name == "blocker-xfr"
    assert config.operators["orange"].secondaries == (
        Secondary("192.0.2.53", 53, "orange-par-1", True), Secondary("192.0.2.54", 53, "orange-lyo-1", False))
    assert SECRET not in repr(config) and SECRET not in repr(config.distribution.key())


def test_without_distribution_nothing_changes() -> None:
    config = load_config(None)
    assert config.distribution is None and all(not op.secondaries for op in config.operators.values())


@pytest.mark.integration  # starts a process
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_others_can_read_is_refused_in_one_line_without_the_secret(tmp_path: Path, mode: int) -> None:
    cfg = _setup(tmp_path, mode)
    with pytest.raises(ConfigError, match="readable by others"):
        load_config(cfg)
    proc = subprocess.run([sys.executable, "-m", "blocker", "--config", str(cfg), "fleet", "primary-config"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "chmod 600" in proc.stderr
    assert SECRET not in proc.stderr


def test_a_key_file_that_is_not_bind_syntax_is_refused_without_quoting_it(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text(f"secret {SECRET}\n")
    os.chmod(key, 0o600)
    with pytest.raises(ConfigError) as err:
        read_key(key)
    assert SECRET not in str(err.value)


@pytest.mark.parametrize("section, message", [
    ("distribution:\n  primary: {kind: nsd}\n", "distribution.primary.kind"),
    ("distribution:\n  primary: {listen: nowhere}\n", "distribution.primary.listen"),
    ("distribution:\n  primary: {kind: knot}\n  tsig_key: /nonexistent.key\n", "no such file"),
    ("distribution:\n  primary: {kind: knot}\n  bogus: 1\n", "distribution.bogus: unknown key"),
])
def test_bad_distribution_sections_are_named(tmp_path: Path, section: str, message: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(section + "operators: {orange: {}}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)


def test_bad_secondaries_are_named(tmp_path: Path) -> None:
    cfg = _setup(tmp_path)
    cfg.write_text(cfg.read_text().replace("tsig: false", "tsig: maybe"))
    with pytest.raises(ConfigError, match=r"secondaries\[1\]\.tsig"):
        load_config(cfg)


def test_knot_primary_config_has_what_the_contract_asks(tmp_path: Path) -> None:
    config = load_config(_setup(tmp_path))
    text = primary_config(config)
    assert SECRET not in text
    assert "listen: 127.0.0.1@5399" in text and f"listen: {tmp_path}/knot.sock" in text
    assert "zonefile-load: difference " in text and "journal-content: all" in text
    assert "  - domain: orange.rpz.blocker.\n    file: orange.rpz" in text
    assert "notify: [orange-orange-par-1, orange-orange-lyo-1]" in text
    assert "acl: [xfr-key, xfr-orange-orange-lyo-1]" in text  # only the tsig: false one by address
    key_file = tmp_path / "var" / "fleet" / "knot-key.conf"
    assert f"include: {key_file}" in text and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert SECRET in key_file.read_text()


def test_secondary_snippets_name_the_key_file_never_the_secret(tmp_path: Path) -> None:
    config = load_config(_setup(tmp_path))
    for kind in ("bind", "unbound", "powerdns-recursor", "knot-resolver"):
        text = secondary_config(config, "orange", kind)
        assert SECRET not in text and "127.0.0.1" in text
    assert "rpzPrimary" in secondary_config(config, "orange", "powerdns-recursor")
    assert "primary: 127.0.0.1@5399" in secondary_config(config, "orange", "unbound")
    with pytest.raises(ConfigError, match="no operator"):
        secondary_config(config, "nosuch", "bind")


def test_follow_times_each_secondary_and_gives_up_at_the_bound() -> None:
    from blocker.config.model import OperatorConfig

    secs = (Secondary("192.0.2.1", 53, "fast"), Secondary("192.0.2.2", 53, "never"))
    op = OperatorConfig("orange", "Orange", "orange.rpz.blocker.", secondaries=secs)
    asked: list[str] = []

    def ask(sec: Secondary, _op: object, _t: float) -> tuple[int | None, str]:
        asked.append(sec.label)
        return (7, "") if sec.label == "fast" else (None, "udp: timed out")

    result = follow(op, 7, timeout=0.3, ask=ask)
    assert result.seconds["fast"] is not None and result.seconds["never"] is None
    assert result.errors == {"never": "udp: timed out"} and not result.complete
    assert asked.count("fast") == 1 and 2 <= asked.count("never") <= 6  # backoff, bounded


def test_fleet_state_audits_a_secondary_behind(tmp_path: Path) -> None:
    config = load_config(_setup(tmp_path, extra="  propagation_timeout: 0.2\n"))
    records: list[tuple[str, dict[str, object]]] = []

    def ask(sec: Secondary, _op: object, _t: float) -> tuple[int | None, str]:
        return (5, "") if sec.name == "orange-par-1" else (4, "")

    state = FleetState(lambda kind, data: records.append((kind, data)), ask=ask)
    thread = state.after_publish(config, [("orange", 5)])
    assert thread is not None
    thread.join(5)
    kinds = [k for k, _ in records]
    assert kinds == ["propagation", "secondary-behind"]
    assert records[1][1]["secondary"] == "orange-lyo-1" and records[1][1]["serves"] == 4
    assert state.serial == {("orange", "orange-par-1"): 5, ("orange", "orange-lyo-1"): 4}
    assert "orange" not in state.propagation  # incomplete: no propagation time


@pytest.mark.integration  # starts a process
def test_both_printed_primary_configs_pass_their_servers_own_check(tmp_path: Path) -> None:
    cfg = _setup(tmp_path)
    knot = tmp_path / "knot.conf"
    knot.write_text(primary_config(load_config(cfg)))
    proc = subprocess.run(["knotc", "-c", str(knot), "conf-check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg.write_text(cfg.read_text().replace(f"kind: knot, listen: 127.0.0.1:5399, control: {tmp_path}/knot.sock",
                                           "kind: bind, listen: 127.0.0.1:5399, control: 127.0.0.1:5953"))
    named = tmp_path / "named.conf"
    bind = primary_config(load_config(cfg))
    assert SECRET not in bind and "ixfr-from-differences yes" in bind and 'key "blocker-xfr";' in bind
    named.write_text(bind)
    proc = subprocess.run(["named-checkconf", str(named)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_bind_primary_needs_an_rndc_address(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rndc"):
        primary_config(load_config(_setup(tmp_path)), "bind")  # control is a knot socket path
