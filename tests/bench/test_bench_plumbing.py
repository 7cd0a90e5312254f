"""`python -m bench.bench_plumbing` cannot rot: each of its three measures runs a few jobs to
their end (the worker's all COMPLETED) and prints a figure per round. No timing is asserted."""

from __future__ import annotations

import re
import subprocess
import sys


def test_every_measure_runs_its_jobs_and_prints_a_figure_per_round() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_plumbing", "--jobs", "64", "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = {
        match[1]: match[2].split(", ")
        for match in re.finditer(r"^(\w+) +CPU µs per job: (.+)$", done.stdout, re.MULTILINE)
    }
    assert sorted(figures) == ["pipeline", "submit", "worker"], done.stdout
    assert all(
        len(rounds) == 2 and all(float(f) > 0 for f in rounds) for rounds in figures.values()
    )
