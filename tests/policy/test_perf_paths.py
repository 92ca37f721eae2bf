"""The fast paths give exactly what the straightforward code gives.

Each optimisation of the render pipeline is checked against a reference: the code it replaced
(kept here, verbatim where it was simple), or the library it stands in for. Patched zone
contents, patched renderings and restricted diffs are compared with full recomputations over
sequences of order edits; the Public Suffix List lookups with `PublicSuffixList().is_public`;
the YAML fast construction with the careful one; the parallel parse with the serial one.
"""

from __future__ import annotations

import hashlib
import random
from bisect import insort
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from publicsuffixlist import PublicSuffixList

from blocker.config.model import load_config
from blocker.orders import model as orders_mod
from blocker.orders.model import Order, OrderCache, Target, load_orders, parse_order
from blocker.orders.names import _psl, is_public_suffix, normalize_name
from blocker.orders.yamlio import LineDict, LineList, YamlError, _StrictLoader, loads_mapping
from blocker.policy.compute import (
    STRENGTH,
    Entry,
    PolicyCache,
    ZoneContent,
    canonical_order,
    desired,
    fold_wildcards,
    merge_entries,
    sort_key,
    zone_content,
)
from blocker.publish.plan import Caches, _addition_reasons, _removal_reasons, compute_plan, diff
from blocker.zone.rpz import (
    ACTION_OF_TARGET,
    _structural_check_text,
    body_lines,
    entries_from_bytes,
    read_entries,
    render_body,
    structural_check,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG = load_config(REPO / "blocker" / "config" / "default.yaml")
AT = datetime(2027, 6, 1, 12, tzinfo=UTC)
ACTIONS = list(STRENGTH)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- references: the code the fast paths replaced ------------------------------------------------

def ref_canonical_order(names) -> list[str]:
    wanted = set(names)
    apexes = sorted((o for o in wanted if not o.startswith("*.")), key=sort_key)
    out = []
    for apex in apexes:
        out.append(apex)
        if "*." + apex in wanted:
            out.append("*." + apex)
    return out


def ref_fold(entries, ordered):
    stack = []
    folded = None
    for owner in ordered:
        while stack and not owner.endswith(stack[-1][0]):
            stack.pop()
        if stack:
            entry = entries[owner]
            action, ids = entry.action, entry.order_ids
            for _, cover in stack:
                if STRENGTH[cover.action] > STRENGTH[action]:
                    action = cover.action
                ids = (*ids, *(oid for oid in cover.order_ids if oid not in ids))
            if action != entry.action or ids != entry.order_ids:
                if folded is None:
                    folded = dict(entries)
                folded[owner] = Entry(action, tuple(sorted(ids)))
        if owner.startswith("*."):
            stack.append((owner[1:], entries[owner]))
    return entries if folded is None else folded


def ref_content(active):
    entries = merge_entries(active)
    ordered = ref_canonical_order(entries)
    return ref_fold(entries, ordered), ordered


def ref_body(content, op) -> bytes:
    return "".join(body_lines(content, op)).encode("ascii")


def ref_diff(previous, desired_, operator, orders, at, last_publish, ordered=None):
    if previous == desired_:
        return []
    known_ids = {i for e in set(previous.values()) for i in e.order_ids}
    added_why, removed_why = {}, {}

    def why_added(ids):
        if ids not in added_why:
            added_why[ids] = _addition_reasons(ids, orders, known_ids, last_publish, at)
        return added_why[ids]

    def why_removed(ids):
        if ids not in removed_why:
            removed_why[ids] = _removal_reasons(ids, orders, at)
        return removed_why[ids]

    differing = {owner for owner, _ in desired_.items() - previous.items()}
    if ordered is not None and len(differing) > len(desired_) // 4:
        walk = [o for o in ordered if o in differing]
    else:
        walk = sorted(differing, key=sort_key)
    changes = []
    for owner in walk:
        new, old = desired_[owner], previous.get(owner)
        if old is None:
            changes.append(("add", owner, new.action, new.order_ids, None, (), why_added(new.order_ids)))
        else:
            gone = tuple(i for i in old.order_ids if i not in new.order_ids)
            came = tuple(i for i in new.order_ids if i not in old.order_ids)
            reasons = set(why_removed(gone) if gone else ()) | set(why_added(came) if came else ())
            changes.append(("change", owner, new.action, new.order_ids, old.action, old.order_ids,
                            tuple(sorted(reasons or {"order-changed"}))))
    for owner in sorted(previous.keys() - desired_.keys(), key=sort_key):
        old = previous[owner]
        changes.append(("remove", owner, None, (), old.action, old.order_ids, why_removed(old.order_ids)))
    return changes


def as_tuples(changes):
    return [(c.kind, c.owner, c.action, c.order_ids, c.old_action, c.old_order_ids, c.reasons) for c in changes]


def ref_read_entries(text: str):
    entries = {}
    for line in text.splitlines(keepends=True):
        if line[0] in ";$@\n":
            continue
        record, _, comment = line.partition(" ; ")
        owner, rtype, rdata = record.split(" ", 2)
        if rtype == "TXT":
            continue
        rdata = rdata.strip()
        action = ACTION_OF_TARGET.get(rdata, "redirect") if rtype == "CNAME" else "redirect"
        if owner not in entries:
            entries[owner] = Entry(action, tuple(comment.strip().split(",")) if comment else ())
    return entries


# --- orders to play with ---------------------------------------------------------------------------

# A small tree of names, so that wildcards cover other targets and names nest several deep.
LABELS = ["a", "b", "www", "x-y", "0", "m"]
BASES = ["example.gg", "shop.example.gg", "test.example", "example"]
NAMES = sorted({f"{label}.{base}" for label in LABELS for base in BASES[:3]}
               | {f"{l1}.{l2}.{base}" for l1 in LABELS[:3] for l2 in LABELS[:3] for base in BASES[:2]}
               | {"shop.example.gg", "example.gg", "test.example"})


def make_order(order_id: str, targets: list[tuple[str, bool]], action: str, operators: str = "[orange, sfr]",
               start: str = "2027-01-01") -> Order:
    lines = "".join(f"  - {{domain: '{name}', subdomains: {str(sub).lower()}}}\n" for name, sub in targets)
    text = (f"id: {order_id}\ncourt: TJ Paris\ncase_number: RG {order_id}\ndecision_date: 2026-12-01\n"
            f"operators: {operators}\nstart: '{start}'\nend: '2027-12-31'\naction: {action}\ntargets:\n{lines}")
    order = parse_order(text.encode(), f"{order_id}.yaml", CONFIG)
    assert isinstance(order, Order), [str(e) for e in order]
    return order


target_lists = st.lists(st.tuples(st.sampled_from(NAMES), st.booleans()), min_size=1, max_size=8)
order_specs = st.dictionaries(st.sampled_from([f"o{i}" for i in range(6)]),
                              st.tuples(target_lists, st.sampled_from(ACTIONS)), min_size=0, max_size=5)


def build(spec) -> list[Order]:
    return [make_order(order_id, targets, action) for order_id, (targets, action) in sorted(spec.items())]


# --- policy: patched content == full recomputation --------------------------------------------------

@SETTINGS
@given(st.lists(order_specs, min_size=2, max_size=6))
def test_a_patched_zone_content_equals_a_full_computation(states):
    cache = PolicyCache()
    for spec in states:
        active = build(spec)
        content = cache.get("orange", active)
        entries, ordered = ref_content(active)
        assert content.entries == entries
        assert content.owners == ordered
        assert content.names == sum(1 for o in entries if not o.startswith("*."))
        assert content.actions == frozenset(e.action for e in entries.values())
        assert content.action_counts == Counter(e.action for e in entries.values())
        full = zone_content(active)
        assert full.entries == entries and full.owners == ordered


@SETTINGS
@given(st.lists(st.sampled_from(NAMES + [f"*.{n}" for n in NAMES]), unique=True),
       st.lists(st.tuples(st.sampled_from(ACTIONS), st.lists(st.sampled_from("pqrs"), min_size=1, max_size=3,
                                                              unique=True)), min_size=1, max_size=4),
       st.randoms())
def test_fold_wildcards_equals_the_stack_pass(owners, entry_specs, rnd):
    entries = {}
    for owner in owners:
        action, ids = rnd.choice(entry_specs)
        entries[owner] = Entry(action, tuple(sorted(ids)))
    ordered = sorted(entries, key=sort_key)
    assert ordered == ref_canonical_order(entries) or any(
        o.startswith("*.") and o[2:] not in entries for o in entries)  # a lone wildcard: see the note below
    assert fold_wildcards(entries, ordered) == ref_fold(entries, ordered)


def test_canonical_order_keeps_a_wildcard_without_its_apex():
    # The old full sort walked the apexes only, so a `*.name` held without `name` (a removal held
    # back for review) was missing from the zone while the plan said it was kept.
    assert canonical_order({"*.b.example": 1, "a.example": 1}) == ["a.example", "*.b.example"]


@SETTINGS
@given(st.lists(st.sampled_from(NAMES + [f"*.{n}" for n in NAMES]), unique=True),
       st.lists(st.sampled_from(NAMES + [f"*.{n}" for n in NAMES]), unique=True))
def test_patching_the_canonical_order_equals_sorting(first, second):
    previous = ZoneContent(dict.fromkeys(first, Entry("nxdomain", ("a",))), sorted(first, key=sort_key))
    assert canonical_order(set(second), previous) == sorted(second, key=sort_key)
    assert canonical_order(dict.fromkeys(second, 1), previous) == sorted(second, key=sort_key)


def test_the_old_insort_patch_gave_the_same_order():
    rnd = random.Random(7)
    names = rnd.sample(NAMES, 20)
    ordered = sorted(names[:10], key=sort_key)
    for name in names[10:]:
        insort(ordered, name, key=sort_key)
    assert ordered == sorted(names, key=sort_key)


# --- render: patched body == the line-by-line rendering ----------------------------------------------

@SETTINGS
@given(st.lists(order_specs, min_size=2, max_size=6), st.sampled_from(["orange", "sfr", "free"]))
def test_a_patched_rendering_equals_a_full_one(states, operator):
    caches = Caches()
    op = CONFIG.operators[operator]
    for spec in states:
        content = desired(build(spec), operator, AT, caches.policy)
        zone = render_body(content, op, caches.render)
        body = ref_body(content, op)
        assert zone.body == body
        assert zone.checksum == hashlib.sha256(body).hexdigest()
        assert zone.entries == body.count(b"\n")
        assert zone.names == content.names


def test_a_one_file_change_patches_the_rendering_not_re_renders_it(monkeypatch):
    caches = Caches()
    op = CONFIG.operators["orange"]
    many = [(f"n{i}.{NAMES[i % len(NAMES)]}", i % 2 == 0) for i in range(3000)]
    first = [make_order("big", many, "nxdomain"), make_order("small", [("a.example.gg", True)], "drop")]
    render_body(desired(first, "orange", AT, caches.policy), op, caches.render)
    from blocker.zone import rpz
    calls = []
    monkeypatch.setattr(rpz, "_render", lambda *a, **k: calls.append(1))
    second = [first[0], make_order("small", [("a.example.gg", True), ("b.example.gg", False)], "drop")]
    content = desired(second, "orange", AT, caches.policy)
    assert content.touched is not None and len(content.touched) < 10
    zone = render_body(content, op, caches.render)
    assert not calls
    assert zone.body == ref_body(content, op)


def test_renderings_are_shared_by_operators_with_the_same_templates():
    caches = Caches()
    orders = build({"o1": ([("a.example.gg", True)], "nxdomain")})
    zones = [render_body(desired(orders, op, AT, caches.policy), CONFIG.operators[op], caches.render)
             for op in ("orange", "sfr")]
    assert zones[0].body is zones[1].body


# --- plan: the restricted and the first-publish diffs == the full diff --------------------------------

@SETTINGS
@given(st.lists(order_specs, min_size=2, max_size=5))
def test_diff_of_a_patched_content_equals_the_full_diff(states):
    cache = PolicyCache()
    previous_content = None
    by_id = {}
    for spec in states:
        active = build(spec)
        by_id.update({o.id: o for o in active})
        content = cache.get("orange", active)
        prev_entries = previous_content.entries if previous_content is not None else {}
        base = content.patched_from() if content.patched_from is not None else None
        candidates = known = None
        if base is not None and base.entries is prev_entries:  # as plan_operator does
            candidates, known = content.touched, {order_id for order_id, _ in base.key}
            assert known == {i for e in prev_entries.values() for i in e.order_ids}
        for last in (None, datetime(2027, 1, 1, 12, tzinfo=UTC)):
            want = ref_diff(prev_entries, content.entries, "orange", by_id, AT, last, content.owners)
            assert as_tuples(diff(prev_entries, content.entries, by_id, AT, last, content.owners,
                                  candidates, known)) == want
            assert as_tuples(diff(prev_entries, content.entries, by_id, AT, last, content.owners)) == want
            assert as_tuples(diff(dict(prev_entries), content.entries, by_id, AT, last)) == want
        previous_content = content


def test_a_first_publish_diffs_once_for_operators_sharing_a_zone(tmp_path, monkeypatch):
    from blocker.publish import plan as plan_mod
    calls = []
    real = plan_mod.diff
    monkeypatch.setattr(plan_mod, "diff", lambda *a, **k: calls.append(1) or real(*a, **k))
    orders = {o.id: o for o in build({"o1": ([("a.example.gg", True)], "nxdomain"),
                                       "o2": ([("b.example.gg", False)], "drop")})}
    plan = compute_plan(orders, AT, CONFIG, tmp_path / "none", operators=["orange", "sfr"])
    assert len(calls) == 1  # each operator's missing zone is a different empty dict: one diff all the same
    assert plan.operators[0].changes == plan.operators[1].changes
    assert as_tuples(plan.operators[0].changes) == ref_diff({}, plan.operators[0].entries, "orange", orders, AT,
                                                            None, sorted(plan.operators[0].entries, key=sort_key))


# --- reading zones back --------------------------------------------------------------------------------

@SETTINGS
@given(order_specs, st.sampled_from(["orange", "free"]))
def test_read_entries_equals_the_line_by_line_reader(tmp_path_factory, spec, operator):
    op = CONFIG.operators[operator]
    zone = render_body(desired(build(spec), operator, AT), op)
    hand = b"hand.example CNAME .\nhand.example A 192.0.2.1 ; x,y\nlone.example CNAME rpz-drop.\n"
    text = zone.text(7, CONFIG) + hand
    path = tmp_path_factory.mktemp("z") / "zone.rpz"
    path.write_bytes(text)
    want = ref_read_entries(text.decode("ascii"))
    assert read_entries(path) == want
    assert entries_from_bytes(text) == want


def test_read_entries_refuses_what_the_line_reader_refused(tmp_path):
    path = tmp_path / "z.rpz"
    path.write_bytes(b"good.example CNAME . ; a\nbroken\n")
    with pytest.raises(ValueError):
        read_entries(path)
    with pytest.raises(ValueError):
        entries_from_bytes(path.read_bytes())


@SETTINGS
@given(order_specs, st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(
    [b"", b"\n", b"x", b"\xff", b"\x1c", b" ", b"\t", b"serial.", b"; content-sha256: " + b"0" * 64 + b"\n"])),
    max_size=3), st.booleans())
