"""The fast Change constructor of `blocker.publish.plan` gives exactly what its reference gives.

`change_new(Change, ...)` (`tuple.__new__`) against `change_reference` (the NamedTuple's
constructor), field by field; and the first-publish diff built with it against the general diff
built with the reference constructor, over generated zones (the first publish's changes are
made when read, `FirstPublish`: read by index, slice and iteration, each equals the list).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from blocker.orders.model import Order
from blocker.policy import Entry
from blocker.publish.plan import (
    Change,
    ChangeFields,
    _changes,
    _first_publish,
    _Reasons,
    change_new,
    change_owners,
    change_reference,
    change_tails,
    of_kind,
    owners_at,
)
from blocker.publish.reconcile import _change_groups

TEXT = st.text(max_size=12)
IDS = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=3, unique=True).map(lambda ids: tuple(sorted(ids)))
FIELDS = st.tuples(TEXT, st.sampled_from(["add", "remove", "change"]), st.one_of(st.none(), TEXT), IDS,
                   st.one_of(st.none(), TEXT), IDS, st.lists(TEXT, max_size=3).map(tuple))


@settings(max_examples=500, deadline=None)
@given(FIELDS)
def test_the_fast_constructor_builds_the_reference_change(fields: ChangeFields) -> None:
    fast, ref = change_new(Change, fields), change_reference(fields)
    assert type(fast) is type(ref) is Change
    assert fast == ref and hash(fast) == hash(ref) and repr(fast) == repr(ref)
    assert fast._asdict() == ref._asdict() and fast.to_json() == ref.to_json()
    assert fast._replace(owner="x") == ref._replace(owner="x")


AT = datetime(2026, 3, 1, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(entries=st.dictionaries(st.from_regex(r"[a-z]{1,6}\.example", fullmatch=True),
                               st.tuples(st.sampled_from(["nxdomain", "nodata", "passthru"]),
                                         IDS.filter(bool)), max_size=30),
       started=st.sets(st.sampled_from(["a", "b", "c", "d"])),
       last_publish=st.one_of(st.none(), st.just(AT - timedelta(days=1))))
def test_the_first_publish_diff_equals_the_general_diff(entries: dict[str, tuple[str, tuple[str, ...]]],
                                                       started: set[str], last_publish: datetime | None) -> None:
    """Shared Entry objects (as the policy builds them) included: several owners, one entry."""
    shared: dict[tuple[str, tuple[str, ...]], Entry] = {}
    desired = {owner: shared.setdefault(value, Entry(*value)) for owner, value in entries.items()}
    orders: dict[str, Any] = {i: SimpleNamespace(start=AT - timedelta(hours=1 if i in started else 72))
                              for i in "abcd"}
    walk = sorted(desired)

    def why() -> _Reasons:
        return _Reasons({}, cast("dict[str, Order]", orders), AT, last_publish, None)

    lazy, listed = _first_publish(walk, desired, why()), _changes(walk, [], {}, desired, why())
    assert lazy == listed and listed == lazy and list(lazy) == listed and len(lazy) == len(listed)
    assert all(lazy[i] == listed[i] and type(lazy[i]) is Change for i in range(-len(listed), len(listed)))
    assert lazy[1:4] == listed[1:4] and lazy[::-2] == listed[::-2]
    assert bool(lazy) == bool(listed)
    for kind in ("add", "remove", "change"):
        assert of_kind(lazy, kind) == of_kind(listed, kind) == [c for c in listed if c.kind == kind]
    assert list(change_owners(lazy)) == list(change_owners(listed)) == [c.owner for c in listed]
    assert list(change_tails(lazy)) == list(change_tails(listed)) == [tuple(c)[1:] for c in listed]
    assert _change_groups(lazy) == _change_groups(listed)  # the audit's records of a publish
    positions = list(range(0, len(listed), 2))
    assert owners_at(lazy, positions) == owners_at(listed, positions) == [listed[i].owner for i in positions]
