"""The fast paths of `blocker.orders` give exactly what their references give.

The Public Suffix List lookups by set (`is_public_suffix`) against `PublicSuffixList().is_public`;
the fast YAML construction against the plain one (`loads_mapping(..., reference=True)`); the
targets built by `make_target` against the dataclass; the parallel parse against the serial one;
the check that a main script is safe for worker processes against scripts that are and are not.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from publicsuffixlist import PublicSuffixList

from blocker.config.load import load_config
from blocker.orders import load as loader_mod
from blocker.orders.load import load_orders
from blocker.orders.model import OrderCache, Target, make_target
from blocker.orders.names import is_public_suffix, normalize_name, psl_rules
from blocker.orders.yamlio import LineDict, LineList, YamlError, loads_mapping
from tests.support.properties import examples

REPO = Path(__file__).resolve().parents[2]
CONFIG = load_config(REPO / "blocker" / "config" / "default.yaml")


# --- names: the Public Suffix List by set lookups ------------------------------------------------------

REFERENCE_PSL = PublicSuffixList()
RULES = sorted(psl_rules())


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


@settings(max_examples=examples(3000), deadline=None)
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


@settings(max_examples=examples(500), deadline=None)
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


def outcome(data: bytes, reference: bool = False):
    try:
        return plain(loads_mapping(data, reference=reference))
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


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["id", "targets", "court", "x", "id", "lifted"]), documents),
                min_size=1, max_size=4), st.booleans())
def test_fast_yaml_construction_equals_the_careful_one(fields, block):
    if block:
        text = "".join(f"{k}:\n  - {v}\n  - {v}\n" for k, v in fields)
    else:
        text = "".join(f"{k}: {v}\n" for k, v in fields)
    assert outcome(text.encode()) == outcome(text.encode(), reference=True)
    # An anchor anywhere (here in a comment) sends the fast path to the careful construction too.
    assert outcome((text + "# &\n").encode()) == outcome(text.encode(), reference=True)


def test_yaml_deeper_than_the_fast_path_goes_is_built_by_the_careful_one():
    text = b"a: " + b"[" * 40 + b"x" + b"]" * 40 + b"\n"
    assert outcome(text) == outcome(text, reference=True)
    assert loads_mapping(text)["a"][0][0][0]


@settings(max_examples=examples(500), deadline=None)
@given(st.one_of(st.sampled_from(SCALARS), st.text(max_size=12)), st.sampled_from(["{}", "'{}'", '"{}"', "[{}]"]))
def test_resolving_scalars_equals_pyyaml_s_resolver(value, shape):
    """The `resolve` shortcut (plain scalars that no implicit resolver claims are strings) against
    PyYAML's resolver, through whole documents: same values, same errors."""
    text = f"k: {shape.format(value)}\nl:\n  - {shape.format(value)}\n"
    assert outcome(text.encode()) == outcome(text.encode(), reference=True)


# --- orders: parsed in worker processes == parsed here -------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(name=st.text(max_size=30), subdomains=st.booleans(), kind=st.sampled_from(["domain", "url-escalated"]),
       source=st.text(max_size=30))
def test_fast_target_equals_the_dataclass(name: str, subdomains: bool, kind: str, source: str) -> None:
    """Every field of the dataclass is set (a field added to Target and not to make_target fails
    here), and the result is the dataclass's in every way a caller can see."""
    made, ref = make_target(name, subdomains, kind, source), Target(name, subdomains, kind, source)
    assert type(made) is Target
    assert made == ref and hash(made) == hash(ref) and repr(made) == repr(ref)
    assert made.to_json() == ref.to_json()
    assert [getattr(made, f.name) for f in dataclasses.fields(Target)] == [name, subdomains, kind, source]
    with pytest.raises(dataclasses.FrozenInstanceError):
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
    _write_folder(folder, loader_mod.PARALLEL_MIN_FILES + 40)
    serial_cache, parallel_cache = OrderCache(), OrderCache()
    serial = load_orders(folder, CONFIG.order_rules, serial_cache, workers=1)
    parallel = load_orders(folder, CONFIG.order_rules, parallel_cache, workers=2)
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
    again = load_orders(folder, CONFIG.order_rules, parallel_cache, workers=2)
    assert again.orders == serial.orders and again.errors == serial.errors


