"""The four packages resolve to this repo, and importing them (or any *.types) stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIGHT = [
    "models", "tracker", "memory", "pipeline",
    "pipeline.types", "tracker.types", "memory.types",
    "models.segmenters.base", "models.embedders.base", "models.audio.base", "pipeline.config",
]
HEAVY = ["torch", "ray", "faiss", "librosa"]


def test_packages_resolve_to_repo():
    code = "import json, models, tracker, memory, pipeline; print(json.dumps([m.__file__ for m in (models, tracker, memory, pipeline)]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    for f in json.loads(out.stdout):
        assert Path(f).resolve().is_relative_to(REPO), f


def test_light_imports_pull_no_heavy_library():
    code = (
        "import importlib, json, sys\n"
        f"for m in {LIGHT!r}: importlib.import_module(m)\n"
        f"print(json.dumps([h for h in {HEAVY!r} if h in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_lower_layers_never_import_higher_ones():
    order = ["models", "tracker", "memory", "pipeline"]
    for i, pkg in enumerate(order):
        for path in (REPO / pkg).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for higher in order[i + 1 :]:
                assert f"from {higher}" not in text and f"import {higher}" not in text, (path, higher)
