"""The report as one HTML file a lawyer can open, archive and print, from jinja2 templates.

Self-contained on purpose: no script, no font, no image or style sheet fetched from anywhere, so
the file reads the same in ten years, offline, and a printout shows everything the screen does.
Each order gets a timeline: an inline SVG bar from its start to its lift with the tool's actions
and the probes' findings on it, and the same events listed with their exact instants.

The templates (blocker/legal/templates/) are rendered with autoescape on and a `finalize` that
passes every value through textsafe.printable first: text from an order file cannot add markup,
and a bidi override or a control character in a court's name is shown escaped, not obeyed. No
template marks outside text as safe; only macro output (already escaped) is Markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from blocker.legal.report import (
    BEFORE_RECORDS,
    ReportRow,
    fmt_duration,
    seconds_between,
    unicode_name,
)
from blocker.orders.legaltime import fmt_instant, zone
from blocker.record.verify import VerifyResult
from blocker.textsafe import printable

COLORS = {  # event kind -> colour (the list repeats the kind in words: printouts may be grey)
    "order": "#1f4e9c", "publish": "#6a3d9a", "verify": "#1b7f3b", "failure": "#c0392b", "lift": "#b9770e",
    "note": "#555555", "future": "#999999",
}
STATUS_COLORS = {"active": "#1b7f3b", "pending": "#1f4e9c", "expired": "#666666", "lifted": "#b9770e",
                 "removed": "#c0392b"}
LIFT_COLORS = {"verified": "#1b7f3b", "in-zone": "#c0392b", "unverified": "#b9770e"}
WORDS = {"before-records": BEFORE_RECORDS}  # internal state -> what the page says

# Every internal word the report shows, in plain language (issue 12: a lawyer must not guess).
GLOSSARY: tuple[tuple[str, str], ...] = (
    ("active / pending", "in force at the report instant / not yet in force"),
    ("expired", "ended at its lift instant, as the court ordered (lifted on schedule)"),
    ("lifted", "ended early: the court lifted it before its scheduled end (reason under \"Early lift\")"),
    ("removed", "taken out of the zones by a person with `apply --force` after its file was lost, "
                "without a court's lift: who, when and the plan checksum they reviewed are shown"),
    ("Block: pending", "the order has not come into force at the report instant"),
    ("Block: verified", "a probe pass saw every resolver of the operator answer the names as blocked"),
    ("Block: published", "the names are in the operator's zone, not yet seen blocked on every resolver"),
    ("Block: not-published", "in force, yet never in this operator's zone"),
    ("Block / lift: " + BEFORE_RECORDS, "it happened before blocker was deployed: blocker cannot "
                                         "measure it, and shows no figure rather than a wrong one"),
    ("Block / lift: unknown", "no state directory was found: blocker cannot say what it published"),
    ("Lift: not-due", "the lift instant has not come yet"),
    ("Lift: verified", "a probe pass saw every resolver answer the names as no longer blocked"),
    ("Lift: unverified", "removed from the zone; no probe pass has yet seen every resolver answer it lifted"),
    ("Lift: in-zone", "the order ended, yet its names are still published: over-blocking"),
    ("Lift: not-published", "never in this operator's zone: nothing to lift"),
    ("Time to block from the start", "from the order's start to the block seen on every resolver: the legal figure"),
    ("Time to block from receipt", "from when blocker first received the order file (or the start, if it "
                                   "came earlier) to the same instant: the part operations control"),
    ("zone version (serial)", "the number of the published zone file that carried the change"),
    ("orphaned", "the order's file disappeared while in force; its last good version stays in force"),
    ("invalid-file", "the order's file no longer reads as a valid order; its last good version stays in force"),
    ("url-escalated", "the court named a web address; DNS cannot block a path, so the whole host is blocked"),
    ("Timeline kinds", "order: the order's own instants; publish: names added to a zone; verify: a probe pass "
                       "confirmed the block or the lift; failure: a probe or a file showed a problem; lift: names "
                       "taken out of a zone, or the order's end; note: anything else on record; future: an instant "
                       "after the report instant"),
    ("zone already on disk taken as published", "blocker found the zone it would write already in place "
                                                 "and recorded it as published (zone-adopted)"),
)


def _finalize(value: object) -> object:
    """Every `{{ value }}`: macro output (Markup) as is; anything else made printable, then
    autoescaped by jinja2."""
    if isinstance(value, Markup):
        return value
    return "" if value is None else printable(value, limit=None)


@cache
def environment() -> Environment:
    env = Environment(loader=PackageLoader("blocker.legal", "templates"), autoescape=True,
                      undefined=StrictUndefined, finalize=_finalize, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.globals.update(
        instant=fmt_instant, duration=fmt_duration, unicode_name=unicode_name, timeline=timeline_view,
        status_color=lambda s: STATUS_COLORS.get(s, "#444"), lift_color=lambda s: LIFT_COLORS.get(s, "#777"),
        kind_color=lambda k: COLORS.get(k, "#555"), words=lambda w: WORDS.get(w, w), glossary=GLOSSARY,
        colors=tuple(COLORS.items()), targets_summary=_targets_summary, verified_summary=_verified_summary,
        lift_summary=lambda r: ", ".join(sorted({WORDS.get(x.lift, x.lift) for x in r.operators})),
    )
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def _targets_summary(r: ReportRow) -> str:
    n = sum(1 for t in r.order.targets if t.kind == "url-escalated")
    return f"{len(r.order.targets)}" + (f" ({n} url-escalated)" if n else "")


def _verified_summary(r: ReportRow) -> str:
    if r.operators and all(x.block == "before-records" for x in r.operators):
        return BEFORE_RECORDS
    return f"{sum(1 for x in r.operators if x.block == 'verified')}/{len(r.operators)}"


def timeline_view(row: ReportRow, width: int = 1000, height: int = 108) -> dict[str, Any]:
    """Positions of the order's window, T and each event on the timeline bar (numbers only:
    the template draws them)."""
    events = list(row.timeline)
    o = row.order
    lo = min([o.start, *(e.at for e in events)], key=lambda t: t.timestamp())
    hi = max([o.end, *(e.at for e in events)], key=lambda t: t.timestamp())
    span = max(seconds_between(hi, lo), 1.0)
    pad = 40

    def x(at: datetime) -> float:
        return pad + (width - 2 * pad) * seconds_between(at, lo) / span

    def f(v: float) -> str:
        return f"{v:.1f}"

    marks = [{"x": f(x(e.at)), "lane": 30 - (i % 3) * 9, "color": COLORS.get(e.kind, "#555"),
              "title": f"{fmt_instant(e.at, o.tz)} {e.text}"} for i, e in enumerate(events)]
    view: dict[str, Any] = {"id": o.id, "width": width, "height": height, "pad": pad, "bar_x": f(x(o.start)),
                            "bar_w": f(max(x(o.end) - x(o.start), 2)), "marks": marks, "now_x": None}
    if lo <= row.at <= hi:
        view["now_x"] = f(x(row.at))
    else:
        right = row.at > hi
        view.update(edge_x=width - 4 if right else 4, edge_anchor="end" if right else "start",
                    edge_text=f"report instant {fmt_instant(row.at, o.tz)[:10]} {'→' if right else '←'}")
    close = x(o.end) - x(o.start) < 170  # two labels would overlap: the lift's goes one line down
    labels = []
    for at, label, y in ((o.start, "start", 88), (o.end, "lift", 102 if close else 88)):
        anchor = "start" if x(at) < 120 else "end" if x(at) > width - 120 else "middle"
        labels.append({"x": f(x(at)), "y": y, "anchor": anchor, "text": f"{label} {fmt_instant(at, o.tz)[:10]}"})
    view["labels"] = labels
    return view


def render_report(rows: Sequence[ReportRow], at: datetime, timezone: str, *, audit: VerifyResult | None,
                  source: str, generated: datetime, records_start: datetime | None = None) -> str:
    """The whole report: header, audit status, one summary table, a legend, one section per order."""
    tz = zone(timezone)
    return render("report.html.j2", title=f"blocker legal report as at {fmt_instant(at, tz)}", rows=rows, at=at,
                  tz=tz, timezone=timezone, audit=audit, source=source, generated=generated,
                  records_start=records_start)
