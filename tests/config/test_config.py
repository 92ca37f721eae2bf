"""The daemon configuration: documented defaults, strict keys, a user file laid over them."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from blocker.config.default import default_text
from blocker.config.load import load_config
from blocker.config.model import ConfigError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OPERATORS = {"orange", "sfr", "bouygues", "free"}


def test_the_shipped_config_is_the_built_in_defaults_not_a_copy():
    shipped = REPO / "configs" / "blocker.yaml"
    assert shipped.is_symlink()
    assert shipped.resolve() == (REPO / "blocker" / "config" / "default.yaml").resolve()
    assert shipped.read_bytes() == default_text()  # what the installed package reads


def test_built_in_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/blocker.yaml here
    config = load_config(None)
    assert config.source == "<built-in defaults>"
    assert config.timezone == "Europe/Paris"
    assert config.orders_dir == Path("orders")
    assert config.extend_to_working_day is False
    assert config.holidays_country == "FR"
    assert set(config.operators) == DEFAULT_OPERATORS
    assert config.operators["bouygues"].name == "Bouygues Telecom"
    assert all(op.redirect.configured for op in config.operators.values())


def test_configs_blocker_yaml_in_the_working_directory_is_used(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "blocker.yaml").write_text("timezone: America/New_York\n")
    config = load_config(None)
    assert config.timezone == "America/New_York"
    assert "configs/blocker.yaml" in config.source


def test_the_shipped_file_gives_the_built_in_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    builtin = load_config(None)
    shipped = load_config(REPO / "configs" / "blocker.yaml")
    assert dataclasses.replace(shipped, source="") == dataclasses.replace(builtin, source="")


def test_a_user_file_overrides_only_the_keys_it_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "mine.yaml"
    path.write_text(
        "timezone: America/New_York\n"
        "orders_dir: /srv/orders\n"
        "legal:\n  extend_to_working_day: true\n"
        "rpz:\n  ttl: 300\n  soa: {minimum: 5}\n"
    )
    config = load_config(path)
    builtin = load_config(None)
    assert config.source == str(path)
    assert config.timezone == "America/New_York"
    assert config.orders_dir == Path("/srv/orders")
    assert config.extend_to_working_day is True
    assert config.holidays_country == builtin.holidays_country  # sibling key kept
    assert config.rpz_ttl == 300
    assert config.soa.minimum == 5
    assert config.soa.refresh == builtin.soa.refresh  # nested sibling kept
    assert config.zones_dir == builtin.zones_dir
    assert set(config.operators) == DEFAULT_OPERATORS


def test_a_file_that_lists_operators_replaces_the_default_four(tmp_path):
    path = tmp_path / "ops.yaml"
    path.write_text("operators:\n  acme:\n    name: ACME Telecom\n  free: {}\n")
    config = load_config(path)
    assert set(config.operators) == {"acme", "free"}
    assert config.operators["acme"].name == "ACME Telecom"
    assert config.operators["acme"].origin == "acme.rpz.blocker."
    assert not config.operators["acme"].redirect.configured


@pytest.mark.parametrize(
    ("text", "key_path"),
    [
        ("timezon: Europe/Paris\n", "timezon"),
        ("legal:\n  extend_to_workday: true\n", "legal.extend_to_workday"),
        ("rpz:\n  soa:\n    minimun: 5\n", "rpz.soa.minimun"),
        ("operators:\n  orange:\n    nmae: Orange\n", "operators.orange.nmae"),
        ("operators:\n  orange:\n    redirect: {ipv4: [192.0.2.1]}\n", "operators.orange.redirect.ipv4"),
    ],
)
def test_unknown_keys_are_refused_with_their_path(tmp_path, text, key_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert key_path in message
    assert "unknown key" in message
    assert str(path) in message


def test_unknown_key_reports_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("timezone: Europe/Paris\nlegal:\n  extend_to_working_day: true\n  typo: 1\n")
    with pytest.raises(ConfigError, match=r"legal\.typo.*line 4"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("timezone: Mars/Olympus\n", "timezone"),
        ("legal: {extend_to_working_day: maybe}\n", "legal.extend_to_working_day"),
        ("rpz: {ttl: -1}\n", "rpz.ttl"),
        ("rpz: {ttl: true}\n", "rpz.ttl"),
        ("operators: {}\n", "operators"),
        ("operators:\n  Orange: {}\n", "operators"),
        ("log_format: xml\n", "log_format"),
        ("legal: 5\n", "legal"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path, text, where):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(where)):
        load_config(path)


@pytest.mark.parametrize(
    "data", [b"a: 1\na: 2\n", b"- a\n", b"x: &a 1\ny: *a\n", "timezone: caf\xe9\n".encode("latin-1"), b""],
)
def test_unreadable_config_files_are_config_errors(tmp_path, data):
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
