"""benchmarks/run.py's report: a results file recorded apart (an experiment's --results) gets its own report
beside it and never rebuilds the shared benchmarks/RESULTS.md from its few rows."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import report
from benchmarks import run as bench_run

SHARED = bench_run.RESULTS


def test_a_results_file_elsewhere_reports_beside_itself_not_into_results_md(tmp_path):
    before = report.OUT.read_bytes()
    first = json.loads(SHARED.read_text().splitlines()[0])  # one real row: a protocol, a dataset, a model
    elsewhere = tmp_path / "experiment.jsonl"
    elsewhere.write_text(json.dumps(first) + "\n")
    assert bench_run.main(["--report", "--results", str(elsewhere)]) == 0
    assert report.OUT.read_bytes() == before
    written = (tmp_path / "experiment.md").read_text()
    assert first["model"] in written and first["dataset"] in written
    assert bench_run.report_path(Path(SHARED)) == report.OUT
