"""A constant-Q transform equal to `librosa.cqt` (to float32 rounding), with fixed kernels.

`librosa.cqt` rebuilds and sparsifies its per-octave filter bases on every
call (about 60 % of its run time on a 30 s clip at hop 1024). Here they are
built once (`banks.cqt_bank`, cached on disk) and librosa's recursive
octave-by-octave algorithm runs: early decimation, one 512-point frame per
output frame and octave projected onto the octave's kernels, halving the
signal between octaves with the same soxr "HQ" resampler and scaling, and
the same length normalization. One difference in how, none in what: librosa
takes each frame's FFT (float64) and multiplies the sparse FFT-domain kernels
(complex64); here the kernels are taken back to the time domain once
(`time_kernels`) and each octave is one float64 matrix product of the frames
with them, 1.5x faster. In float64, because a quiet bin's response cancels
terms up to 1e5 times larger and the log of the features shows their
rounding. The magnitudes equal librosa's within 5e-7 of each bin's largest
value (tests/test_features.py).
"""

import numpy as np
import soxr

from m3bert_tf.features import spectrum


def decimate(y: np.ndarray, factor: int) -> np.ndarray:
    """`librosa.resample(y, orig_sr=factor, target_sr=1, res_type="soxr_hq",
    scale=True)`: [S] float32 -> [ceil(S / factor)] float32, x sqrt(factor)."""
    ratio = 1.0 / factor
    size = int(np.ceil(len(y) * ratio))
    out = soxr.resample(y, factor, 1, quality="soxr_hq")
    if len(out) > size:
        out = out[:size]
    elif len(out) < size:
        out = np.pad(out, (0, size - len(out)))
    out /= np.sqrt(ratio)
    return np.asarray(out, dtype=y.dtype)


class ConstantQ:
    """Magnitude CQT with a fixed filter bank.

    Args:
      bank: the arrays of `banks.cqt_bank` (or `banks.cqt_part` of a cached
        bank).

    Call it on a [num_samples] float32 waveform to get the [n_bins, num_frames]
    float32 magnitude, num_frames = 1 + num_samples // hop_length.

    Attributes (also read by `frontend.cqt.TFConstantQ`):
      early_factor, hop_length, n_bins: ints.
      octaves: [(hop, n_fft, [filters, n_fft // 2 + 1] complex64 kernels,
        halve after)], top octave first.
      sqrt_lengths: [n_bins, 1] float64.
    """

    def __init__(self, bank: dict[str, np.ndarray]):
        self.early_factor = int(bank["early_factor"])
        self.hop_length = int(bank["hop_length"])
        self.sqrt_lengths = np.asarray(bank["sqrt_lengths"], np.float64)[:, None]
        self.n_bins = len(self.sqrt_lengths)
        self.octaves = []
        self._time_kernels = []  # per octave: [n_fft, 2 * filters] float64
        for i, (hop, n_fft, halve) in enumerate(
            zip(bank["hops"], bank["n_ffts"], bank["halve"], strict=True)
        ):
            basis = np.asarray(bank[f"basis_{i}"], np.complex64)
            self.octaves.append((int(hop), int(n_fft), basis, bool(halve)))
            self._time_kernels.append(time_kernels(basis, int(n_fft)))

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        y = np.asarray(waveform, dtype=np.float32)
        if self.early_factor > 1:
            y = decimate(y, self.early_factor)
        responses = []  # [frames, filters] complex128 per octave, top-down
        for (hop, n_fft, _, halve), kernels in zip(
            self.octaves, self._time_kernels, strict=True
        ):
            frames = spectrum.frame_rows(y, n_fft, hop, np.float64)
            response = np.empty((len(frames), kernels.shape[1]))
            for start, stop in spectrum.blocks(len(frames)):
                response[start:stop] = np.ascontiguousarray(frames[start:stop]) @ kernels
            responses.append(response.view(np.complex128))
            if halve:
                y = decimate(y, 2)
        # Octaves come top-down; stack them bottom-up, trimmed to the shortest.
        num_frames = min(len(r) for r in responses)
        out = np.empty((num_frames, self.n_bins), dtype=np.complex128)
        end = self.n_bins
        for r in responses:
            n = r.shape[1]
            if end < n:
                out[:, :end] = r[:num_frames, -end:]
            else:
                out[:, end - n : end] = r[:num_frames]
            end -= n
        out /= self.sqrt_lengths[:, 0]
        return np.abs(out).astype(np.float32).T


def time_kernels(basis: np.ndarray, n_fft: int) -> np.ndarray:
    """[filters, n_fft // 2 + 1] FFT-domain kernels -> [n_fft, 2 * filters]
    float64 real matrix K with frames @ K = (frames' rfft) @ basis.T, the
    real and imaginary parts of each filter's response interleaved (a view
    as complex128 gives [frames, filters]).

    Kernel f in time is h_f[n] = sum_k basis[f, k] exp(-2 pi i k n / n_fft)
    over the rfft bins k: the FFT of the kernel zero-padded to n_fft bins.
    """
    full = np.zeros((len(basis), n_fft), np.complex128)
    full[:, : basis.shape[1]] = basis
    h = np.fft.fft(full, axis=1).T  # [n_fft, filters]
    return np.ascontiguousarray(np.stack([h.real, h.imag], axis=-1).reshape(n_fft, -1))
