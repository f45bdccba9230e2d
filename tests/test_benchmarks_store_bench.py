"""The store benchmark runs end to end at tiny scale (so its code cannot rot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_store_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "store_bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "store_bench.py"), "--quick", "--out", str(out),
         "--tmp", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "recall@10" in proc.stdout and "load average" in proc.stdout
    doc = json.loads(out.read_text())
    (r,) = doc["results"]
    assert r["n"] == 3000 and r["index"]["factory"].startswith("IVF")  # switched from Flat
    assert r["insert_per_s"] > 0 and r["bytes_per_episode"] > 0 and r["catalog_s"] > 0
    assert set(r["search"]) == {"no filter", "source (10 %)", "source + time (1 %)"}
    for case in r["search"].values():
        assert case["recall_at_10"] >= 0.9, case  # vs exact search on clustered data
        assert 0 < case["p50_ms"]["median"] <= case["p99_ms"]["median"]