def test_structural_check_over_bytes_equals_the_text_check(spec, edits, truncate):
    zone = render_body(desired(build(spec), "orange", AT), CONFIG.operators["orange"])
    data = bytearray(zone.text(5, CONFIG))
    for position, insert in edits:
        position %= len(data) + 1
        data[position:position + (1 if insert else 0)] = insert
    if truncate:
        data = data[: len(data) // 2]
    for origin in ("orange.rpz.blocker.", "other.", "ünï."):
        assert structural_check(bytes(data), origin) == _structural_check_text(bytes(data), origin)


# --- names: the Public Suffix List by set lookups ------------------------------------------------------

REFERENCE_PSL = PublicSuffixList()
RULES = sorted(_psl()._publicsuffix)


@st.composite
def names_near_rules(draw):
    rule = draw(st.sampled_from(RULES))
    base = rule.lstrip("!").removeprefix("*.")
    choice = draw(st.integers(0, 5))
    label = draw(st.sampled_from(["www", "a", "foo", "xn--bcher-kva", "city", "0"]))
    if choice == 0:
        name = base
    elif choice == 1:
        name = f"{label}.{base}"
    elif choice == 2:
        name = f"{label}.{label}.{base}"
    elif choice == 3:
        name = base.partition(".")[2] or base
    elif choice == 4:
        name = rule  # with its `!` or `*`: what is_public does with odd input too
    else:
        name = f"{label}.{rule}"
    return draw(st.sampled_from([name, name.upper(), name + "."]))


@settings(max_examples=3000, deadline=None)
@given(names_near_rules())
def test_public_suffix_lookup_agrees_with_publicsuffixlist_near_its_rules(name):
    assert is_public_suffix(name) == bool(REFERENCE_PSL.is_public(name))


@pytest.mark.parametrize("name", [
    "ck", "www.ck", "foo.ck", "a.foo.ck", "kobe.jp", "city.kobe.jp", "x.city.kobe.jp", "foo.kobe.jp",
    "co.uk", "example.co.uk", "github.io", "foo.github.io", "gg", "example.gg", "com", "example.com",
    "", ".", "a..b", "example.", "EXAMPLE.CO.UK", "nonexistent-tld", "a.nonexistent-tld", "s3.amazonaws.com",
    "bucket.s3.amazonaws.com", "xn--p1ai", "xn--80ak6aa92e.com", "рф", "пример.рф", "*.ck", "!www.ck",
])
def test_public_suffix_lookup_agrees_with_publicsuffixlist_on_examples(name):
    assert is_public_suffix(name) == bool(REFERENCE_PSL.is_public(name))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["com", "uk", "co", "jp", "kobe", "city", "ck", "www", "io", "github", "a", "b"]),
                min_size=1, max_size=5))
