"""Order texts shared by the legal-report tests: windows in 2091, far from any real clock."""

# 3 months from 2091-01-10: day D 2091-04-10, lifts 2091-04-11 00:00 (CEST since 2091-03-25).
ALPHA = """\
id: alpha
court: Tribunal judiciaire de Paris
case_number: RG 91/00001
decision_date: 2091-01-09
applicant: CNIL
operators: [orange, sfr]
start: 2091-01-10
duration: 3 months
targets:
  - alpha.example
  - url: https://files.alpha.example/d/leak.csv
"""

# An explicit last day: lifts 2091-03-21 00:00 (CET).
BRAVO = """\
id: bravo
court: Tribunal judiciaire de Nanterre
case_number: RG 91/00002
decision_date: 2091-02-27
operators: [orange]
start: 2091-03-01T09:00:00+01:00
end: 2091-03-20
targets: [bravo.example]
"""
