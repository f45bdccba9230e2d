"""DAVIS video-object-segmentation measures: region similarity J and boundary F-measure."""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["f_measure", "jaccard", "seg2bmap"]


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity J: intersection over union of two ``bool[H, W]`` masks.

    Returns 1.0 when both masks are empty (DAVIS convention).
    """
    pred, gt = _as_bool_pair(pred, gt)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt) / union)


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a ``bool[H, W]`` mask, as DAVIS's ``seg2bmap``.

    A pixel is a boundary pixel when it differs from its east, south or south-east neighbour;
    the last row and column only compare along the image edge.
    """
    seg = np.asarray(mask, dtype=bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    """``uint8[2r+1, 2r+1]`` disk structuring element (x² + y² ≤ r², like skimage's ``disk``)."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx * xx + yy * yy <= r * r).astype(np.uint8)


def f_measure(pred: np.ndarray, gt: np.ndarray, *, bound_th: float = 0.008) -> float:
    """Boundary F-measure of two ``bool[H, W]`` masks (DAVIS ``db_eval_boundary``).

    Parameters
    ----------
    pred, gt : np.ndarray
        ``bool[H, W]`` predicted and ground-truth masks (any non-zero value counts as foreground).
    bound_th : float, keyword-only
        Match tolerance: a fraction of the image diagonal when < 1, else pixels.

    Returns
    -------
    float
        Harmonic mean of boundary precision and recall in [0, 1]; 1.0 when both are empty.
    """
    pred, gt = _as_bool_pair(pred, gt)
    bound_pix = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*gt.shape))
    fg_b = seg2bmap(pred)
    gt_b = seg2bmap(gt)
    kernel = _disk(int(bound_pix))
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)
    n_fg = int(np.count_nonzero(fg_b))
    n_gt = int(np.count_nonzero(gt_b))
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0  # precision or recall is 0 (DAVIS sets the other to 1)
    precision = np.count_nonzero(fg_b & gt_dil) / n_fg
    recall = np.count_nonzero(gt_b & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def _as_bool_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred) != 0
    gt = np.asarray(gt) != 0
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: pred {pred.shape} vs gt {gt.shape}")
    return pred, gt
