"""bench/backlog.py at a tiny size, run as the README runs it: it exits 0, prints the real timer mix it made, checks
each catch-up (every due timer closed with its one entry, chains intact, the later timers untouched) and prints its
tables with numbers for figures. The figures themselves are the README's, not tested here.

One worker per run only: with several, the order in which they take a tiny backlog is the race the bench measures
at size (its checks report it), which a test must not depend on."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.test_bench import NUMBER, ROOT, table_figures

pytestmark = pytest.mark.slow

ARGS = ["--contacts", "24", "--workers", "1", "--batch", "50", "--pending-total", "300", "--scale-contacts", "8",
        "--scale-workers", "1", "--servers", "1", "2", "--clients", "1", "2", "--http-requests", "6"]
#: Every timer the templates leave pending, by kind (the child's paediatric referral included).
MIX = {"case": ("condom_advice_ends", "paediatric_referral_due", "phone_notification_due", "sequencing_sample_due",
                "written_notification_due"),
       "contact": ("inform_due", "monitoring_ends", "pep_assessment_due", "pep_optimal_window_closes",
                   "pep_window_closes"),
       "course": ("dose2_due",)}


def test_backlog_bench_runs_checks_and_prints_its_figures() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "backlog.py"), *ARGS], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, check=False)
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:] + out[-3000:]
    mix = {(kind, name) for kind, name in re.findall(r"^    (case|contact|course) +(\w+) +\d+$", out, re.M)}
    assert mix == {(kind, name) for kind, names in MIX.items() for name in names}, out
    # The backlog's copies and those due a year ahead: more than --pending-total timers pending at the start.
    found = re.search(r"and (\d+) timers pending, due a year ahead and more: (\d+) pending in all", out)
    assert found and int(found[1]) > 0 and int(found[2]) >= 300, out
    checked = re.findall(r"after 1 worker\(s\), (backlog|scale): (\d+) timers closed .* one entry each; (\d+) entries "
                         r"on \d+ objects verified intact", out)
    assert [label for label, *_ in checked] == ["backlog", "scale"], out
    assert all(int(entries) >= int(closed) > 0 for _, closed, entries in checked), out
    assert re.search(r"backlog time: [\d.]+ minutes for \d+ timers; projection for 500000 timers", out), out
    assert "CHECK FAILED" not in out
    http = re.findall(r"HTTP: (\d) client\(s\) against (\d) serve process\(es\): 6 confirms", out)
    assert sorted(http) == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")], out
    assert len(re.findall(r"^ratio http transitions/s .* \(postgresql\): \d+\.\d\d$", out, re.M)) == 3, out
    figures = table_figures(out)
    assert len(figures) == 9 + 7 + 4 * 6, out  # the backlog's row, the scale's, the four HTTP rows
    for cell in figures:
        assert NUMBER.match(cell), (cell, out)
