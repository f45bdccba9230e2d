"""Weight-free appearance descriptor: mask-pooled HSV colour, gradient orientations and layout."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from models.errors import ParameterError

logger = logging.getLogger(__name__)

__all__ = ["KEY", "ClassicalEmbedder"]

KEY = "classical"
SIDE_PX = 96  # the object's crop is resized so its longer side is this
H_BINS, S_BINS, V_BINS = 16, 4, 3  # joint HSV histogram: 192 cells
ORI_BINS, ORI_CELLS = 8, 2  # unsigned gradient orientations in a 2x2 grid of cells: 32
MAG_BINS = 8  # gradient-magnitude (texture strength) histogram, in octaves
MAG_FLOOR = 16.0  # Sobel magnitude below which a gradient counts as flat
GRID = 4  # mask occupancy of a 4x4 grid over the object's box: 16
N_STATS = 8  # mean and std of Lab, log aspect ratio, fill ratio
BLOCK_WEIGHTS = {"colour": 1.0, "orientation": 0.5, "magnitude": 0.3, "layout": 0.35, "stats": 0.35}


class ClassicalEmbedder:
    """Classical implementation of the :class:`~models.embedders.base.Embedder` seam.

    Each object (the masked pixels, or the whole image) is described by five blocks, each
    normalised and weighted (``BLOCK_WEIGHTS``), then concatenated and L2-normalised:

    - a joint HSV colour histogram (16 hue x 4 saturation x 3 value cells);
    - gradient-orientation histograms (8 unsigned bins) over a 2x2 grid of the object's box;
    - a gradient-magnitude histogram (texture strength);
    - the mask's occupancy of a 4x4 grid over its box (coarse shape);
    - mean and spread of the Lab colour, aspect ratio and fill ratio.

    Histograms are square-rooted (Hellinger), so the cosine of two descriptors behaves like a
    Bhattacharyya similarity. Deterministic; inputs are never modified.
    """

    dim: int = H_BINS * S_BINS * V_BINS + ORI_BINS * ORI_CELLS**2 + MAG_BINS + GRID**2 + N_STATS

    def embed_images(
        self, images: list[np.ndarray], masks: list[np.ndarray | None] | None = None
    ) -> np.ndarray:
        """Describe ``images`` (each ``uint8[H, W, 3]`` RGB) under optional ``bool[H, W]`` masks.

        Returns
        -------
        np.ndarray
            ``float32[n, dim]``, rows L2-normalised; an empty mask gives a zero row.
        """
        if masks is not None and len(masks) != len(images):
            raise ParameterError(f"got {len(images)} images but {len(masks)} masks")
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for i, image in enumerate(images):
            mask = None if masks is None else masks[i]
            out[i] = self.embed_one(image, mask)
        return out

    def embed_one(self, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Descriptor ``float32[dim]`` of one image (optionally under a ``bool[H, W]`` mask)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ParameterError(f"image must be uint8[H, W, 3], got {image.dtype}{image.shape}")
        if mask is not None and mask.shape != image.shape[:2]:
            raise ParameterError(f"mask shape {mask.shape} != image shape {image.shape[:2]}")
        crop, m = _object_crop(image, mask)
        if crop is None:
            return np.zeros(self.dim, dtype=np.float32)
        ori, mag = _orientation_hist(crop, m)
        blocks = {
            "colour": _colour_hist(crop, m),
            "orientation": ori,
            "magnitude": mag,
            "layout": _hellinger(_occupancy(m)),
            "stats": _stats(crop, m),
        }
        parts = [BLOCK_WEIGHTS[k] * _l2(v) for k, v in blocks.items()]
        return _l2(np.concatenate(parts)).astype(np.float32)


def _object_crop(
    image: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray]:
    """The object's box (plus a small margin), resized to SIDE_PX on its longer side, and its
    ``bool`` mask there."""
    m = np.ones(image.shape[:2], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    ys = np.flatnonzero(m.any(axis=1))
    xs = np.flatnonzero(m.any(axis=0))
    if ys.size == 0:
        return None, m
    pad = max(2, round(0.05 * max(ys[-1] - ys[0], xs[-1] - xs[0])))  # room for the outline
    y0, y1 = max(0, ys[0] - pad), min(m.shape[0], ys[-1] + 1 + pad)
    x0, x1 = max(0, xs[0] - pad), min(m.shape[1], xs[-1] + 1 + pad)
    crop = image[y0:y1, x0:x1]
    mc = m[y0:y1, x0:x1].astype(np.uint8)
    s = SIDE_PX / max(y1 - y0, x1 - x0)
    size = (max(1, round((x1 - x0) * s)), max(1, round((y1 - y0) * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    crop = cv2.resize(np.ascontiguousarray(crop), size, interpolation=interp)
    mc = cv2.resize(mc, size, interpolation=cv2.INTER_NEAREST) > 0
    if not mc.any():
        mc = np.ones(mc.shape, dtype=bool)
    return crop, mc


def _colour_hist(crop: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Joint HSV histogram with soft (trilinear) binning: hue circular, saturation/value clamped."""
    hsv = cv2.cvtColor(cv2.GaussianBlur(crop, (3, 3), 0), cv2.COLOR_RGB2HSV)[m].astype(np.float64)
    axes = []
    for channel, n, top, circular in (
        (0, H_BINS, 180.0, True),
        (1, S_BINS, 256.0, False),
        (2, V_BINS, 256.0, False),
    ):
        f = hsv[:, channel] * n / top - 0.5
        lo = np.floor(f)
        w_hi = f - lo
        pair = []
        for b, w in ((lo, 1.0 - w_hi), (lo + 1, w_hi)):
            b = b.astype(np.int64)
            pair.append((b % n if circular else np.clip(b, 0, n - 1), w))
        axes.append(pair)
    hist = np.zeros(H_BINS * S_BINS * V_BINS)
    for hb, hw in axes[0]:
        for sb, sw in axes[1]:
            for vb, vw in axes[2]:
                idx = (hb * S_BINS + sb) * V_BINS + vb
                hist += np.bincount(idx, weights=hw * sw * vw, minlength=hist.size)
    return _hellinger(hist)


