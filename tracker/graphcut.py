"""Binary graph cut of a probability map with contrast-sensitive smoothness (Boykov-Jolly).

Minimises ``sum_p U_p(x_p) + gamma * sum_{p~q} exp(-beta * |I_p - I_q|^2) * [x_p != x_q]`` over
4-connected pixels, where ``U_p(1) = -log P_p`` and ``U_p(0) = -log (1 - P_p)`` come from a
per-pixel foreground probability and ``beta = 1 / (2 * mean |I_p - I_q|^2)`` (Rother et al.,
GrabCut). A label boundary is cheap across an image edge and expensive inside a uniform region,
so the cut snaps to edges. Solved exactly with Boykov-Kolmogorov max-flow (PyMaxflow).
"""

from __future__ import annotations

import logging

import maxflow
import numpy as np

from models.errors import ParameterError

logger = logging.getLogger(__name__)

__all__ = ["graph_cut"]

_RIGHT = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]])
_DOWN = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0]])


def _contrast(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``exp(-beta * |dI|^2)`` to the right and downward neighbours, ``float32[H, W]`` each
    (the last column / row is 0: no neighbour)."""
    f = image.astype(np.float32)
    if f.ndim == 2:
        f = f[..., None]
    dx = ((f[:, 1:] - f[:, :-1]) ** 2).sum(axis=2)
    dy = ((f[1:] - f[:-1]) ** 2).sum(axis=2)
    mean = (dx.sum() + dy.sum()) / max(1, dx.size + dy.size)
    beta = 1.0 / (2.0 * max(float(mean), 1e-6))
    wx = np.zeros(f.shape[:2], dtype=np.float32)
    wy = np.zeros(f.shape[:2], dtype=np.float32)
    wx[:, :-1] = np.exp(-beta * dx)
    wy[:-1] = np.exp(-beta * dy)
    return wx, wy


def graph_cut(
    image: np.ndarray, prob: np.ndarray, *, gamma: float, eps: float = 1e-3
) -> np.ndarray:
    """Most probable smooth foreground mask of ``image`` given per-pixel ``prob``.

    Parameters
    ----------
    image : np.ndarray
        ``uint8[H, W, 3]`` (or ``[H, W]``) image whose edges guide the cut.
    prob : np.ndarray
        ``float[H, W]`` probability that each pixel is foreground.
    gamma : float, keyword-only
        Weight of the smoothness term (0: threshold ``prob`` at 0.5).
    eps : float, keyword-only
        ``prob`` is clipped to ``[eps, 1 - eps]`` (bounded unary costs).

    Returns
    -------
    np.ndarray
        ``bool[H, W]`` foreground mask.
    """
    if prob.shape != image.shape[:2]:
        raise ParameterError(f"prob shape {prob.shape} != image shape {image.shape[:2]}")
    if gamma < 0 or not 0 < eps < 0.5:
        raise ParameterError(f"need gamma >= 0 and 0 < eps < 0.5, got {gamma!r}, {eps!r}")
    p = np.clip(np.asarray(prob, dtype=np.float64), eps, 1 - eps)
    if gamma == 0 or p.size == 0:
        return p > 0.5
    g = maxflow.Graph[float]()
    nodes = g.add_grid_nodes(p.shape)
    wx, wy = _contrast(image)
    g.add_grid_edges(nodes, weights=gamma * wx, structure=_RIGHT, symmetric=True)
    g.add_grid_edges(nodes, weights=gamma * wy, structure=_DOWN, symmetric=True)
    # A node on the sink side is foreground: it pays its source capacity, -log P(foreground).
    g.add_grid_tedges(nodes, -np.log(p), -np.log1p(-p))
    g.maxflow()
    return np.asarray(g.get_grid_segments(nodes), dtype=bool)
