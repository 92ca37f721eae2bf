"""The report as one HTML file a lawyer can open, archive and print.

Self-contained on purpose: no script, no font, no image or style sheet fetched from anywhere, so
the file reads the same in ten years, offline, and a printout shows everything the screen does.
Each order gets a timeline: an inline SVG bar from its start to its lift with the tool's actions
and the probes' findings on it, and the same events listed with their exact instants.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape

from blocker.legal.report import OperatorRow, ReportRow, TimelineEvent, fmt_duration, seconds_between
from blocker.orders.legaltime import fmt_instant, zone
from blocker.record.audit import VerifyResult
from blocker.textsafe import printable

COLORS = {  # event kind -> colour (the list repeats the kind in words: printouts may be grey)
    "order": "#1f4e9c", "publish": "#6a3d9a", "verify": "#1b7f3b", "failure": "#c0392b", "lift": "#b9770e",
    "note": "#555555", "future": "#999999",
}
STATUS_COLORS = {"active": "#1b7f3b", "pending": "#1f4e9c", "expired": "#666666", "lifted": "#b9770e"}

CSS = """
* { box-sizing: border-box; }
body { font: 14px/1.45 "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: #111; margin: 24px;
       max-width: 1100px; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 8px; border-bottom: 2px solid #1f4e9c; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.meta { color: #444; margin: 0 0 16px; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; break-inside: auto; }
th, td { border: 1px solid #bbb; padding: 4px 6px; text-align: left; vertical-align: top; }
th { background: #eef2f8; font-weight: 600; }
tr { break-inside: avoid; }
table.facts th { width: 190px; }
.mono { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 12px; word-break: break-all; }
table.ops { font-size: 12px; }
.nowrap { white-space: nowrap; word-break: normal; }
.badge { white-space: nowrap; display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff;
         font-size: 12px; font-weight: 600; vertical-align: middle; }
.warn { background: #fdecea; border: 1px solid #c0392b; padding: 8px 10px; margin: 8px 0; }
.ok { background: #eaf6ee; border: 1px solid #1b7f3b; padding: 8px 10px; margin: 8px 0; }
.order { margin-top: 28px; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 4px; }
.small { font-size: 12px; color: #444; }
svg { display: block; margin: 6px 0; }
@page { size: A4; margin: 14mm; }
@media print {
  body { margin: 0; font-size: 11px; max-width: none; }
  .order { break-before: page; margin-top: 0; }
  h3, table.facts { break-after: avoid; }
}
"""


def esc(value: object) -> str:
    """HTML-escaped, and control, format and separator characters shown escaped (textsafe): a
    bidi override in a court's name must not reorder what the reader sees on the page."""
    return escape("" if value is None else printable(value, limit=None))


def page(title: str, body: str) -> str:
    """A complete HTML document around `body`, with the inline style sheet."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """Cells are trusted HTML (callers escape): some carry badges or code spans."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def badge(text: str, color: str) -> str:
    return f'<span class="badge" style="background:{color}">{esc(text)}</span>'


def audit_banner(audit: VerifyResult | None) -> str:
    if audit is None:
        return '<p class="warn">No audit trail was found in the state directory.</p>'
    if audit.ok:
        return f'<p class="ok">Audit trail intact: {audit.count} records, hash chain verified.</p>'
    return (f'<p class="warn"><b>Audit trail BROKEN</b> at line {audit.bad_line}: {esc(audit.reason)}. '
            "Facts recorded from that line on cannot be trusted; run <code>blocker audit verify</code>.</p>")


def _when(at: datetime | None, row: ReportRow) -> str:
    return "" if at is None else esc(fmt_instant(at, row.order.tz))


def facts_table(row: ReportRow) -> str:
    o = row.order
    remaining = "" if row.days_remaining is None else f"{row.days_remaining} ({fmt_duration(row.seconds_remaining)})"
    lifted = f"{esc(fmt_instant(o.lifted.at, o.tz))}: {esc(o.lifted.reason)}" if o.lifted else ""
    pairs = [
        ("Court", esc(o.court)), ("Case number", esc(o.case_number)), ("Applicant", esc(o.applicant or "")),
        ("Decision date", esc(o.decision_date.isoformat())), ("Operators", esc(", ".join(o.operators))),
        ("Action", esc(o.action)), ("Start", esc(fmt_instant(o.start, o.tz))),
        ("Lift instant", f"<b>{esc(fmt_instant(o.end, o.tz))}</b>"), ("Rule", esc(o.rule)),
        ("Early lift", lifted or "none"), ("Status", badge(row.status, STATUS_COLORS.get(row.status, "#444"))
                                 + (f" {badge(row.flag, '#c0392b')}" if row.flag else "")),
        ("Days remaining", esc(remaining)), ("Received (first applied)", _when(row.received, row)),
        ("Versions applied", esc(row.versions)), ("File", f'<span class="mono">{esc(o.path)}</span>'),
        ("File SHA-256", f'<span class="mono">{esc(o.digest)}</span>'),
    ]
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="facts"><tbody>{body}</tbody></table>'


def targets_table(row: ReportRow) -> str:
    rows = []
    for t in row.order.targets:
        if t.kind == "url-escalated":
            what = (f"{badge('url-escalated', '#b9770e')} the court named <span class='mono'>{esc(t.source)}</span>; "
                    "DNS cannot block a path, so the whole host is blocked")
        else:
            what = "with its subdomains" if t.subdomains else "this name only"
        rows.append([f'<span class="mono">{esc(t.name)}</span>', what])
    return table(["Name blocked", "Scope"], rows)


def operators_table(row: ReportRow) -> str:
    def op_cells(r: OperatorRow) -> list[str]:
        published = "" if r.first_published is None else f"{_when(r.first_published, row)} (serial {r.first_serial})"
        failures = str(r.failures) + (f", last {_when(r.last_failure, row)}" if r.last_failure else "")
        removed = ("" if r.removed_at is None else
                   f"<br><span class='small'>removed from zone {_when(r.removed_at, row)} "
                   f"(serial {r.removed_serial})</span>")
        lift_color = {"verified": "#1b7f3b", "in-zone": "#c0392b", "unverified": "#b9770e"}.get(r.lift, "#777")
        return [esc(r.operator), esc(r.block), published, _when(r.block_verified, row),
                esc(fmt_duration(r.time_to_block)), _when(r.last_verified, row), esc(failures),
                badge(r.lift, lift_color) + removed, _when(r.lift_verified, row)]

    return table(["Operator", "Block", "First published", "Block seen on all resolvers", "Time to block",
                  "Last verified", "Failed passes", "Lift", "Lift verified"], [op_cells(r) for r in row.operators],
                 "ops")


def timeline_svg(row: ReportRow, width: int = 1000, height: int = 108) -> str:
    """The order's window as a bar, T as a line, and one mark per event, positioned in time."""
    events = list(row.timeline)
    o = row.order
    lo = min([o.start, *(e.at for e in events)], key=lambda t: t.timestamp())
    hi = max([o.end, *(e.at for e in events)], key=lambda t: t.timestamp())
    span = max(seconds_between(hi, lo), 1.0)
    pad = 40

    def x(at: datetime) -> float:
        return pad + (width - 2 * pad) * seconds_between(at, lo) / span

    parts = [f'<svg width="100%" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="timeline of {esc(o.id)}">',
             f'<line x1="{pad}" y1="50" x2="{width - pad}" y2="50" stroke="#bbb" stroke-width="2"/>',
             f'<rect x="{x(o.start):.1f}" y="44" width="{max(x(o.end) - x(o.start), 2):.1f}" height="12" '
             f'fill="#1f4e9c" fill-opacity="0.25" stroke="#1f4e9c"/>']
    for i, e in enumerate(events):
        lane = 30 - (i % 3) * 9
        parts.append(f'<circle cx="{x(e.at):.1f}" cy="{lane}" r="4" fill="{COLORS.get(e.kind, "#555")}">'
                     f"<title>{esc(fmt_instant(e.at, o.tz))} {esc(e.text)}</title></circle>")
        parts.append(f'<line x1="{x(e.at):.1f}" y1="{lane + 4}" x2="{x(e.at):.1f}" y2="44" '
                     f'stroke="{COLORS.get(e.kind, "#555")}" stroke-width="0.8"/>')
    if lo <= row.at <= hi:
        parts.append(f'<line x1="{x(row.at):.1f}" y1="6" x2="{x(row.at):.1f}" y2="62" stroke="#c0392b" '
                     'stroke-dasharray="4 3" stroke-width="1.5"/>')
        parts.append(f'<text x="{x(row.at):.1f}" y="74" font-size="11" text-anchor="middle" fill="#c0392b">'
                     "report instant</text>")
    else:
        edge = "right" if row.at > hi else "left"
        parts.append(f'<text x="{width - 4 if edge == "right" else 4}" y="74" font-size="11" '
                     f'text-anchor="{"end" if edge == "right" else "start"}" fill="#c0392b">'
                     f"report instant {esc(fmt_instant(row.at, o.tz)[:10])} {'→' if edge == 'right' else '←'}</text>")
    close = x(o.end) - x(o.start) < 170  # two labels would overlap: the lift's goes one line down
    for at, label, y in ((o.start, "start", 88), (o.end, "lift", 102 if close else 88)):
        anchor = "start" if x(at) < 120 else "end" if x(at) > width - 120 else "middle"
        parts.append(f'<text x="{x(at):.1f}" y="{y}" font-size="11" text-anchor="{anchor}">'
                     f"{label} {esc(fmt_instant(at, o.tz)[:10])}</text>")
    parts.append("</svg>")
    return "".join(parts)


def timeline_table(row: ReportRow, events: Sequence[TimelineEvent] | None = None) -> str:
    rows = []
    for e in row.timeline if events is None else events:
        dot = f'<span class="dot" style="background:{COLORS.get(e.kind, "#555")}"></span>'
        seq = "" if e.seq is None else str(e.seq)
        rows.append([f'<span class="mono nowrap">{esc(fmt_instant(e.at, row.order.tz))}</span>',
                     f'<span class="nowrap">{dot}{esc(e.kind)}</span>',
                     esc(e.operator or ""), esc(e.text), esc(seq)])
    return table(["Instant", "Kind", "Operator", "What happened", "Audit #"], rows)


def order_section(row: ReportRow) -> str:
    o = row.order
    flag = f" {badge(row.flag, '#c0392b')}" if row.flag else ""
    return (f'<section class="order" id="{esc(o.id)}">'
            f"<h2>{esc(o.id)} {badge(row.status, STATUS_COLORS.get(row.status, '#444'))}{flag}</h2>"
            f"{facts_table(row)}<h3>Targets</h3>{targets_table(row)}"
            f"<h3>Per operator</h3>{operators_table(row)}"
            f"<h3>Timeline</h3>{timeline_svg(row)}{timeline_table(row)}</section>")


def summary_table(rows: Sequence[ReportRow]) -> str:
    out = []
    for r in rows:
        o = r.order
        verified = sum(1 for x in r.operators if x.block == "verified")
        lifts = ", ".join(sorted({x.lift for x in r.operators}))
        esc_n = sum(1 for t in o.targets if t.kind == "url-escalated")
        targets = f"{len(o.targets)}" + (f" ({esc_n} url-escalated)" if esc_n else "")
        out.append([f'<a href="#{esc(o.id)}">{esc(o.id)}</a>', esc(o.case_number),
                    badge(r.status, STATUS_COLORS.get(r.status, "#444")), esc(fmt_instant(o.end, o.tz)),
                    esc("" if r.days_remaining is None else r.days_remaining), esc(targets),
                    esc(f"{verified}/{len(r.operators)}"), esc(lifts)])
    return table(["Order", "Case", "Status", "Lift instant", "Days left", "Targets", "Block verified", "Lift"], out)


def render_report(rows: Sequence[ReportRow], at: datetime, timezone: str, *, audit: VerifyResult | None,
                  source: str, generated: datetime) -> str:
    """The whole report: header, audit status, one summary table, one section per order."""
    tz = zone(timezone)
    head = (f"<h1>Court-ordered DNS blocks: legal report</h1>"
            f'<p class="meta">As at <b>{esc(fmt_instant(at, tz))}</b> ({esc(timezone)}); '
            f"generated {esc(fmt_instant(generated, tz))} by blocker from {esc(source)}. "
            f"{len(rows)} order(s). Every instant carries its UTC offset, in the order's time zone.</p>")
    legend = " ".join(f'<span class="dot" style="background:{c}"></span>{esc(k)}' for k, c in COLORS.items())
    body = (head + audit_banner(audit) + "<h3>Summary</h3>" + summary_table(rows)
            + f'<p class="small">Timeline marks: {legend}. Block: first probe pass in which every resolver '
              "of the operator answered as blocked. Lift verified: first pass in which every resolver answered "
              "as lifted.</p>"
            + "".join(order_section(r) for r in rows))
    return page(f"blocker legal report as at {fmt_instant(at, tz)}", body)
