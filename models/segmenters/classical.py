"""Weight-free segmenter: GrabCut for box/mask/point prompts, colour saliency regions otherwise."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from models.errors import ParameterError
from models.segmenters.base import MaskProposal, bbox_of

logger = logging.getLogger(__name__)

__all__ = ["KEY", "ClassicalSegmenter"]

KEY = "classical"
WORK_SIDE_PX = 320  # automatic mode runs on a copy whose longer side is at most this
CROP_SIDE_PX = 256  # GrabCut runs on a prompt's crop scaled to at most this
N_COLOURS = 6  # colour clusters of the automatic mode
NMS_IOU = 0.7
MAX_AREA_FRAC = 0.5  # larger regions are background, not objects


class ClassicalSegmenter:
    """Classical (OpenCV) implementation of the :class:`~models.segmenters.base.Segmenter` seam.

    Prompts: each box (``float[N, 4]`` XYXY pixels) seeds ``cv2.grabCut`` with that rectangle;
    each coarse mask (``bool[N, H, W]``) seeds it with definite/probable fore- and background
    bands; each point (``float[N, 2]`` XY pixels) grows a colour region by flood fill, refined the
    same way. Proposals come back in prompt order: boxes, then masks, then points. Without prompts,
    the salient objects of the frame are proposed: colour regions (k-means in Lab) and
    thresholded-saliency regions, ranked by their saliency contrast and compactness.

    ``predicted_iou`` estimates how well the mask separates the object from its surroundings
    (colour or saliency contrast, 0 to 1); ``stability_score`` how little the mask changes under a
    small perturbation (threshold shift or morphological smoothing, 0 to 1).

    Parameters
    ----------
    max_proposals : int, keyword-only
        Upper bound on automatic proposals.
    min_area_frac : float, keyword-only
        Automatic proposals smaller than this fraction of the frame are dropped.
    grabcut_iters : int, keyword-only
        GrabCut iterations per prompt.
    """

    def __init__(
        self, *, max_proposals: int = 6, min_area_frac: float = 0.002, grabcut_iters: int = 3
    ) -> None:
        if max_proposals < 1:
            raise ParameterError(f"max_proposals must be >= 1, got {max_proposals!r}")
        if not 0 <= min_area_frac < MAX_AREA_FRAC:
            raise ParameterError(
                f"min_area_frac must be in [0, {MAX_AREA_FRAC}), got {min_area_frac!r}"
            )
        if grabcut_iters < 1:
            raise ParameterError(f"grabcut_iters must be >= 1, got {grabcut_iters!r}")
        self.max_proposals = int(max_proposals)
        self.min_area_frac = float(min_area_frac)
        self.grabcut_iters = int(grabcut_iters)

    def segment(
        self,
        image: np.ndarray,
        *,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        masks: np.ndarray | None = None,
    ) -> list[MaskProposal]:
        """Segment ``image`` (``uint8[H, W, 3]`` RGB, never modified); see the class docstring."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ParameterError(f"image must be uint8[H, W, 3], got {image.dtype}{image.shape}")
        if boxes is None and points is None and masks is None:
            return self._automatic(image)
        out: list[MaskProposal] = []
        for box in _rows(boxes, 4, "boxes"):
            out.append(self._from_box(image, box))
        if masks is not None:
            masks = np.asarray(masks, dtype=bool)
            if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
                raise ParameterError(
                    f"masks must be bool[N, {image.shape[0]}, {image.shape[1]}], got {masks.shape}"
                )
            out.extend(self._from_mask(image, m) for m in masks)
        for point in _rows(points, 2, "points"):
            out.append(self._from_point(image, point))
        return out

    # ----------------------------------------------------------------------------- prompts

    def _from_box(self, image: np.ndarray, box: np.ndarray) -> MaskProposal:
        h, w = image.shape[:2]
        x0, y0, x1, y1 = np.clip(np.round(box), 0, [w, h, w, h]).astype(int)
        if x1 - x0 < 2 or y1 - y0 < 2:
            logger.debug("degenerate box %s: empty proposal", box.tolist())
            return _proposal(np.zeros((h, w), dtype=bool), 0.0, 0.0)
        margin = max(8, (x1 - x0 + y1 - y0) // 8)
        crop = _Crop.around((x0, y0, x1, y1), margin, (h, w))
        small = crop.take(image)
        s = crop.scale
        rect = (
            int((x0 - crop.x0) * s),
            int((y0 - crop.y0) * s),
            max(1, int((x1 - x0) * s)),
            max(1, int((y1 - y0) * s)),
        )
        gc = np.zeros(small.shape[:2], dtype=np.uint8)
        gc = self._grabcut(small, gc, rect)
        if gc is None:
            mask = np.zeros((h, w), dtype=bool)
            mask[y0:y1, x0:x1] = True
            return _proposal(mask, 0.0, 0.0)
        return self._finish(image, crop.paste(_fg(gc), (h, w)))

    def _from_mask(self, image: np.ndarray, coarse: np.ndarray) -> MaskProposal:
        h, w = image.shape[:2]
        area = int(coarse.sum())
        if area == 0:
            return _proposal(coarse.copy(), 0.0, 0.0)
        band = max(2, int(0.1 * np.sqrt(area)))
        crop = _Crop.around(bbox_of(coarse), 2 * band, (h, w))
        small = crop.take(image)
        m = crop.take(coarse.astype(np.uint8), nearest=True)
        r = max(1, int(band * crop.scale))
        gc = np.full(m.shape, cv2.GC_BGD, dtype=np.uint8)
        gc[cv2.dilate(m, _disk(r)) > 0] = cv2.GC_PR_BGD
        gc[m > 0] = cv2.GC_PR_FGD
        gc[cv2.erode(m, _disk(r)) > 0] = cv2.GC_FGD
        refined = self._grabcut(small, gc, None)
        if refined is None:
            return self._finish(image, coarse.copy())
        return self._finish(image, crop.paste(_fg(refined), (h, w)))

    def _from_point(self, image: np.ndarray, point: np.ndarray) -> MaskProposal:
        h, w = image.shape[:2]
        x = int(np.clip(round(float(point[0])), 0, w - 1))
        y = int(np.clip(round(float(point[1])), 0, h - 1))
        smooth = cv2.GaussianBlur(image, (0, 0), 1.5)
        ff = np.zeros((h + 2, w + 2), dtype=np.uint8)
        flags = 4 | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
        cv2.floodFill(smooth, ff, (x, y), (0, 0, 0), (10, 10, 10), (10, 10, 10), flags)
        region = ff[1:-1, 1:-1] > 0
        if not 0.0005 * h * w <= region.sum() <= MAX_AREA_FRAC * h * w:
            region = np.zeros((h, w), dtype=bool)
            r = max(3, int(0.04 * np.hypot(h, w)))
            cv2.circle(region.view(np.uint8), (x, y), r, 1, -1)
        return self._from_mask(image, region)

    def _grabcut(
        self, image: np.ndarray, gc: np.ndarray, rect: tuple[int, int, int, int] | None
    ) -> np.ndarray | None:
        """Run GrabCut on a private copy; returns the label map, or None when it cannot run."""
        labels = gc.copy()
        bgd = np.zeros((1, 65), np.float64)
        fgd = np.zeros((1, 65), np.float64)
        mode = cv2.GC_INIT_WITH_RECT if rect is not None else cv2.GC_INIT_WITH_MASK
        if rect is None and (np.isin(labels, (0, 2)).all() or not np.isin(labels, (0, 2)).any()):
            return None  # GrabCut needs both fore- and background samples
        try:
            cv2.grabCut(image, labels, rect, bgd, fgd, self.grabcut_iters, mode)
        except cv2.error as e:
            logger.debug("grabCut failed: %s", e)
            return None
        return labels

    def _finish(self, image: np.ndarray, mask: np.ndarray) -> MaskProposal:
        """Score a prompt's mask: colour separation vs a ring around it; smoothing stability."""
        if not mask.any():
            return _proposal(mask, 0.0, 0.0)
        m = mask.astype(np.uint8)
        r = max(2, int(0.15 * np.sqrt(mask.sum())))
        ring = (cv2.dilate(m, _disk(r)) > 0) & ~mask
        separation = 1.0 - _bhattacharyya(image, mask, ring)
        k = _disk(max(1, r // 3))
        smooth = cv2.morphologyEx(cv2.morphologyEx(m, cv2.MORPH_OPEN, k), cv2.MORPH_CLOSE, k) > 0
        return _proposal(mask, separation, _iou(mask, smooth))

    # ----------------------------------------------------------------------------- automatic

    def _automatic(self, image: np.ndarray) -> list[MaskProposal]:
        h, w = image.shape[:2]
        s = min(1.0, WORK_SIDE_PX / max(h, w))
        small = (
            image
            if s == 1.0
            else cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        )
        lab = cv2.cvtColor(cv2.GaussianBlur(small, (0, 0), 1.0), cv2.COLOR_RGB2LAB).astype(
            np.float32
        )
        sal = _saliency(lab)
        cands = _colour_regions(lab) + _saliency_regions(sal)
        min_area = max(4.0, self.min_area_frac * sal.size)
        scored = []
        for region in cands:
            area = int(region.sum())
            if area < min_area or area > MAX_AREA_FRAC * sal.size or _touches_sides(region) >= 3:
                continue
            contrast, stability = _saliency_quality(region, sal)
            scored.append((contrast * (0.5 + 0.5 * _solidity(region)), region, contrast, stability))
        scored.sort(key=lambda c: -c[0])
        kept: list[tuple[np.ndarray, float, float]] = []
        for _, region, contrast, stability in scored:
            if all(_iou(region, k[0]) <= NMS_IOU for k in kept):
                kept.append((region, contrast, stability))
            if len(kept) == self.max_proposals:
                break
        return [_proposal(_upsample(r, (h, w)), c, st) for r, c, st in kept]


# --------------------------------------------------------------------------------- helpers


class _Crop:
    """A padded crop of the frame, resized so its longer side is at most CROP_SIDE_PX."""

    def __init__(self, x0: int, y0: int, x1: int, y1: int) -> None:
        self.x0, self.y0, self.x1, self.y1 = x0, y0, x1, y1
        self.scale = min(1.0, CROP_SIDE_PX / max(x1 - x0, y1 - y0))

    @classmethod
    def around(cls, box: tuple[float, ...], margin: int, shape: tuple[int, int]) -> _Crop:
        h, w = shape
        x0, y0, x1, y1 = (int(v) for v in box)
        return cls(
            max(0, x0 - margin), max(0, y0 - margin), min(w, x1 + margin), min(h, y1 + margin)
        )

    def take(self, array: np.ndarray, *, nearest: bool = False) -> np.ndarray:
        """A new contiguous array: the crop of ``array``, resized by ``scale``."""
        part = np.ascontiguousarray(array[self.y0 : self.y1, self.x0 : self.x1]).copy()
        if self.scale == 1.0:
            return part
        size = (
            max(1, round(part.shape[1] * self.scale)),
            max(1, round(part.shape[0] * self.scale)),
        )
        return cv2.resize(
            part, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
        )

    def paste(self, small_mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Full-frame ``bool[H, W]`` mask holding the crop-space ``small_mask``."""
        out = np.zeros(shape, dtype=bool)
        out[self.y0 : self.y1, self.x0 : self.x1] = _upsample(
            small_mask, (self.y1 - self.y0, self.x1 - self.x0)
        )
        return out


def _rows(a: np.ndarray | None, n: int, name: str) -> list[np.ndarray]:
    if a is None:
        return []
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != n:
        raise ParameterError(f"{name} must have shape [N, {n}], got {arr.shape}")
    return list(arr)


def _proposal(mask: np.ndarray, predicted_iou: float, stability: float) -> MaskProposal:
    clip = lambda v: float(min(1.0, max(0.0, v)))  # noqa: E731
    return MaskProposal(mask, bbox_of(mask), int(mask.sum()), clip(predicted_iou), clip(stability))


def _disk(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _fg(gc: np.ndarray) -> np.ndarray:
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 0.0 if union == 0 else float(np.count_nonzero(a & b) / union)


def _upsample(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask.astype(bool)
    up = cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return up > 0.5


def _bhattacharyya(image: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya coefficient (0 = disjoint, 1 = identical) of two regions' RGB histograms."""
    if not a.any() or not b.any():
        return 1.0
    q = (image >> 4).astype(np.int32)
    idx = (q[..., 0] * 16 + q[..., 1]) * 16 + q[..., 2]
    ha = np.bincount(idx[a], minlength=4096) / a.sum()
    hb = np.bincount(idx[b], minlength=4096) / b.sum()
    return float(np.sqrt(ha * hb).sum())


def _saliency(lab: np.ndarray) -> np.ndarray:
    """``float32[h, w]`` in [0, 1]: contrast to the border colours and to the mean colour."""
    h, w = lab.shape[:2]
    bw = max(2, int(0.04 * min(h, w)))
    sides = [
        lab[:bw].reshape(-1, 3),
        lab[-bw:].reshape(-1, 3),
        lab[:, :bw].reshape(-1, 3),
        lab[:, -bw:].reshape(-1, 3),
    ]
    border = np.min([np.linalg.norm(lab - np.median(s, axis=0), axis=2) for s in sides], axis=0)
    glob = np.linalg.norm(lab - lab.reshape(-1, 3).mean(axis=0), axis=2)
    sal = 0.6 * border / max(1e-6, border.max()) + 0.4 * glob / max(1e-6, glob.max())
    sal = cv2.GaussianBlur(sal.astype(np.float32), (0, 0), 1.0)
    return sal / max(1e-6, float(sal.max()))


def _kmeans(x: np.ndarray, k: int, *, iters: int = 8) -> np.ndarray:
    """Deterministic k-means (k-means++ init, fixed seed) of ``float32[n, 3]``; returns labels."""
    rng = np.random.default_rng(0)
    sample = x[rng.choice(len(x), size=min(len(x), 4000), replace=False)]
    centres = [sample[0]]
    for _ in range(1, k):
        d = np.min([((sample - c) ** 2).sum(1) for c in centres], axis=0)
        if d.sum() <= 0:
            break
        centres.append(sample[rng.choice(len(sample), p=d / d.sum())])
    c = np.array(centres, dtype=np.float32)
    columns = np.ascontiguousarray(x.T)
    for _ in range(iters):
        labels = _nearest(columns, c)
        c = np.array(
            [x[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(len(c))]
        )
    return _nearest(columns, c)


def _nearest(columns: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared distance, first on ties) of each point, given as
    ``float32[3, n]`` columns: the same sums as ``((x[:, None] - c[None]) ** 2).sum(2)``, in the
    same order, one centre at a time (no ``[n, k, 3]`` temporaries)."""
    best = labels = None
    for j, c in enumerate(centres):
        d = columns[0] - c[0]
        d *= d
        for axis in (1, 2):
            e = columns[axis] - c[axis]
            e *= e
            d += e
        if best is None:
            best, labels = d, np.zeros(len(d), dtype=np.intp)
        else:
            labels[d < best] = j
            np.minimum(best, d, out=best)
    return labels


def _components(binary: np.ndarray) -> list[np.ndarray]:
    n, cc = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    return [cc == i for i in range(1, n)]


def _colour_regions(lab: np.ndarray) -> list[np.ndarray]:
    """Connected regions of each colour cluster."""
    labels = _kmeans(lab.reshape(-1, 3), N_COLOURS).reshape(lab.shape[:2])
    k3 = _disk(1)
    out = []
    for j in np.unique(labels):
        clean = cv2.morphologyEx((labels == j).astype(np.uint8), cv2.MORPH_OPEN, k3)
        out.extend(_components(clean))
    return out


def _saliency_regions(sal: np.ndarray) -> list[np.ndarray]:
    """Connected regions of the Otsu-thresholded saliency map."""
    u8 = (sal * 255).astype(np.uint8)
    _, binary = cv2.threshold(u8, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return _components(cv2.morphologyEx(binary, cv2.MORPH_OPEN, _disk(1)))


def _saliency_quality(region: np.ndarray, sal: np.ndarray) -> tuple[float, float]:
    """(contrast, stability): saliency inside minus around; IoU of masks at shifted thresholds."""
    r = max(2, int(0.15 * np.sqrt(region.sum())))
    near = cv2.dilate(region.astype(np.uint8), _disk(r)) > 0
    ring = near & ~region
    inside = float(sal[region].mean())
    outside = float(sal[ring].mean()) if ring.any() else 0.0
    contrast = inside - outside
    thr, delta = 0.5 * (inside + outside), 0.25 * abs(contrast)
    high = region & (sal >= thr + delta)
    low = near & (sal >= thr - delta)
    return contrast, _iou(high, low)


def _solidity(region: np.ndarray) -> float:
    contours, _ = cv2.findContours(
        region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    hull = cv2.convexHull(np.concatenate(contours))
    return float(region.sum() / max(1.0, cv2.contourArea(hull)))


def _touches_sides(region: np.ndarray) -> int:
    return (
        int(region[0].any())
        + int(region[-1].any())
        + int(region[:, 0].any())
        + int(region[:, -1].any())
    )
