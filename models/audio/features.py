"""YAMNet-framed log-mel front-end: 16 kHz, 25 ms windows, 10 ms hop, 64 bands, 0.96 s patches."""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ParameterError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz
WIN = 400  # samples per analysis window (25 ms)
HOP = 160  # samples between frames (10 ms)
N_FFT = 512  # FFT length: WIN zero-padded to the next power of two, as YAMNet does
N_MELS = 64  # mel bands
FMIN = 125.0  # Hz, lowest mel band edge
FMAX = 7500.0  # Hz, highest mel band edge
LOG_OFFSET = 0.001  # log(mel + LOG_OFFSET), YAMNet's offset
PATCH_FRAMES = 96  # frames per patch (0.96 s)
PATCH_HOP = 48  # frames between patches (0.48 s)
HOP_S = HOP / SAMPLE_RATE  # seconds between frames
WIN_S = WIN / SAMPLE_RATE  # seconds per window


def check_samples(samples: np.ndarray, *, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Validate mono audio and return it as ``float32[n]`` (float64 input is converted).

    Raises
    ------
    ParameterError
        If ``sr`` is not 16 kHz, ``samples`` is not a 1-D floating-point array, or holds NaN/inf.
    """
    if sr != SAMPLE_RATE:
        raise ParameterError(
            f"sample rate must be {SAMPLE_RATE} Hz, got sr={sr!r}; resample at ingest"
        )
    if not isinstance(samples, np.ndarray):
        raise ParameterError(f"samples must be a numpy array, got {type(samples).__name__}")
    if samples.ndim != 1:
        raise ParameterError(
            f"samples must be mono float32[n], got shape {samples.shape}; mix down channels first"
        )
    if not np.issubdtype(samples.dtype, np.floating):
        raise ParameterError(
            f"samples must be float32 in [-1, 1], got dtype {samples.dtype}; "
            "convert int16 PCM with x.astype(np.float32) / 32768"
        )
    x = samples.astype(np.float32, copy=False)
    if x.size and not np.isfinite(x).all():
        raise ParameterError("samples contain NaN or inf")
    return x


def n_frames(n_samples: int) -> int:
    """Log-mel frames in ``n_samples`` samples: ``1 + (n - WIN) // HOP``, 0 if ``n < WIN``."""
    return 0 if n_samples < WIN else 1 + (n_samples - WIN) // HOP


FRONTEND = Path(__file__).resolve().parent / "weights" / "frontend.npz"  # librosa's constants


def librosa_frontend() -> dict[str, np.ndarray]:
    """The front-end's constants from librosa: YAMNet's filterbank (HTK mel, unnormalised
    triangles, ``float32[64, 257]``) and the periodic Hann window (``float32[400]``)."""
    import librosa

    basis = librosa.filters.mel(
        sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX, htk=True, norm=None
    )
    window = librosa.filters.get_window("hann", WIN, fftbins=True)
    return {"mel_basis": np.asarray(basis, dtype=np.float32), "window": np.asarray(window, dtype=np.float32)}


def export_frontend(path: Path = FRONTEND) -> Path:
    """Write :func:`librosa_frontend`'s constants to ``path`` (the shipped copy; a test checks it
    equals librosa's)."""
    np.savez(path, **librosa_frontend())
    return path


@functools.lru_cache(maxsize=1)
def _frontend() -> dict[str, np.ndarray]:
    """librosa's constants, read from the shipped copy (:data:`FRONTEND`): importing librosa to
    build them costs ~1.2 s of CPU in every process (numba and its kernels), for two constant
    arrays. Without the file (or a malformed one) they come from librosa."""
    try:
        with np.load(FRONTEND) as z:
            got = {"mel_basis": z["mel_basis"], "window": z["window"]}
        if got["mel_basis"].shape == (N_MELS, N_FFT // 2 + 1) and got["window"].shape == (WIN,):
            return got
        logger.warning("%s has the wrong shapes: building the front-end with librosa", FRONTEND)
    except (OSError, KeyError, ValueError) as e:
        logger.warning("cannot read %s (%s): building the front-end with librosa", FRONTEND, e)
    return librosa_frontend()


@functools.lru_cache(maxsize=1)
def _mel_basis() -> Any:
    """YAMNet's filterbank (librosa's HTK mel, unnormalised triangles) as a sparse ``[64, 257]``
    matrix."""
    import scipy.sparse

    return scipy.sparse.csr_array(_frontend()["mel_basis"])


def log_mel(samples: np.ndarray, *, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Log-mel spectrogram with YAMNet's framing.

    Parameters
    ----------
    samples : np.ndarray
        ``float32[n]`` mono audio in [-1, 1] at 16 kHz.
    sr : int
        Sample rate in Hz; must be 16000.

    Returns
    -------
    np.ndarray
        ``float32[n_frames, 64]`` natural log of (mel power + 0.001), frame ``i`` covering samples
        ``[i*160, i*160 + 400)``; ``n_frames = 1 + (n - 400) // 160`` (0 rows when ``n < 400``).
        Mel bands: HTK scale, 125–7500 Hz, unnormalised triangles (YAMNet's filterbank), applied
        to the power spectrum of a 400-sample periodic Hann window zero-padded to 512.

    Notes
    -----
    This is ``librosa.feature.melspectrogram(y, sr=16000, n_fft=512, win_length=400,
    hop_length=160, center=False, power=2.0, n_mels=64, fmin=125, fmax=7500, htk=True,
    norm=None)`` on the signal padded by 56 samples each side (a test checks it), computed
    directly: each 400-sample frame times librosa's periodic Hann window, zero-padded to 512 (the
    padding's position changes only the phase, not the power), one batched ``numpy.fft.rfft``,
    and a sparse mel projection. ``librosa.stft``'s per-call checks and window building cost more
    than the FFT on the 0.24 s chunks of streaming, and librosa's dense ``einsum`` mel product
    goes through multi-threaded BLAS, measured ~500x slower on a busy 2-core machine.
    """
    x = check_samples(samples, sr=sr)
    n = n_frames(x.size)
    if n == 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, WIN)[::HOP] * _window()  # [n, 400]
    spec = np.fft.rfft(frames, n=N_FFT, axis=1)  # complex64[n, 257]
    power = spec.real**2 + spec.imag**2
    mel = _mel_basis() @ power.T  # [64, n]
    return np.log(mel.T + LOG_OFFSET).astype(np.float32, copy=False)


def _window() -> np.ndarray:
    """librosa's (periodic) Hann window of :data:`WIN` samples, ``float32[400]``."""
    return _frontend()["window"]


def patches(logmel: np.ndarray) -> np.ndarray:
    """Cut a log-mel spectrogram into YAMNet patches.

    Parameters
    ----------
    logmel : np.ndarray
        ``float32[n_frames, 64]`` from :func:`log_mel`.

    Returns
    -------
    np.ndarray
        ``float32[n, 96, 64]``, patch ``j`` holding frames ``[j*48, j*48 + 96)``;
        ``n = 1 + (n_frames - 96) // 48`` (0 when fewer than 96 frames). Trailing frames that
        do not fill a patch are dropped.
    """
    if not isinstance(logmel, np.ndarray) or logmel.ndim != 2 or logmel.shape[1] != N_MELS:
        shape = getattr(logmel, "shape", type(logmel).__name__)
        raise ParameterError(f"logmel must be float32[n_frames, {N_MELS}], got {shape}")
    logmel = logmel.astype(np.float32, copy=False)
    if logmel.shape[0] < PATCH_FRAMES:
        return np.zeros((0, PATCH_FRAMES, N_MELS), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(logmel, PATCH_FRAMES, axis=0)[::PATCH_HOP]
    return np.ascontiguousarray(view.transpose(0, 2, 1))


def warm_up() -> float:
    """Run one tiny log-mel so that the front-end's set-up is paid now, not per request.

    Returns
    -------
    float
        Seconds spent: milliseconds with the shipped constants (:data:`FRONTEND`); without them
        librosa's imports and numba JIT (about 15 s the very first time numba compiles and caches
        librosa's kernels on a machine, about 1–2 s in a later fresh process).
    """
    t0 = time.perf_counter()
    log_mel(np.zeros(WIN + HOP, dtype=np.float32))
    dt = time.perf_counter() - t0
    logger.info("log-mel front-end warmed up in %.2f s", dt)
    return dt