def test_public_suffix_lookup_agrees_on_random_label_sequences(labels):
    name = ".".join(labels)
    assert is_public_suffix(name) == bool(REFERENCE_PSL.is_public(name))
    if is_public_suffix(name):
        with pytest.raises(Exception, match="public suffix"):
            normalize_name(name)


# --- YAML: the fast construction == the careful one ----------------------------------------------------

def plain(value):
    """A LineDict/LineList with its line numbers, as comparable data."""
    if isinstance(value, LineDict):
        return ("map", value.line, [(k, value.lines[k], plain(v)) for k, v in value.items()])
    if isinstance(value, LineList):
        return ("seq", value.line, list(value.lines), [plain(v) for v in value])
    return (type(value).__name__, value)


def outcome(data: bytes):
    try:
        return plain(loads_mapping(data))
    except YamlError as exc:
        return ("error", exc.message, exc.line)


SCALARS = ["a", "site.example", "yes", "no", "on", "null", "~", "1", "0x1f", "1.5", ".inf", "2026-01-01",
           "'quoted'", '"dq"', "!!str 12", "!!int abc", "!!bool maybe", "!foo x", "<<", "=", "", "-", "+1",
           "true", "False", "example.gg", "nothing", "fine", "tx.example", "off.example", "*alias", "[]", "{}"]