def test_parallel_parse_falls_back_to_this_process_when_workers_cannot_start(tmp_path, monkeypatch):
    folder = tmp_path / "orders"
    _write_folder(folder, loader_mod.PARALLEL_MIN_FILES + 5)
    import multiprocessing

    def no_context(method):
        raise ValueError(f"cannot find context for {method!r}")

    monkeypatch.setattr(multiprocessing, "get_context", no_context)
    serial = load_orders(folder, CONFIG.order_rules, workers=1)
    fallback = load_orders(folder, CONFIG.order_rules, workers=2)
    assert fallback.orders == serial.orders and fallback.errors == serial.errors



def test_the_files_parsed_are_what_the_path_walk_listed(tmp_path):
    folder = tmp_path / "orders"
    folder.mkdir()
    for name in ["b.yaml", "a.yml", "c.YAML", ".hidden.yaml", "d.yaml.", "e.txt", "x.y.yaml", "Z.yaml", "ü.yaml"]:
        (folder / name).write_text("x")
    (folder / "dir.yaml").mkdir()
    (folder / "link.yaml").symlink_to(folder / "b.yaml")
    (folder / "broken.yaml").symlink_to(folder / "missing.yaml")
    old = sorted(p for p in folder.iterdir() if p.suffix in loader_mod.ORDER_SUFFIXES and p.is_file()
                 and not p.name.startswith("."))
    result = load_orders(folder, CONFIG.order_rules)
    parsed = sorted(Path(e.path) for e in result.errors if e.message.startswith("expected a mapping"))
    assert parsed == old

# --- worker processes: which main scripts may be imported again -----------------------------------------

INERT = [
    "import sys\nfrom blocker.cli.main import main\nif __name__ == '__main__':\n    sys.exit(main())\n",
    '"""doc"""\nfrom __future__ import annotations\nX = 1\nY: int = 2\n'
    "try:\n    import json\nexcept ImportError:\n    json = None\n"
    "def f(a=1):\n    print(a)\nclass C:\n    z = (1, 2)\n    def m(self):\n        return f()\n"
    "if '__main__' == __name__:\n    f()\n",
]
NOT_INERT = [
    "import sys\nsys.exit(main())\n",  # no guard
    "print('hello')\nif __name__ == '__main__':\n    pass\n",
    "# if __name__ == '__main__': mentioned in a comment only\nmain()\n",
    "X = open('/tmp/x', 'w')\n",
    "@register()\ndef f():\n    pass\n",
    "def f(a=launch()):\n    pass\n",
    "class C(make_base()):\n    pass\n",
    "class C:\n    run()\n",
    "if __name__ != '__main__':\n    pass\nelse:\n    main()\n",
    "if DEBUG:\n    import pdb\n",
    "for i in range(3):\n    pass\n",
    "with open('x'):\n    pass\n",
    "this is not python\n",
]


@pytest.mark.parametrize("source", INERT)
def test_a_script_that_only_imports_defines_and_binds_is_inert(tmp_path, source):
    path = tmp_path / "script.py"
    path.write_text(source)
    assert loader_mod._script_is_inert(str(path))


@pytest.mark.parametrize("source", NOT_INERT)
def test_a_script_that_does_anything_else_is_not(tmp_path, source):
    path = tmp_path / "script.py"
    path.write_text(source)
    assert not loader_mod._script_is_inert(str(path))


def test_the_installed_console_script_is_inert():
    script = Path(sys.executable).parent / "blocker"
    if not script.is_file():
        pytest.skip("no console script installed")
    assert loader_mod._script_is_inert(str(script))


@pytest.mark.integration  # starts a process
def test_a_script_without_a_guard_loads_in_its_own_process(tmp_path):
    """The script below would print once more per worker process if workers imported it:
    `load_orders` parses in the script's process instead, with the same outcome."""
    folder = tmp_path / "orders"
    _write_folder(folder, loader_mod.PARALLEL_MIN_FILES + 10)
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import os\n"
        "from pathlib import Path\n"
        "from blocker.config.load import load_config\n"
        "from blocker.orders.load import load_orders\n"
        "print('ran', os.getpid(), flush=True)\n"
        f"config = load_config(Path({str(REPO / 'blocker' / 'config' / 'default.yaml')!r}))\n"
        f"result = load_orders(Path({str(folder)!r}), config.order_rules)\n"
        "print('orders', len(result.orders), flush=True)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("ran ") for line in lines) == 1, lines
    serial = load_orders(folder, CONFIG.order_rules, workers=1)
    assert f"orders {len(serial.orders)}" in lines
