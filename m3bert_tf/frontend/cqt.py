"""The CQT block as TensorFlow ops: librosa's octave-by-octave algorithm with
a FIR half-band resampler in place of soxr.

`features.cqt.ConstantQ` (the reference, equal to `librosa.cqt`) decimates
the signal early (44.1 kHz -> 11.025 kHz), then per octave takes a 512-point
STFT (rectangular window, centered), projects it onto the octave's FFT
kernels and halves the rate. Here the kernels are the same constants; each
halving is a zero-phase windowed-sinc lowpass shaped like soxr's "HQ" filter
(`half_band_filter`) and a stride of 2 instead of soxr's resampler, scaled by
sqrt(2) as librosa's `resample(scale=True)` is. The difference to librosa is
measured by tests/test_frontend.py.
"""

import numpy as np
import tensorflow as tf

# soxr "HQ" keeps 0.913 of the output's Nyquist rate and stops at 1.0; a
# Kaiser-windowed sinc cut at the middle of that band (0.478 of the input's
# Nyquist), 301 taps, beta 10 (about 100 dB), is within 5e-4 of it on music.
HALF_BAND_TAPS = 301
HALF_BAND_CUTOFF = 0.478
KAISER_BETA = 10.0


def half_band_filter(taps: int = HALF_BAND_TAPS, cutoff: float = HALF_BAND_CUTOFF,
                     beta: float = KAISER_BETA) -> np.ndarray:  # fmt: skip
    """[taps] float32 lowpass at `cutoff` x the Nyquist rate, unit DC gain."""
    n = np.arange(taps) - (taps - 1) / 2
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(taps, beta)
    return (h / h.sum()).astype(np.float32)


class TFConstantQ:
    """Batched magnitude CQT with the constants of a `features.cqt.ConstantQ`.

    Call: waveform [B, S] float32 (44.1 kHz, zero after each row's end),
    lengths [B] int32 real samples -> [B, T, n_bins] float32 magnitude, T = 1 + S // hop_length frames (the
    centered framing of the features).
    """

    def __init__(self, reference, builtin_ops: bool = False):
        self.builtin_ops = builtin_ops
        self.n_bins = reference.n_bins
        self.hop_length = reference.hop_length
        self.early_halvings = int(np.log2(reference.early_factor))
        if 2**self.early_halvings != reference.early_factor:
            raise ValueError(f"early factor {reference.early_factor} is not a power of 2")
        self.lowpass = tf.constant(half_band_filter()[:, None, None])  # [taps, 1, 1]
        self.octaves = []  # (hop, n_fft, [n_fft // 2 + 1, filters] complex64 kernels, halve)
        for hop, n_fft, fft_basis, halve in reference.octaves:
            kernels = np.asarray(fft_basis, np.complex128).T
            if builtin_ops:  # real time-domain kernels: no complex tensor at all
                kernels = time_domain_kernels(kernels, n_fft)
            self.octaves.append((hop, n_fft, tf.constant(kernels.astype(
                np.float32 if builtin_ops else np.complex64)), halve))  # fmt: skip
        self.inverse_sqrt_lengths = tf.constant(
            (1.0 / reference.sqrt_lengths[:, 0]).astype(np.float32)
        )

    def halve(self, y: tf.Tensor, lengths: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """([B, S], [B] real samples) -> ([B, ceil(S / 2)], ceil(lengths / 2)):
        lowpass, every second sample, x sqrt(2); a row ends where its signal
        ends (the filter's tail is cut, as librosa's resample cuts it)."""
        pad = (HALF_BAND_TAPS - 1) // 2
        x = tf.expand_dims(tf.pad(y, [[0, 0], [pad, pad]]), -1)
        out = tf.squeeze(tf.nn.conv1d(x, self.lowpass, stride=2, padding="VALID"), -1)
        lengths = (lengths + 1) // 2
        real = tf.sequence_mask(lengths, tf.shape(out)[1])
        return tf.where(real, out * np.float32(np.sqrt(2.0)), 0.0), lengths

    def __call__(self, waveform: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        y = tf.convert_to_tensor(waveform, tf.float32)
        lengths = tf.convert_to_tensor(lengths, tf.int32)
        frames = 1 + tf.shape(y)[1] // self.hop_length
        for _ in range(self.early_halvings):
            y, lengths = self.halve(y, lengths)
        responses = []
        for hop, n_fft, kernels, halve in self.octaves:
            padded = tf.pad(y, [[0, 0], [n_fft // 2, n_fft // 2]])
            framed = tf.signal.frame(padded, n_fft, hop)[:, :frames]
            if self.builtin_ops:  # [B, T_o, 2 filters]: real and imaginary parts
                both = tf.matmul(framed, kernels)
                real, imag = tf.split(both, 2, axis=-1)
                responses.append(tf.sqrt(real * real + imag * imag))
            else:
                spectrum = tf.signal.rfft(framed, [n_fft])
                responses.append(tf.abs(tf.matmul(spectrum, kernels)))  # [B, T_o, filters]
            if halve:
                y, lengths = self.halve(y, lengths)
        # Octaves come top-down; bins go bottom-up, each trimmed to the frames.
        bins = tf.concat(responses[::-1], axis=-1)
        bins = bins[:, :, bins.shape[-1] - self.n_bins :]
        return bins * self.inverse_sqrt_lengths


def time_domain_kernels(kernels: np.ndarray, n_fft: int) -> np.ndarray:
    """[n_fft // 2 + 1, F] complex FFT kernels -> [n_fft, 2F] real ones, [real
    | imaginary]: frames @ them = rfft(frames) @ kernels (the DFT is linear),
    so the CQT needs no complex tensor (LiteRT's builtin operators)."""
    n = np.arange(n_fft)[:, None]
    k = np.arange(n_fft // 2 + 1)[None, :]
    angle = 2 * np.pi * n * k / n_fft
    cos, sin = np.cos(angle), np.sin(angle)  # rfft: x @ cos - i x @ sin
    real = cos @ kernels.real + sin @ kernels.imag
    imag = cos @ kernels.imag - sin @ kernels.real
    return np.concatenate([real, imag], axis=1)
