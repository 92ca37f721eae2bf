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
from publicsuffixlist import PSLFILE, encode_idn

from blocker.errors import BlockerError

MAX_NAME = 253
MAX_LABEL = 63
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_ASCII_NAME = re.compile(r"[a-z0-9.-]+\Z")
# The common case in one match: LDH labels, a last label that starts with a letter (so not an
# IP address), at most 253 octets. Anything else takes the careful path.
_FAST_NAME = re.compile(
    r"(?=.{1,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?\Z"
)


# Top-level labels reserved for documentation and tests (RFC 2606 / RFC 6761), accepted beside
# the Public Suffix List's. `invalid` and `localhost` are reserved too, but can never be a
# court's target: they stay refused, as every other label the list does not know.
RESERVED_TLDS = frozenset({"example", "test"})
# RPZ gives meaning to labels that begin with `rpz-`: next to the zone origin they are triggers on
# addresses and name servers (`rpz-ip`, `rpz-nsip`, `rpz-nsdname`, `rpz-client-ip`: BIND, Unbound
# and PowerDNS read the label just left of the origin), as CNAME targets they are actions
# (`rpz-passthru`, `rpz-drop`, `rpz-tcp-only`), and Unbound treats any other `rpz-` top label as
# invalid. A target is never allowed such a label, in any position.
RPZ_LABEL_PREFIX = "rpz-"
# The labels UTS #46 reads as a full stop besides `.`: ideographic, fullwidth and halfwidth.
_DOTS = {0x3002: ".", 0xFF0E: ".", 0xFF61: "."}
# What blocker itself writes into every zone (rpz.canary_owner): no target may sit there.
CANARY_DOMAIN = "canary.blocker"


class InvalidName(BlockerError, ValueError):
    """A name that must not reach a zone; the message says why in words a lawyer can act on."""


_TLDS: frozenset[str] = frozenset()  # known_tlds(), once built: no call per name on the fast path


def known_tlds() -> frozenset[str]:
    """Top-level labels of the Public Suffix List snapshot, plus `example` and `test`: a target
    under any other (`.cmo`, `.invalid`, `.localhost`, a private TLD) is a typo or a trick."""
    global _TLDS
    if not _TLDS:
        rules = _psl_sets()[0]
        _TLDS = frozenset(rule.rsplit(".", 1)[-1].lstrip("!") for rule in rules) | RESERVED_TLDS
    return _TLDS


@lru_cache(maxsize=1)
def psl_rules() -> frozenset[str]:
    """The rules of the Public Suffix List snapshot inside the publicsuffixlist wheel (`PSLFILE`:
    reproducible, never fetched at run time), read as publicsuffixlist reads them: per the list's
    format (publicsuffix.org/list), the text of a line up to its first space, lower-case, `//`
    lines being comments; each rule also in its A-label form (`encode_idn`), since names are
    matched as A-labels. `tests/orders/test_fast_paths.py` checks the lookups below against
    `PublicSuffixList().is_public` on names drawn near every rule."""
    rules: set[str] = set()
    with open(PSLFILE, "rb") as source:
        for line in source:
            rule = line.decode("utf-8").lower().split(" ")[0].rstrip()
            if not rule or rule.startswith("//"):
                continue
            rules.add(rule)
            encoded = encode_idn(rule.lstrip("!"))
            rules.add("!" + encoded if rule[0] == "!" else encoded)
    return frozenset(rules)


@lru_cache(maxsize=1)
def _psl_sets() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """The rules as set lookups: (rules, names a rule names at their own depth, names a rule
    names at their parent's depth)."""
    rules = psl_rules()
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
    # What `PublicSuffixList.is_public` does to a str before matching.
    if name.endswith("."):
        name = name[:-1]
    name = name.lower()
    if "" in name.split("."):
        return False
    return _is_public_labels(name)


def _uts46_u_label(label: str) -> str | None:
    """The U-label of an A-label that UTS #46 (what browsers run) accepts although IDNA 2008 does
    not (emoji, symbols: `xn--ls8h` is U+1F4A9), or None. Accepted: valid Punycode that decodes
    to non-ASCII text in NFC which UTS #46 leaves unchanged (every code point valid or deviation,
    none mapped, ignored or disallowed) and which encodes back to the same A-label."""
    try:
        u_label = label[4:].encode("ascii").decode("punycode")
    except (UnicodeError, ValueError, IndexError):
        return None
    if not u_label or u_label.isascii() or "." in u_label or unicodedata.normalize("NFC", u_label) != u_label:
        return None
    try:
        if idna.uts46_remap(u_label, std3_rules=True, transitional=False) != u_label:
            return None
    except idna.IDNAError:
        return None
    if "xn--" + u_label.encode("punycode").decode("ascii") != label:
        return None
    return u_label


