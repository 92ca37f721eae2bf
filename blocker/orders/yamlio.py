"""Strict, bounded YAML reading for files that people write by hand.

Order files are reviewed by lawyers, not parsers: a duplicated key, an anchor or a Python tag
must be refused, never silently resolved. Every mapping and sequence remembers the line each
entry came from so an error can point at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import yaml

from blocker.errors import BlockerError

try:  # libyaml is ~8x faster on large order sets; the pure loader is the fallback.
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

DEFAULT_MAX_BYTES = 8 * 1024 * 1024


class YamlError(BlockerError):
    """A file that cannot be read as one safe YAML mapping."""

    # A plain exception, not a frozen dataclass: Python itself assigns `__traceback__` to an
    # exception (contextlib does so on the way out of a `with` block, and so does unpickling).
    # `args` stays (message, line): unpickling calls the class with them.
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message, line)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return self.message if self.line is None else f"{self.message} (line {self.line})"


class LineDict(dict[Any, Any]):
    """A mapping that knows the line of each key (1-based)."""

    line: int = 0
    lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        return self.lines.get(key, self.line)


class LineList(list[Any]):
    """A sequence that knows the line of each item (1-based)."""

    line: int = 0
    lines: list[int]

    def line_of(self, index: int) -> int:
        return self.lines[index] if 0 <= index < len(self.lines) else self.line


_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


class _StrictLoader(_BaseLoader):
    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        # libyaml's composer asks this of every node. A plain scalar whose first character
        # starts no implicit resolver's pattern (most names: `site.example`), or a quoted one,
        # is a string, and a collection gets its default tag: what the base method returns
        # too, after its loop over no patterns (and with no path resolver registered).
        if _PLAIN_FAST and not self.yaml_path_resolvers:
            if kind is yaml.ScalarNode:
                if value and (not implicit[0] or value[0] not in _RESOLVED):
                    return _STR_TAG
            elif kind is yaml.MappingNode:
                return self.DEFAULT_MAPPING_TAG
            elif kind is yaml.SequenceNode:
                return self.DEFAULT_SEQUENCE_TAG
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]  # untyped in the stubs


_CONSTRUCT_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError)


def _child(loader: _StrictLoader, node: yaml.Node) -> Any:
    """Build one child node, refusing aliases and values that do not fit their tag.

    An alias re-uses a node already built: refusing it makes alias bombs impossible. Checked
    here, per child, rather than in `construct_object`, which runs for every scalar.
    """
    if node in loader.constructed_objects or node in loader.recursive_objects:
        raise YamlError("anchors and aliases are not allowed", node.start_mark.line + 1)
    try:
        return loader.construct_object(node, deep=True)
    except _CONSTRUCT_ERRORS:
        # PyYAML's constructors crash on explicit tags that do not fit the value
        # (`!!int abc`, `!!bool maybe`, `!!map [1]`): one clear error instead.
        raise YamlError(f"value does not fit its tag {node.tag!r}", node.start_mark.line + 1) from None


def _construct_map(loader: _StrictLoader, node: yaml.MappingNode) -> LineDict:
    if not isinstance(node, yaml.MappingNode):
        raise YamlError(f"value does not fit its tag {node.tag!r}", node.start_mark.line + 1)
    data = LineDict()
    data.line = node.start_mark.line + 1
    data.lines = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise YamlError("merge keys (<<) are not allowed", line)
        key = _child(loader, key_node)
        if not isinstance(key, str | int | float | bool) or key is None:
            raise YamlError("mapping keys must be plain scalars", line)
        if key in data:
            raise YamlError(f"duplicate key {key!r} (first at line {data.lines[key]})", line)
        data[key] = _child(loader, value_node)
        data.lines[key] = line
    return data


def _construct_seq(loader: _StrictLoader, node: yaml.SequenceNode) -> LineList:
    if not isinstance(node, yaml.SequenceNode):
        raise YamlError(f"value does not fit its tag {node.tag!r}", node.start_mark.line + 1)
    data = LineList(_child(loader, child) for child in node.value)
    data.line = node.start_mark.line + 1
    data.lines = [child.start_mark.line + 1 for child in node.value]
    return data


def _construct_raw(loader: _StrictLoader, node: yaml.ScalarNode) -> str:
    # Dates stay text: blocker parses them itself so that 2026-02-30 is a clear error, not a crash.
    return loader.construct_scalar(node)


def _refuse(loader: object, suffix: str, node: yaml.Node) -> Any:
    raise YamlError(f"tag {node.tag!r} is not allowed", node.start_mark.line + 1)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_StrictLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_raw)
_StrictLoader.add_constructor("tag:yaml.org,2002:set", lambda loader, node: _refuse(loader, "", node))
_StrictLoader.add_constructor("tag:yaml.org,2002:omap", lambda loader, node: _refuse(loader, "", node))
_StrictLoader.add_constructor("tag:yaml.org,2002:pairs", lambda loader, node: _refuse(loader, "", node))
_StrictLoader.add_constructor(None, lambda loader, node: _refuse(loader, "", node))


# First characters some implicit resolver (bool, int, float, null, timestamp, merge, ...) may
# claim; with a catch-all resolver (key None) registered, every scalar takes the base method.
_RESOLVED = frozenset(k for k in _StrictLoader.yaml_implicit_resolvers if k)
_PLAIN_FAST = None not in _StrictLoader.yaml_implicit_resolvers and _StrictLoader.DEFAULT_SCALAR_TAG == _STR_TAG
_FAST_DEPTH = 32  # order files nest three levels; deeper documents take the careful path


class _Deep(Exception):
    """A document nested deeper than the fast construction goes."""


_BOOL_TAG = "tag:yaml.org,2002:bool"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_BOOLS = _StrictLoader.bool_values
_Scalar = yaml.ScalarNode


def _fast(loader: _StrictLoader, node: yaml.Node, depth: int) -> Any:
    """`_child`, for a document without anchors (so without aliases): strings, booleans, and
    the mappings and sequences the constructors above build, without `construct_object`'s
    bookkeeping per node; anything else (and a value that does not fit its tag) goes through
    `_child` itself."""
    cls = type(node)
    if cls is _Scalar:
        tag = node.tag
        if tag == _STR_TAG:
            return node.value
        if tag == _BOOL_TAG:  # what SafeConstructor.construct_yaml_bool returns
            value = _BOOLS.get(node.value.lower())
            if value is not None:
                return value
        return _child(loader, node)
    if depth > _FAST_DEPTH:
        raise _Deep
    if cls is yaml.MappingNode and node.tag == _MAP_TAG:
        return _fast_map(loader, node, depth)
    if cls is yaml.SequenceNode and node.tag == _SEQ_TAG:
        children = node.value
        data = LineList([child.value if type(child) is _Scalar and child.tag == _STR_TAG
                         else _fast(loader, child, depth + 1) for child in children])
        data.line = node.start_mark.line + 1
        data.lines = [child.start_mark.line + 1 for child in children]
        return data
    return _child(loader, node)


def _fast_map(loader: _StrictLoader, node: yaml.Node, depth: int) -> LineDict:
    """`_construct_map`, children built by `_fast`: the same checks, in the same order."""
    data = LineDict()
    data.line = node.start_mark.line + 1
    lines: dict[Any, int] = {}
    data.lines = lines
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if type(key_node) is _Scalar and key_node.tag == _STR_TAG:
            key = key_node.value
        else:
            if key_node.tag == _MERGE_TAG:
                raise YamlError("merge keys (<<) are not allowed", line)
            key = _fast(loader, key_node, depth + 1)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise YamlError("mapping keys must be plain scalars", line)
        if key in data:
            raise YamlError(f"duplicate key {key!r} (first at line {lines[key]})", line)
        if type(value_node) is _Scalar and value_node.tag == _STR_TAG:
            data[key] = value_node.value
        else:
            data[key] = _fast(loader, value_node, depth + 1)
        lines[key] = line
    return data


class _ReferenceLoader(_StrictLoader):
    """The strict loader without its shortcut in `resolve`: PyYAML's own resolver."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        return yaml.resolver.BaseResolver.resolve(self, kind, value, implicit)  # type: ignore[no-untyped-call]  # untyped in the stubs


