"""The words blocker's data uses, in one place: actions, order statuses, probe verdicts.

They are `StrEnum`s, so a member *is* its string: it compares equal to, hashes like and serialises
as the word that is in the order files, the JSON outputs, the audit records and the metric labels
(those are contracts; the enums add a closed set and a typo becomes an error, not a new word).
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """What a blocked name answers (the order file's `action`)."""

    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    DROP = "drop"
    REDIRECT = "redirect"

    @property
    def strength(self) -> int:
        """When orders in force disagree on one name, the strongest action wins."""
        return _STRENGTH[self]


_STRENGTH = {Action.NXDOMAIN: 4, Action.NODATA: 3, Action.DROP: 2, Action.REDIRECT: 1}
ACTIONS: tuple[str, ...] = tuple(a.value for a in Action)  # in file order, for messages ("expected one of ...")
STRENGTH: dict[str, int] = {str(a): a.strength for a in Action}


class Status(StrEnum):
    """Where an order stands at an instant."""

    PENDING = "pending"
    ACTIVE = "active"
    EXPIRED = "expired"   # ended on its scheduled date
    LIFTED = "lifted"     # ended early by a lift

    @property
    def ended(self) -> bool:
        return self in (Status.EXPIRED, Status.LIFTED)

    @property
    def in_force_or_due(self) -> bool:
        return self in (Status.PENDING, Status.ACTIVE)


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)


class Verdict(StrEnum):
    """What one probe check found (see `blocker.probe`)."""

    BLOCKED = "blocked"
    NOT_BLOCKED = "not-blocked"
    OVERBLOCKED = "overblocked"
    RESOLVES = "resolves"
    ERROR = "error"
    UNVERIFIED = "unverified"

    @property
    def ok(self) -> bool:
        return self in (Verdict.BLOCKED, Verdict.RESOLVES)


VERDICTS: tuple[str, ...] = tuple(v.value for v in Verdict)
