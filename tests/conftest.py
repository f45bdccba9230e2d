"""Shared fixtures: seeded RNG, the shared data folder, synthetic media, GPU skip."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.media import write_video

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def shared_data_dir() -> Path:
    """``$EIDETIC_SHARED_DATA`` or ``../shared/data`` beside the checkout."""
    env = os.environ.get("EIDETIC_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def need(path: Path) -> Path:
    """Return ``path`` if it exists; skip locally, fail under CI=true (DESIGN.md §5)."""
    if not path.exists():
        msg = f"shared data missing: {path} (set EIDETIC_SHARED_DATA)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return need(shared_data_dir())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def tiny_video(tmp_path: Path) -> Path:
    """3 s of 160x120 moving squares at 12 fps, H.264 + AAC, bursts at 0.8 s and 2.0 s."""
    return write_video(tmp_path / "tiny.mp4", duration_s=3.0, clicks_at=[0.8, 2.0])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in gpu_items:
        item.add_marker(skip_gpu)