documents = st.recursive(
    st.sampled_from(SCALARS),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(st.sampled_from(["k", "domain", "subdomains", "1", "true", "<<", "k"]), inner),
                 max_size=3).map(lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"),
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["id", "targets", "court", "x", "id", "lifted"]), documents),
                min_size=1, max_size=4), st.booleans())
def test_fast_yaml_construction_equals_the_careful_one(fields, block):
    if block:
        text = "".join(f"{k}:\n  - {v}\n  - {v}\n" for k, v in fields)
    else:
        text = "".join(f"{k}: {v}\n" for k, v in fields)
    fast = outcome(text.encode())
    careful = outcome((text + "# & forces the careful path\n").encode())
    assert fast == careful


def test_yaml_deeper_than_the_fast_path_goes_is_built_by_the_careful_one():
    text = b"a: " + b"[" * 40 + b"x" + b"]" * 40 + b"\n"
    assert outcome(text) == outcome(text + b"# &\n")
    assert loads_mapping(text)["a"][0][0][0]


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.sampled_from(SCALARS), st.text(max_size=12)), st.booleans(), st.booleans())
def test_resolve_shortcut_equals_the_resolver(value, plain_implicit, quoted_implicit):
    loader = _StrictLoader("")
    try:
        for kind in (yaml.ScalarNode, yaml.SequenceNode, yaml.MappingNode):
            v = value if kind is yaml.ScalarNode else None
            assert loader.resolve(kind, v, (plain_implicit, quoted_implicit)) == \
                yaml.resolver.BaseResolver.resolve(loader, kind, v, (plain_implicit, quoted_implicit))
    finally:
        loader.dispose()