def loads_mapping(data: bytes, *, reference: bool = False) -> LineDict:
    """Parse bytes as exactly one YAML document whose top level is a mapping.

    Two ways to build it, one outcome (same values, lines and errors): the fast one (`_fast_map`
    and the `resolve` shortcut, a third of the time on a large order) and, with `reference`, the
    plain one (PyYAML's resolver and `construct_document` through `_construct_map`), which the
    fast one must equal: tests/orders/test_fast_paths.py compares them on generated documents."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlError("not UTF-8 text", line) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\x00" in text:
        raise YamlError("contains a NUL byte", text[: text.index("\x00")].count("\n") + 1)
    loader = (_ReferenceLoader if reference else _StrictLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise YamlError("empty file: expected a mapping of fields")
        if not isinstance(node, yaml.MappingNode):
            raise YamlError("expected a mapping of fields at the top level", node.start_mark.line + 1)
        if not reference and "&" not in text and node.tag == _MAP_TAG:
            # No `&`, no anchor, so no alias: nothing `_child` guards against can occur.
            try:
                return _fast_map(loader, node, 0)
            except _Deep:
                loader.constructed_objects, loader.recursive_objects = {}, {}
        return cast(LineDict, loader.construct_document(node))  # a map node is built by _construct_map
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise YamlError(f"invalid YAML: {problem}", mark.line + 1 if mark else None) from None
    except yaml.reader.ReaderError as exc:  # a character YAML forbids; str(exc) spans two lines
        at = text[: exc.position].count("\n") + 1 if isinstance(exc.position, int) else None
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        raise YamlError(f"invalid YAML: character U+{char:04X} is not allowed ({exc.reason})", at) from None
    except yaml.YAMLError as exc:
        raise YamlError("invalid YAML: " + " ".join(str(exc).split())) from None
    except RecursionError:
        raise YamlError("nesting too deep") from None
    finally:
        loader.dispose()


def read_bytes(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a file, refusing one larger than the cap before reading it whole."""
    with path.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise YamlError(f"file larger than {max_bytes} bytes")
    return data


def load_mapping(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> LineDict:
    return loads_mapping(read_bytes(path, max_bytes))
