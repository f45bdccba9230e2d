"""The VOS benchmark: DAVIS scoring conventions, and a tiny end-to-end run so it cannot rot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.vos_eval import HELD_OUT, SEQUENCES, TUNE, main, score_sequence, summarise


def test_split_is_disjoint_and_complete() -> None:
    assert set(TUNE).isdisjoint(HELD_OUT)
    assert sorted(TUNE + HELD_OUT) == sorted(SEQUENCES) and len(SEQUENCES) == 18


def test_score_sequence_skips_first_and_last_frames() -> None:
    truth = [np.zeros((10, 10), dtype=bool) for _ in range(4)]
    for t in truth:
        t[2:6, 2:6] = True
    empty = np.zeros((10, 10), dtype=bool)
    # first and last predictions are wrong but not scored; the middle two are perfect
    s = score_sequence([empty, truth[1], truth[2], empty], truth)
    assert s["J"] == 1.0 and s["F"] == 1.0 and s["JF"] == 1.0 and s["scored_frames"] == 2
    # one of the two scored frames is empty: J = F = 0 there
    s = score_sequence([truth[0], truth[1], empty, truth[3]], truth)
    assert s["J"] == pytest.approx(0.5) and s["F"] == pytest.approx(0.5)


def test_summarise_means_over_sequences() -> None:
    row = {"J": 0.5, "F": 0.7, "JF": 0.6, "zero_motion_J": 0.2, "frames": 10, "wall_s": 2.0,
           "keyframes": 3}  # fmt: skip
    per = {"bear": row, "boat": {**row, "J": 0.9, "JF": 0.8, "keyframes": 5}}
    s = summarise(per, SEQUENCES)
    assert s["sequences"] == 2 and s["J"] == pytest.approx(0.7) and s["JF"] == pytest.approx(0.7)
    assert s["fps"] == pytest.approx(5.0) and s["keyframes_max"] == 5
    assert summarise(per, TUNE)["sequences"] == 1  # bear is a tuning sequence, boat is not
    assert summarise({}, TUNE) is None


@pytest.mark.slow
def test_tiny_benchmark_run_writes_scores(tmp_path, shared_data, capsys) -> None:
    out = tmp_path / "vos.json"
    assert main(["--tiny", "--no-sam", "--in-process", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["presets"]) == {"quality", "fast"}
    for preset, res in doc["presets"].items():
        per = res["per_sequence"]
        assert set(per) == {"blackswan", "car-shadow"}
        for seq, r in per.items():
            assert 0 <= r["J"] <= 1 and 0 <= r["F"] <= 1 and r["frames"] == 6
            assert r["J"] > r["zero_motion_J"], (preset, seq)  # the tracker follows the object
            assert 1 <= r["keyframes"] <= 10
        assert res["mean"]["fps"] > 0 and res["peak_rss_mb"] > 0
    assert "quality" in capsys.readouterr().out


def test_missing_data_is_a_usage_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EIDETIC_SHARED_DATA", str(tmp_path))
    assert main(["--tiny", "--no-sam", "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_tiny_benchmark_runs_the_sam_hq_refinement(tmp_path, shared_data) -> None:
    out = tmp_path / "vos.json"
    assert main(["--tiny", "--presets", "fast", "--in-process", "--out", str(out)]) == 0
    sam = json.loads(out.read_text())["sam_hq"]
    assert sam["available"] is True and sam["frames"] == 1, sam
    assert sam["refinements"] == 1 and sam["accepted"] in (0, 1)
    assert sam["s_per_frame"]["median"] > 0
