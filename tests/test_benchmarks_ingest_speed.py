"""Tests of the ingest-speed benchmark's accounting: CPU of a whole process tree, summaries."""

from __future__ import annotations

import sys

from benchmarks.ingest_speed import summarize, tree_cpu

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def test_tree_cpu_counts_the_children_a_process_starts():
    child = BURN.format(s=0.6)
    parent = f"import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', {child!r}])\n"
    parent += BURN.format(s=0.3) + "p.wait()\nprint('done')\n"
    result, by = tree_cpu([sys.executable, "-c", parent])
    assert result.returncode == 0 and result.stdout.strip() == "done"
    assert by["driver"] >= 0.25  # the command itself
    assert by.get("other", 0.0) >= 0.45  # its child, not a Ray process: counted as "other"
    assert sum(by.values()) < 0.9 + 1.0  # nothing counted twice (interpreter start-up aside)


def test_summarize_gives_median_and_spread_of_tree_cpu():
    runs = [{"wall_s": w, "cpu_s": 1.0, "tree_cpu_s": c, "episodes": 3} for w, c in ((3.0, 9.0), (1.0, 7.0), (2.0, 8.0))]
    s = summarize(runs)
    assert s["wall_s"] == 2.0 and s["wall_min_max"] == [1.0, 3.0]
    assert s["tree_cpu_s"] == 8.0 and s["tree_cpu_min_max"] == [7.0, 9.0] and s["episodes"] == 3
