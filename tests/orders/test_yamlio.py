"""Strict, bounded YAML: what a hand-written order file may and may not contain."""

from __future__ import annotations

import contextlib
import pickle
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocker.orders.yamlio import LineDict, LineList, YamlError, load_mapping, loads_mapping, read_bytes
from tests.support.properties import examples


def error_of(data: bytes) -> YamlError:
    with pytest.raises(YamlError) as info:
        loads_mapping(data)
    return info.value


def test_a_plain_mapping_loads_with_line_numbers():
    doc = loads_mapping(b"# comment\nid: a\ntargets:\n  - one.example\n  - {domain: two.example}\nn: 3\n")
    assert doc == {"id": "a", "targets": ["one.example", {"domain": "two.example"}], "n": 3}
    assert isinstance(doc, LineDict)
    assert doc.line == 2
    assert doc.line_of("id") == 2
    assert doc.line_of("targets") == 3
    assert doc.line_of("n") == 6
    assert doc.line_of("missing") == 2  # falls back to the mapping's own line
    targets = doc["targets"]
    assert isinstance(targets, LineList)
    assert targets.line_of(0) == 4
    assert targets.line_of(1) == 5
    assert targets.line_of(7) == targets.line
    assert isinstance(targets[1], LineDict)
    assert targets[1].line_of("domain") == 5


def test_dates_stay_text_so_blocker_parses_them():
    doc = loads_mapping(b"a: 2026-01-01\nb: 2026-01-01T10:00:00+01:00\nc: 2026-02-30\n")
    assert doc == {"a": "2026-01-01", "b": "2026-01-01T10:00:00+01:00", "c": "2026-02-30"}


def test_duplicate_keys_are_an_error_with_both_lines():
    err = error_of(b"id: a\ncourt: x\nid: b\n")
    assert "duplicate key 'id'" in err.message
    assert "line 1" in err.message
    assert err.line == 3
    assert str(err).endswith("(line 3)")


def test_duplicate_keys_in_nested_mappings_are_an_error():
    err = error_of(b"lifted:\n  at: 2026-01-01\n  reason: x\n  at: 2026-02-01\n")
    assert "duplicate key 'at'" in err.message
    assert err.line == 4
    err = error_of(b"targets:\n  - {domain: a.example, domain: b.example}\n")
    assert "duplicate key 'domain'" in err.message
    assert err.line == 2


def test_keys_that_resolve_to_the_same_value_are_duplicates():
    assert "duplicate key" in error_of(b"true: a\nyes: b\n").message
    assert "duplicate key" in error_of(b"1: a\n0x1: b\n").message


@pytest.mark.parametrize(
    "data",
    [
        b"a: &x hello\nb: *x\n",
        b"a: &x [1, 2]\nb: *x\n",
        b"base: &b {x: 1}\nc:\n  <<: *b\n",
        b"a: &a [*a]\n",  # recursive
    ],
)
def test_anchors_and_aliases_are_refused(data):
    err = error_of(data)
    assert "alias" in err.message or "merge" in err.message
    assert err.line is not None


def test_billion_laughs_is_refused_quickly():
    lines = [b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev, name = chr(96 + i).encode(), chr(97 + i).encode()
        lines.append(name + b": &" + name + b" [" + b",".join([b"*" + prev] * 9) + b"]")
    bomb = b"\n".join(lines) + b"\n"
    started = time.perf_counter()
    err = error_of(bomb)
    assert time.perf_counter() - started < 1.0
    assert "alias" in err.message
    assert err.line in (1, 2)  # the anchored node (line 1) or its first alias (line 2)


def test_deep_nesting_is_refused_quickly():
    started = time.perf_counter()
    error_of(b"a: " + b"[" * 20000 + b"]" * 20000 + b"\n")
    error_of(b"a: " + b"{b: " * 5000 + b"1" + b"}" * 5000 + b"\n")
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    "data",
    [
        b"a: !!python/object/apply:os.system ['echo pwned']\n",
        b"a: !!python/name:os.system\n",
        b"a: !!python/object:collections.OrderedDict {}\n",
        b"a: !!python/object/new:str [x]\n",
        b"a: !foo bar\n",
        b"a: !!set {x, y}\n",
        b"a: !!omap [{x: 1}]\n",
        b"a: !!pairs [{x: 1}]\n",
    ],
)
def test_tags_that_build_objects_are_refused(data):
    err = error_of(data)
    assert "tag" in err.message
    assert err.line == 1


