"""`apply --json` prints one JSON document, whatever the ending: scripts parse stdout whole.

The plan's fields come first (as `plan --json` prints them), then `outcomes`: what was published
per operator. The human lines ("orange: published serial N", "nothing to apply") go to stderr.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.cli import blocker

pytestmark = pytest.mark.integration  # runs the blocker console script

REPO = Path(__file__).resolve().parents[2]
CONFIG = """orders_dir: {root}/orders
state_dir: {root}/state
zones_dir: {root}/zones
publish: {{check: structural}}
operators:
  orange: {{}}
  sfr: {{}}
  bouygues: {{}}
  free: {{}}
"""


def test_apply_json_is_one_document_when_publishing_and_when_nothing_changes(tmp_path: Path) -> None:
    orders = tmp_path / "orders"
    orders.mkdir()
    shutil.copy(REPO / "orders" / "cnil-2021-medical-records-leak.yaml", orders)
    for sub in ("state", "zones"):
        (tmp_path / sub).mkdir()
    config = tmp_path / "blocker.yaml"
    config.write_text(CONFIG.format(root=tmp_path))

    first = blocker("apply", "--json", config=config)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)  # the whole stdout, not its first part
    assert doc["checksum"] and doc["outcomes"]
    published = {o["operator"]: o for o in doc["outcomes"]}
    assert set(published) == {"orange", "sfr", "bouygues", "free"} and all(o["published"] for o in published.values())
    assert all(isinstance(o["serial"], int) for o in published.values())
    assert "published serial" in first.stderr and "published serial" not in first.stdout

    again = blocker("apply", "--json", config=config)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["outcomes"] == [] and "nothing" in again.stderr

