"""Domain names as they may enter a zone: normalised, validated, never a public suffix.

Every name in an RPZ file passes through `normalize_name` first; the zone writer trusts it.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from functools import lru_cache
from urllib.parse import urlsplit

import idna
from publicsuffixlist import PublicSuffixList

MAX_NAME = 253
MAX_LABEL = 63
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_ASCII_NAME = re.compile(r"[a-z0-9.-]+\Z")
# The common case in one match: LDH labels, a last label that starts with a letter (so not an
# IP address), at most 253 octets. Anything else takes the careful path.
_FAST_NAME = re.compile(
    r"(?=.{1,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?\Z"
)


class NameError_(ValueError):
    """A name that must not reach a zone; the message says why in words a lawyer can act on."""


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    # The snapshot inside the publicsuffixlist wheel: reproducible, never fetched at run time.
    return PublicSuffixList()


@lru_cache(maxsize=1)
def _psl_sets() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """The rules of that snapshot as set lookups: (rules, names a rule names at their own
    depth, names a rule names at their parent's depth); built once from the same parsed data."""
    rules: frozenset[str] = _psl()._publicsuffix  # the parsed rules, exactly as it matches them
    own = set(rules)
    parent = set()
    for rule in rules:
        if rule.startswith("!"):
            own.add(rule[1:])
            parent.add(rule[1:])
        elif rule.startswith("*."):
            own.add(rule[2:])
            parent.add(rule[2:])
    return rules, frozenset(own), frozenset(parent)


def _is_public_labels(name: str) -> bool:
    """`PublicSuffixList().is_public` for a lower-case name without empty labels or a trailing
    dot, by set lookups. That method walks the suffixes longest first; the first rule found
    decides: an exception `!s` gives depth(s) - 1, a wildcard `*.s` gives depth(s) + 1 (or
    depth(s) when s is the whole name), an exact rule depth(s); no rule, depth 1. The name is
    public when that count is its own depth, so only the rules on the name itself and on its
    parent can make it so, and any rule on either is found before the shorter suffixes."""
    parent = name.partition(".")[2]
    if not parent:
        return True  # a single label: an unknown TLD counts as public
    rules, own, parents = _psl_sets()
    if name in own:
        if "!" + name in rules:
            return False
        if "*." + name in rules or name in rules:
            return True
    if parent in parents:
        if "!" + parent in rules:
            return False
        if "*." + parent in rules:
            return True
    return False


def is_public_suffix(name: str) -> bool:
    """True for `gg`, `co.uk`, `github.io`: blocking one would block a whole registry."""
    if not isinstance(name, str):
        return bool(_psl().is_public(name))
    # What `PublicSuffixList.is_public` does to a str before matching.
    if name.endswith("."):
        name = name[:-1]
    name = name.lower()
    if "" in name.split("."):
        return False
    return _is_public_labels(name)


def _check_ascii_labels(name: str, raw: str) -> None:
    labels = name.split(".")
    for label in labels:
        if not label:
            raise NameError_(f"{raw!r} has an empty label")
        if len(label) > MAX_LABEL:
            raise NameError_(f"{raw!r} has a label longer than {MAX_LABEL} octets")
        if not _LDH_LABEL.match(label):
            raise NameError_(f"{raw!r} is not a valid hostname (label {label!r})")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except idna.IDNAError as exc:
                raise NameError_(f"{raw!r} has an invalid IDN label {label!r}: {exc}") from None


def _to_ascii(name: str, raw: str) -> str:
    if _ASCII_NAME.match(name):
        return name
    if any(ch.isspace() or ord(ch) < 0x20 or ch in "$;_*@\\/\"'()" for ch in name):
        raise NameError_(f"{raw!r} is not a valid hostname")
    if any(unicodedata.category(ch) == "Cf" for ch in name):
        # IDNA mapping would silently drop a zero-width space or soft hyphen: the court's text and
        # the blocked name must not differ by an invisible character.
        raise NameError_(f"{raw!r} contains an invisible formatting character")
    try:
        return idna.encode(name, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError as exc:
        raise NameError_(f"{raw!r} is not a valid internationalised name: {exc}") from None
    except UnicodeError as exc:
        raise NameError_(f"{raw!r} is not a valid hostname: {exc}") from None


def normalize_name(raw: object) -> str:
    """Lower-case A-label form without the trailing dot, or NameError_."""
    if not isinstance(raw, str):
        raise NameError_(f"expected a domain name as text, got {type(raw).__name__}")
    name = raw.strip()
    if name != raw:
        raise NameError_(f"{raw!r} has surrounding whitespace")
    name = name.lower()
    if name.endswith("."):
        name = name[:-1]
    if _FAST_NAME.match(name) and "xn--" not in name:
        if _is_public_labels(name):
            raise NameError_(f"{raw!r} is a public suffix: blocking it would block every domain under it")
        return name
    if not name:
        raise NameError_("empty name")
    if "*" in name:
        raise NameError_(f"{raw!r}: wildcards are not allowed (use `subdomains: true`)")
    if _is_ip(name):
        raise NameError_(f"{raw!r} is an IP address, not a domain name")
    name = _to_ascii(name, raw)
    if _is_ip(name) or name.rsplit(".", 1)[-1].isdigit():
        # After IDNA mapping too (fullwidth digits): `１.２.３.４`, and short forms such as
        # `127.1` or `10.0.1` that resolvers treat as addresses; no top-level label is numeric.
        raise NameError_(f"{raw!r} is an IP address (or has a numeric top-level label), not a domain name")
    if len(name) > MAX_NAME:
        raise NameError_(f"{raw!r} is longer than {MAX_NAME} octets")
    _check_ascii_labels(name, raw)
    if "." not in name or is_public_suffix(name):
        raise NameError_(f"{raw!r} is a public suffix: blocking it would block every domain under it")
    return name


def _is_ip(text: str) -> bool:
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def host_from_url(raw: object) -> str:
    """The host part of an http(s) URL, normalised: DNS cannot block a path, only the host."""
    if not isinstance(raw, str):
        raise NameError_(f"expected a URL as text, got {type(raw).__name__}")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in raw):
        raise NameError_(f"{raw!r} contains whitespace or control characters")
    try:
        parts = urlsplit(raw)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise NameError_(f"{raw!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise NameError_(f"{raw!r} is not an http(s) URL")
    if not host:
        raise NameError_(f"{raw!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise NameError_(f"{raw!r} carries credentials; give the URL without them")
    if _is_ip(host):
        raise NameError_(f"{raw!r} names an IP address; DNS blocking needs a host name")
    return normalize_name(host)


def canonical_key(owner: str) -> tuple[str, ...]:
    """RFC 4034 §6.1 canonical order for lower-case ASCII names: compare labels from the right."""
    return tuple(reversed(owner.split(".")))