@pytest.mark.parametrize(
    "data",
    [
        b"a: !!int abc\n",
        b"a: !!int 0x\n",
        b"a: !!int ''\n",
        b"a: !!float abc\n",
        b"a: !!bool maybe\n",
        b"a: !!map [1]\n",
        b"a: !!seq {a: 1}\n",
        b"a: !!str [1]\n",
    ],
)
def test_standard_tags_with_values_that_do_not_fit_are_errors_not_crashes(data):
    err = error_of(data)
    assert err.line == 1


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ("id: café\n".encode("latin-1"), 1),
        (b"id: a\ncourt: \xff\n", 2),
        ("id: a\n".encode("utf-16"), 1),
        (b"a: \xed\xa0\x80\n", 1),  # an encoded surrogate is not UTF-8
    ],
)
def test_non_utf8_is_refused_with_its_line(data, line):
    err = error_of(data)
    assert "UTF-8" in err.message
    assert err.line == line


def test_utf8_bom_is_accepted():
    assert loads_mapping(b"\xef\xbb\xbfid: caf\xc3\xa9\n") == {"id": "café"}


@pytest.mark.parametrize(("data", "line"), [(b"id: a\n\x00\n", 2), (b"a: 1\nb: \x1b[31m\n", 2), (b"a: \x7f\n", 1)])
def test_control_characters_are_refused_on_one_line(data, line):
    err = error_of(data)
    assert err.line == line
    assert "\n" not in str(err)


@pytest.mark.parametrize("data", [b"- a\n- b\n", b"just text\n", b"42\n", b"[a: 1]\n", b"null\n", b"~\n"])
def test_non_mapping_top_level_is_refused(data):
    assert "mapping" in error_of(data).message


@pytest.mark.parametrize("data", [b"", b"\n\n", b"# only a comment\n", b"\xef\xbb\xbf"])
def test_empty_file_is_refused(data):
    assert "empty" in error_of(data).message


def test_an_empty_document_is_not_a_mapping():
    assert "expected a mapping" in error_of(b"---\n").message


def test_multiple_documents_are_refused():
    err = error_of(b"id: a\n---\nid: b\n")
    assert "document" in err.message
    assert err.line == 2


def test_one_document_with_markers_is_fine():
    assert loads_mapping(b"---\nid: a\n...\n") == {"id": "a"}


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"a: 1\nb: [1, 2\nc: 3\n", 3),
        (b"a: 1\nb:\n\tc: 1\n", 3),
        (b"a: 1\nb: 'unterminated\n", 3),
        (b"a: 1\n  b: 2\n", 2),
    ],
)
def test_syntax_errors_report_a_line_on_one_line(data, line):
    err = error_of(data)
    assert err.message.startswith("invalid YAML")
    assert err.line is not None and abs(err.line - line) <= 1
    assert "\n" not in str(err)


@pytest.mark.parametrize("data", [b"~: 1\n", b"? [a]\n: 1\n", b"? {a: 1}\n: 1\n", b"? !!binary aGk=\n: 1\n"])
def test_mapping_keys_must_be_plain_scalars(data):
    assert "keys" in error_of(data).message


def test_size_cap(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"a: " + b"x" * 100 + b"\n")
    assert read_bytes(path, max_bytes=104) == path.read_bytes()
    with pytest.raises(YamlError, match="larger than 103 bytes"):
        read_bytes(path, max_bytes=103)
    with pytest.raises(YamlError, match="larger than"):
        load_mapping(path, max_bytes=50)
    assert load_mapping(path) == {"a": "x" * 100}


def test_error_survives_a_with_block_and_pickling():
    # Python assigns __traceback__ when an exception leaves a @contextmanager block.
    @contextlib.contextmanager
    def guarded():
        yield

    with pytest.raises(YamlError) as info, guarded():
        loads_mapping(b"a: 1\na: 2\n")
    assert info.value.line == 2
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.message, copy.line, str(copy)) == (info.value.message, 2, str(info.value))


@settings(max_examples=examples(200))
@given(st.binary(max_size=200))
def test_any_bytes_give_a_mapping_or_a_yaml_error(data):
    try:
        doc = loads_mapping(data)
    except YamlError as err:
        assert "\n" not in str(err)
        return
    assert isinstance(doc, LineDict)


yamlish = st.lists(
    st.sampled_from([
        "a", "b", ":", " ", "\n", "  ", "-", "[", "]", "{", "}", ",", "&x", "*x", "!!int", "!!str", "!!map",
        "!!seq", "!!binary", "!!float", "!!bool", "!!python/object:os.system", "!t", "<<", "?", "'", '"', "#",
        "1", "0x", "2026-02-30", "yes", "~", "---", "...", "|", ">", "\t", "é", "%YAML 1.1", "!!null", "!!timestamp",
    ]),
    max_size=40,
).map(lambda parts: "".join(parts).encode())


@settings(max_examples=examples(300))
@given(yamlish)
def test_yaml_looking_text_gives_a_mapping_or_a_yaml_error(data):
    try:
        doc = loads_mapping(data)
    except YamlError as err:
        assert "\n" not in str(err)
        return
    assert isinstance(doc, LineDict)