def _check_ascii_labels(name: str, raw: str) -> None:
    labels = name.split(".")
    for label in labels:
        if not label:
            raise InvalidName(f"{raw!r} has an empty label")
        if len(label) > MAX_LABEL:
            raise InvalidName(f"{raw!r} has a label longer than {MAX_LABEL} octets")
        if not _LDH_LABEL.match(label):
            raise InvalidName(f"{raw!r} is not a valid hostname (label {label!r})")
        if label.startswith(RPZ_LABEL_PREFIX):
            raise InvalidName(f"{raw!r} has the label {label!r}: labels beginning with `rpz-` are RPZ policy "
                             "triggers and actions (on client or answer addresses, name servers), which a "
                             "resolver would apply instead of blocking a domain")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except idna.IDNAError as exc:
                if _uts46_u_label(label) is None:
                    raise InvalidName(f"{raw!r} has an invalid IDN label {label!r}: {exc}") from None


def _to_ascii(name: str, raw: str) -> str:
    if _ASCII_NAME.match(name):
        return name
    if any(ch.isspace() or ord(ch) < 0x20 or ch in "$;_*@\\/\"'()" for ch in name):
        raise InvalidName(f"{raw!r} is not a valid hostname")
    if any(unicodedata.category(ch) == "Cf" for ch in name):
        # IDNA mapping would silently drop a zero-width space or soft hyphen: the court's text and
        # the blocked name must not differ by an invisible character.
        raise InvalidName(f"{raw!r} contains an invisible formatting character")
    try:
        # UTS #46 does the case folding, as browsers do: `str.lower()` first would apply Python's
        # Final_Sigma rule (`ΚΑΦΕΣ` -> `καφες`, where a browser goes to `καφεσ`).
        return idna.encode(name, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError as exc:
        hint = _uts46_hint(name)
        raise InvalidName(f"{raw!r} is not a valid internationalised name: {exc}{hint}") from None
    except UnicodeError as exc:
        raise InvalidName(f"{raw!r} is not a valid hostname: {exc}") from None


def _uts46_hint(name: str) -> str:
    """For a name IDNA 2008 refuses but browsers resolve (an emoji domain): its A-label, which a
    target may give (accepted with a warning)."""
    try:
        mapped = idna.uts46_remap(name, std3_rules=True, transitional=False)
        labels = [label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
                  for label in mapped.split(".")]
    except (idna.IDNAError, UnicodeError):
        return ""
    a_name = ".".join(labels)
    if not a_name.isascii() or not all(
            label.isascii() and (not label.startswith("xn--") or _uts46_u_label(label)) for label in labels):
        return ""
    return f" (browsers resolve it as {a_name!r}: give that A-label to block it)"


def normalize_name(raw: object) -> str:
    """Lower-case A-label form without the trailing dot, or InvalidName.

    The form browsers resolve (UTS #46, non-transitional): case folding is UTS #46's, not
    `str.lower()`'s, and the ideographic, fullwidth and halfwidth full stops separate labels.
    """
    if not isinstance(raw, str):
        raise InvalidName(f"expected a domain name as text, got {type(raw).__name__}")
    name = raw.strip()
    if name != raw:
        raise InvalidName(f"{raw!r} has surrounding whitespace")
    # ASCII: `lower()` is what UTS #46 does to it, and keeps the fast path fast. Otherwise UTS #46
    # folds the case later; the three other full stops become dots now (a trailing `。` too).
    name = name.lower() if name.isascii() else name.translate(_DOTS)
    if name.endswith("."):
        name = name[:-1]
    if _FAST_NAME.match(name) and "xn--" not in name and RPZ_LABEL_PREFIX not in name:
        if _is_public_labels(name):
            raise InvalidName(f"{raw!r} is a public suffix: blocking it would block every domain under it")
        if name[name.rfind(".") + 1:] in (_TLDS or known_tlds()):
            return name
    if not name:
        raise InvalidName("empty name")
    if "*" in name:
        raise InvalidName(f"{raw!r}: wildcards are not allowed (use `subdomains: true`)")
    if _is_ip(name):
        raise InvalidName(f"{raw!r} is an IP address, not a domain name")
    name = _to_ascii(name, raw)
    if _is_ip(name) or name.rsplit(".", 1)[-1].isdigit():
        # After IDNA mapping too (fullwidth digits): `１.２.３.４`, and short forms such as
        # `127.1` or `10.0.1` that resolvers treat as addresses; no top-level label is numeric.
        raise InvalidName(f"{raw!r} is an IP address (or has a numeric top-level label), not a domain name")
    if len(name) > MAX_NAME:
        raise InvalidName(f"{raw!r} is longer than {MAX_NAME} octets")
    _check_ascii_labels(name, raw)
    if "." not in name or is_public_suffix(name):
        raise InvalidName(f"{raw!r} is a public suffix: blocking it would block every domain under it")
    tld = name[name.rfind(".") + 1:]
    if tld not in known_tlds():
        raise InvalidName(f"{raw!r} is under {tld!r}, which is not a top-level domain (neither in the Public "
                         "Suffix List nor `example`/`test`): a typo, or a name no resolver can reach")
    return name


def reserved_for(name: str, origins: tuple[str, ...]) -> str | None:
    """Why a normalised `name` collides with what blocker writes itself, or None: at or under a
    zone origin (`origins` without the trailing dot) or the serial canary's domain. Such an
    owner conflicts with the canary record, or reads as the zone's own data, and
    named-checkzone then refuses every zone of the operator: no later lift would be published."""
    for origin in origins:
        if name == origin or name.endswith("." + origin):
            return f"{name!r} is at or under the RPZ zone origin {origin + '.'!r}, which blocker writes itself"
    if name == CANARY_DOMAIN or name.endswith("." + CANARY_DOMAIN):
        return f"{name!r} is at or under {CANARY_DOMAIN!r}, where blocker writes its serial canary records"
    return None


def _scripts(label: str) -> set[str]:
    """The scripts of the letters of one U-label, from their Unicode names (`LATIN SMALL LETTER
    A`, `CYRILLIC SMALL LETTER A`): combining marks, digits, modifiers and the hyphen belong to
    none. A heuristic for a warning, not a refusal."""
    out = set()
    for ch in label:
        if unicodedata.category(ch) in ("Lu", "Ll", "Lt", "Lo"):
            word = unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]
            out.add("HAN" if word == "CJK" else word)
    return out