# --- orders: parsed in worker processes == parsed here -------------------------------------------------

def test_fast_target_equals_the_dataclass():
    made = orders_mod._target("a.example", True, "domain", "A.example")
    assert made == Target("a.example", True, "domain", "A.example")
    assert hash(made) == hash(Target("a.example", True, "domain", "A.example"))
    with pytest.raises(AttributeError):
        made.name = "b"  # type: ignore[misc]


def _write_folder(folder: Path, files: int) -> None:
    folder.mkdir()
    for f in range(files):
        targets = "".join(f"  - site{i}-{f}.example.gg\n" if i % 3 else
                          f"  - {{domain: 'Site{i}-{f}.Example.GG.', subdomains: false}}\n" for i in range(20))
        text = (f"id: order-{f:03d}\ncourt: TJ Paris\ncase_number: RG {f}\ndecision_date: 2026-12-01\n"
                f"operators: [orange]\nstart: '2027-01-01'\nduration: 6 months\ntargets:\n{targets}"
                f"  - {{url: 'https://files{f}.example.gg/x'}}\n")
        if f % 17 == 3:
            text = text.replace("court: TJ Paris\n", "")  # invalid: a field missing
        if f % 23 == 5:
            text += "  - co.uk\n  - '1.2.3.4'\n"  # invalid names
        if f % 29 == 7:
            text = "id: [unclosed\n"  # invalid YAML
        if f % 31 == 9:
            text = text.replace(f"id: order-{f:03d}", "id: order-000")  # a duplicate id
        (folder / f"order-{f:03d}.yaml").write_text(text)
    (folder / "big.yaml").write_bytes(b"x" * (8 * 1024 * 1024 + 1))  # too large to read


