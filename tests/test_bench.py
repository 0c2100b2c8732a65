"""The benchmarks run: each script at a tiny size, as the README's command runs it (``python bench/NAME.py``), exits
0, prints its ratio line per backend and README table rows whose figures are numbers. What they measure is not
tested here (the figures are the README's); that the scripts still work against the product is."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RATIO = re.compile(r"ratio (.+) \((sqlite|postgresql)\): (\d+\.\d\d)")
NUMBER = re.compile(r"[+-]?\d[\d,]*(\.\d+)?%?")

RUNS = {
    # transitions on both backends: the seeder's PostgreSQL path (COPY through the columns' types) with history
    "transitions": ["--n", "3", "--backend", "both"],
    "http": ["--cases", "3", "--contacts", "30", "--requests", "2", "--warmup", "1", "--backend", "sqlite"],
    "forecast": ["--courses", "80", "--runs", "1", "--backend", "sqlite"],
    "timers": ["--n", "5", "--skip", "lateness", "memory", "--backend", "sqlite"],
    "audit": ["--entries", "200", "--transitions", "2", "--workers", "0", "--backend", "sqlite"],
    "wakeup": ["--k", "2", "--gap", "0.1", "--backend", "sqlite"],
    "cli": ["--runs", "2", "--warmup", "1", "--backend", "sqlite"],
    "import": ["--rows", "40", "--backend", "sqlite"],
    # migrate on both backends: the migration's batches with PostgreSQL's advisory locks
    "migrate": ["--contacts", "40", "--by-hand", "20", "--sample", "10", "--backend", "both"],
    "chains": ["--contacts", "100", "--cases", "10", "--runs", "1", "--backend", "sqlite"],
    "overview": ["--contacts", "40", "--runs", "1", "--backend", "sqlite"],
}


def table_figures(output: str) -> list[str]:
    """The cells of the printed tables' figure columns (those the separator right-aligns), row by row."""
    figures: list[str] = []
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            numeric = [cell == "---:" for cell in line.strip("|").split("|")]
            for row in lines[i + 1:]:
                if not row.startswith("| "):
                    break
                cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
                assert len(cells) == len(numeric), row
                figures += [cell for cell, is_figure in zip(cells, numeric, strict=True) if is_figure and cell]
    return figures


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(RUNS))
def test_bench_runs_and_prints_its_figures(script: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / f"{script}.py"), *RUNS[script]], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    backends = {"sqlite", "postgresql"} if "both" in RUNS[script] else {"sqlite"}
    ratios = [RATIO.fullmatch(line) for line in done.stdout.splitlines()]
    assert {found[2] for found in ratios if found} == backends, done.stdout
    figures = table_figures(done.stdout)
    assert figures, done.stdout
    for cell in figures:
        # a figure, or figures with their unit: "+9.1 / +9.0", "21.8 (no hash 1.2)", "100%"
        assert NUMBER.match(cell), (cell, done.stdout)
        float(NUMBER.match(cell)[0].replace(",", "").rstrip("%"))


@pytest.mark.slow
def test_http_bench_times_the_worklist_of_a_member_of_one_unit() -> None:
    """bench/http.py's worklist with access filtering (issue 17): a member of one of the units reads the first page
    of their worklist by hand, on the Python API, over HTTP and as the page, the ways checked equal by the script
    (exit 1 otherwise) and each compared with the query by hand."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "http.py"), "--cases", "1", "--contacts", "40",
                           "--units", "4", "--requests", "2", "--warmup", "1", "--backend", "sqlite"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    ratios = {found[1] for found in map(RATIO.fullmatch, done.stdout.splitlines()) if found}
    assert {"python/by-hand worklist of one unit", "http/by-hand worklist of one unit",
            "page/by-hand worklist of one unit"} <= ratios, done.stdout
    assert "bench:team in Danmark › Bench team 1 (4 units)" in done.stdout
    assert re.search(r"first page of one unit's worklist under 100 ms .*: (met|NOT met)$", done.stdout, re.M)
    rows = [line for line in done.stdout.splitlines() if line.startswith("| sqlite | one unit of 4")]
    assert len(rows) == 2, done.stdout
