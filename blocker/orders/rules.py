"""What parsing an order needs to know beyond its file: the operators, the default time zone and
the working-day rule. A small frozen value, so that `orders/` depends on no configuration and a
parse can be cached by it (`blocker.config` builds it: `Config.order_rules`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OperatorRules:
    origin: str  # the operator's zone origin, absolute: a target at or under it is refused
    redirect: bool = False  # an information page is configured: `action: redirect` is allowed


@dataclass(frozen=True)
class OrderRules:
    operators: tuple[tuple[str, OperatorRules], ...]  # (id, rules), by id
    timezone: str = "Europe/Paris"  # of an order that names none
    extend_to_working_day: bool = False  # CPC art. 642 al. 2
    holidays_country: str = "FR"
    by_id: dict[str, OperatorRules] = field(init=False, compare=False, repr=False)
    # Origins without their trailing dot, sorted: no target may sit at or under one.
    reserved_origins: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", dict(self.operators))
        object.__setattr__(self, "reserved_origins",
                           tuple(sorted({op.origin.rstrip(".") for _, op in self.operators})))