def test_parallel_parse_gives_the_serial_outcome(tmp_path):
    folder = tmp_path / "orders"
    _write_folder(folder, orders_mod.PARALLEL_MIN_FILES + 40)
    serial_cache, parallel_cache = OrderCache(), OrderCache()
    serial = load_orders(folder, CONFIG, serial_cache, workers=1)
    parallel = load_orders(folder, CONFIG, parallel_cache, workers=2)
    assert serial.errors and serial.invalid_files and serial.orders
    assert parallel.orders == serial.orders
    assert list(parallel.orders) == list(serial.orders)
    assert parallel.errors == serial.errors
    assert parallel.invalid_files == serial.invalid_files
    assert parallel_cache.entries == serial_cache.entries
    assert str(folder / "big.yaml") not in parallel_cache.entries  # a failed read is not cached
    for order in parallel.orders.values():  # the normal form shares its string with the source
        for target in order.targets:
            assert (target.source is target.name) == (target.source == target.name)
    # The cache then serves every file: nothing left to parse.
    again = load_orders(folder, CONFIG, parallel_cache, workers=2)
    assert again.orders == serial.orders and again.errors == serial.errors


def test_parallel_parse_falls_back_to_this_process_when_workers_cannot_start(tmp_path, monkeypatch):
    folder = tmp_path / "orders"
    _write_folder(folder, orders_mod.PARALLEL_MIN_FILES + 5)
    import multiprocessing

    def no_context(method):
        raise ValueError(f"cannot find context for {method!r}")

    monkeypatch.setattr(multiprocessing, "get_context", no_context)
    serial = load_orders(folder, CONFIG, workers=1)
    fallback = load_orders(folder, CONFIG, workers=2)
    assert fallback.orders == serial.orders and fallback.errors == serial.errors


@pytest.mark.integration
@SETTINGS
@given(st.lists(order_specs, min_size=2, max_size=5), st.booleans())
def test_a_plan_knows_the_order_ids_of_its_zone(tmp_path_factory, states, force):
    """`OperatorPlan.order_ids` without a pass over the entries equals that pass, held removals
    included (a previous zone with names no order explains any more)."""
    from blocker.publish.reconcile import publish_plan

    zones = tmp_path_factory.mktemp("zones")
    caches = Caches()
    for spec in states:
        orders = {o.id: o for o in build(spec)}
        plan = compute_plan(orders, AT, CONFIG, zones, operators=["orange", "free"], force=force, caches=caches)
        for op_plan in plan.operators:
            assert op_plan.known_order_ids is not None
            assert op_plan.order_ids == sorted({i for e in op_plan.entries.values() for i in e.order_ids})
        publish_plan(plan, CONFIG, zones, None, None)


def test_order_files_lists_what_the_path_walk_listed(tmp_path):
    folder = tmp_path / "orders"
    folder.mkdir()
    for name in ["b.yaml", "a.yml", "c.YAML", ".hidden.yaml", "d.yaml.", "e.txt", "x.y.yaml", "Z.yaml", "ü.yaml"]:
        (folder / name).write_text("x")
    (folder / "dir.yaml").mkdir()
    (folder / "link.yaml").symlink_to(folder / "b.yaml")
    (folder / "broken.yaml").symlink_to(folder / "missing.yaml")
    old = sorted(p for p in folder.iterdir() if p.suffix in orders_mod.ORDER_SUFFIXES and p.is_file()
                 and not p.name.startswith("."))
    assert orders_mod.order_files(folder) == old