def _orientation_hist(crop: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(HOG-like 2x2-cell orientation histograms, gradient-magnitude histogram), both Hellinger.

    Orientations are taken over the mask grown by 2 px, so the outline counts: a flat object
    still has a shape."""
    grey = cv2.GaussianBlur(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), (5, 5), 1.0).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.hypot(gx, gy)
    ori = (np.arctan2(gy, gx) % np.pi) / np.pi  # unsigned, [0, 1)
    ob = np.minimum((ori * ORI_BINS).astype(np.int32), ORI_BINS - 1)
    hh, ww = m.shape
    cy = np.minimum(np.arange(hh) * ORI_CELLS // hh, ORI_CELLS - 1)[:, None]
    cx = np.minimum(np.arange(ww) * ORI_CELLS // ww, ORI_CELLS - 1)[None, :]
    idx = (cy * ORI_CELLS + cx) * ORI_BINS + ob
    n_ori = ORI_BINS * ORI_CELLS**2
    grown = cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # include the outline
    ori_hist = np.bincount(idx[grown], weights=mag[grown], minlength=n_ori)
    # octaves of gradient magnitude above MAG_FLOOR (weaker gradients, e.g. sensor noise: bin 0)
    mb = np.clip(np.log2(np.maximum(mag, 1e-3) / MAG_FLOOR) + 1, 0, MAG_BINS - 1).astype(np.int32)
    mag_hist = np.bincount(mb[m], minlength=MAG_BINS).astype(np.float64)
    return _hellinger(ori_hist), _hellinger(mag_hist)


def _occupancy(m: np.ndarray) -> np.ndarray:
    hh, ww = m.shape
    cy = np.minimum(np.arange(hh) * GRID // hh, GRID - 1)[:, None]
    cx = np.minimum(np.arange(ww) * GRID // ww, GRID - 1)[None, :]
    idx = np.broadcast_to(cy * GRID + cx, m.shape)
    return np.bincount(idx[m], minlength=GRID**2).astype(np.float64)


def _stats(crop: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Mean and std of Lab (scaled to about [0, 1]), aspect ratio (log, shifted) and fill ratio."""
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB)[m].astype(np.float64) / 255.0
    hh, ww = m.shape
    aspect = 0.5 + 0.25 * np.clip(np.log(ww / hh), -2, 2)
    return np.concatenate([lab.mean(0), 2 * lab.std(0), [aspect, m.mean()]])


def _hellinger(h: np.ndarray) -> np.ndarray:
    s = float(h.sum())
    return np.sqrt(h / s) if s > 0 else h


def _l2(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v