# UTS #39 "highly restrictive": one script, or Latin with the scripts that write Japanese,
# Chinese or Korean together.
_CJK_SETS = ({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}, {"LATIN", "HAN", "BOPOMOFO"}, {"LATIN", "HAN", "HANGUL"})


def name_warnings(name: str) -> list[str]:
    """What a person should check in an accepted name, in words: an A-label outside IDNA 2008
    (accepted as written, since browsers resolve it), letters of mixed scripts in one label (a
    Cyrillic `а` in `pаypal`: a look-alike of another name?). Empty for an ASCII-only name."""
    if "xn--" not in name:
        return []
    out = []
    for label in name.split("."):
        if not label.startswith("xn--"):
            continue
        try:
            u_label = idna.decode(label)
        except idna.IDNAError:
            u_label = _uts46_u_label(label) or label
            out.append(f"{label!r} ({u_label}) is outside IDNA 2008; accepted as the A-label written, which "
                       "browsers resolve (UTS #46): check it against the court's text")
        scripts = _scripts(u_label)
        if len(scripts) > 1 and not any(scripts <= allowed for allowed in _CJK_SETS):
            out.append(f"{label!r} ({u_label}) mixes {' and '.join(s.title() for s in sorted(scripts))} letters: "
                       "check it against the court's text (a look-alike of another name?)")
    return out


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
        raise InvalidName(f"expected a URL as text, got {type(raw).__name__}")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in raw):
        raise InvalidName(f"{raw!r} contains whitespace or control characters")
    try:
        parts = urlsplit(raw)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise InvalidName(f"{raw!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidName(f"{raw!r} is not an http(s) URL")
    if not host:
        raise InvalidName(f"{raw!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidName(f"{raw!r} carries credentials; give the URL without them")
    if _is_ip(host):
        raise InvalidName(f"{raw!r} names an IP address; DNS blocking needs a host name")
    return normalize_name(host)

