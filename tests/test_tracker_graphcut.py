"""Graph cut of a probability map: exact answers on small problems, edge snapping, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from models.errors import ParameterError
from tracker.graphcut import _contrast, graph_cut
from tracker.metrics import jaccard


def energy(image: np.ndarray, prob: np.ndarray, labels: np.ndarray, gamma: float) -> float:
    """The energy graph_cut minimises, computed directly."""
    p = np.clip(prob, 1e-3, 1 - 1e-3)
    unary = np.where(labels, -np.log(p), -np.log1p(-p)).sum()
    wx, wy = _contrast(image)
    cut_x = (labels[:, 1:] != labels[:, :-1]) * wx[:, :-1]
    cut_y = (labels[1:] != labels[:-1]) * wy[:-1]
    return float(unary + gamma * (cut_x.sum() + cut_y.sum()))


def test_graph_cut_is_the_exact_minimum_on_tiny_problems(rng: np.random.Generator) -> None:
    for _ in range(5):
        image = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
        prob = rng.random((3, 4))
        gamma = float(rng.uniform(0.2, 3))
        cut = graph_cut(image, prob, gamma=gamma)
        best = min(
            (
                np.array(bits, dtype=bool).reshape(3, 4)
                for bits in itertools.product((0, 1), repeat=12)
            ),
            key=lambda lab: energy(image, prob, lab, gamma),
        )
        assert energy(image, prob, cut, gamma) == pytest.approx(energy(image, prob, best, gamma))


def test_gamma_zero_thresholds_and_smoothness_removes_speckle(rng: np.random.Generator) -> None:
    image = np.full((40, 40, 3), 120, dtype=np.uint8)
    prob = np.full((40, 40), 0.2)
    prob[10:30, 10:30] = 0.8
    noisy = prob.copy()
    flip = rng.random(prob.shape) < 0.05
    noisy[flip] = 1 - noisy[flip]
    assert np.array_equal(graph_cut(image, noisy, gamma=0), noisy > 0.5)
    cut = graph_cut(image, noisy, gamma=2.0)
    assert jaccard(cut, prob > 0.5) > 0.95
    assert jaccard(noisy > 0.5, prob > 0.5) < 0.9


def test_the_cut_snaps_to_an_image_edge() -> None:
    """An uncertain band around a square: the boundary goes where the image's edge is."""
    image = np.full((60, 60, 3), 40, dtype=np.uint8)
    image[20:40, 20:40] = 200
    truth = image[..., 0] > 100
    prob = np.full((60, 60), 0.05)
    prob[14:46, 14:46] = 0.5  # no opinion in a band of 6 px around the square
    prob[24:36, 24:36] = 0.95
    cut = graph_cut(image, prob, gamma=1.0)
    assert jaccard(cut, truth) > 0.98


def test_graph_cut_errors() -> None:
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ParameterError, match="shape"):
        graph_cut(image, np.zeros((3, 4)), gamma=1.0)
    with pytest.raises(ParameterError, match="gamma"):
        graph_cut(image, np.zeros((4, 4)), gamma=-1.0)
