"""Waveforms -> the 324 features, normalized as a model was trained, in TensorFlow.

Mirrors `features.frames.FeatureExtractor` (the librosa reference) step by
step, batched, on zero-padded rows with their lengths:

    waveform [B, S] float32 at 44.1 kHz, lengths [B] int32 (real samples)
      -> power STFT [B, T, 1025] (Hamming 2048 periodic, hop 1024, centered
         with 1024 zeros each side, as librosa.stft(center=True) pads)
      -> chroma 12 (max-normalized per frame) | mfcc 20 (power_to_db floored
         80 dB under the row's loudest mel value, DCT-II ortho) | delta_mfcc 20
         (Savitzky-Golay width 9, edges as librosa's "interp") | mel 128 |
         cqt 144 (`cqt.TFConstantQ`); mel and cqt as ln(10 S + 1e-6)
      -> CMVN over each row's real frames ("track"), the stored global
         statistics ("global") or none
    T = 1 + S // 1024; a row's frame length is 1 + lengths // 1024, and its
    frames past that are zeros.
"""

import numpy as np
import scipy.fft
import tensorflow as tf

from m3bert_tf import schema
from m3bert_tf.data.normalization import MODES, global_scale, model_inputs
from m3bert_tf.features import frames as reference
from m3bert_tf.frontend.cqt import TFConstantQ
from m3bert_tf.frontend.resample import Resampler


class FrontEnd(tf.Module):
    """The feature computation of `features.frames` as TensorFlow ops.

    Args:
      config: a `features.frames.FeatureConfig` ("paper" feature set).
      normalization: "track" (per-row CMVN over its real frames), "global"
        (with `stats`) or "none" (raw features).
      stats: the manifest's global statistics ({"mean", "std"}) for "global".
      input_rate: Hz of the waveforms it is given; other than 44100, they
        are resampled first (`resample.Resampler`), lengths in input samples.
    """

    def __init__(self, config=reference.FeatureConfig(), normalization="track", stats=None,
                 input_rate: int = schema.SAMPLE_RATE, builtin_ops: bool = False):  # fmt: skip
        super().__init__(name="frontend")
        self.builtin_ops = builtin_ops
        self.input_rate = int(input_rate)
        self.resample = Resampler(self.input_rate)
        if not config.variant.tf_frontend:
            raise ValueError(
                f"feature_set {config.feature_set!r} ({config.variant.what}): the "
                "TensorFlow front end does not compute it"
            )
        if normalization not in MODES:
            raise ValueError(f"normalization must be one of {MODES}")
        librosa_side = reference.FeatureExtractor(config)
        self.normalization = normalization
        self.window = tf.constant(librosa_side.window)  # periodic Hamming, [2048]
        self.mel_basis = tf.constant(librosa_side.mel_basis.T.astype(np.float32))
        self.chroma_basis = tf.constant(librosa_side.chroma_basis.T.astype(np.float32))
        self.cqt = TFConstantQ(librosa_side.cqt, builtin_ops)
        # DCT-II (orthonormal) as a [128, 20] matrix: tf.signal.dct is complex inside.
        self.dct = tf.constant(
            scipy.fft.dct(np.eye(reference.N_MELS), type=2, norm="ortho")[:, : reference.N_MFCC]
            .astype(np.float32)
        )  # fmt: skip
        self.delta = tf.constant(
            reference.delta_weights().astype(np.float32)[:, None, None]
        )
        if normalization == "global" and stats is None:
            raise ValueError("normalization 'global' needs the manifest's statistics")
        self.scale = global_scale(stats) if stats is not None else None

    def power_spectrogram(self, waveform):
        """[B, S] -> [B, T, 1025] power."""
        half = schema.N_FFT // 2
        padded = tf.pad(waveform, [[0, 0], [half, half]])
        stft = tf.signal.stft(
            padded, schema.N_FFT, schema.HOP_LENGTH, schema.N_FFT,
            window_fn=lambda n, dtype: self.window,
        )  # fmt: skip
        return tf.square(tf.math.real(stft)) + tf.square(tf.math.imag(stft))

    def _delta(self, mfcc, frame_lengths):
        """[B, T, 20] -> its delta over time, width 9, of each row's real
        frames (at least 9), edges as librosa.feature.delta's "interp": the
        first and last 4 frames of a row take the slope of its first and last
        full window."""
        half = reference.DELTA_WIDTH // 2
        b, t, c = tf.shape(mfcc)[0], tf.shape(mfcc)[1], mfcc.shape[-1]
        x = tf.reshape(tf.transpose(mfcc, [0, 2, 1]), [-1, t, 1])  # [B*C, T, 1]
        inner = tf.squeeze(tf.nn.conv1d(x, self.delta, 1, "VALID"), -1)  # frame i + 4 at i
        inner = tf.transpose(tf.reshape(inner, [b, c, t - 2 * half]), [0, 2, 1])
        last = tf.expand_dims(tf.maximum(frame_lengths - 2 * half - 1, 0), -1)  # [B, 1]
        index = tf.minimum(tf.maximum(tf.expand_dims(tf.range(t), 0) - half, 0), last)
        return tf.gather(inner, index, batch_dims=1)

    def raw(self, waveform, lengths):
        """([B, T, 324] float32 features before normalization, [B] frame lengths)."""
        waveform, lengths = self.resample(waveform, lengths)
        frame_lengths = 1 + lengths // schema.HOP_LENGTH
        power = self.power_spectrogram(waveform)
        t = tf.shape(power)[1]
        real = tf.sequence_mask(frame_lengths, t)  # [B, T]
        chroma = tf.matmul(power, self.chroma_basis)
        peak = tf.reduce_max(tf.abs(chroma), -1, keepdims=True)
        tiny = np.finfo(np.float32).tiny
        chroma = tf.where(peak > tiny, chroma / tf.maximum(peak, tiny), chroma)
        mel_power = tf.matmul(power, self.mel_basis)
        mel_db = 10.0 * tf.math.log(tf.maximum(mel_power, 1e-10)) / np.log(10.0)
        real3 = tf.expand_dims(real, -1)  # [B, T, 1] (no new-axis slice: LiteRT)
        loudest = tf.reduce_max(
            tf.where(real3, mel_db, -np.inf), axis=[1, 2], keepdims=True
        )
        mel_db = tf.maximum(mel_db, loudest - reference.TOP_DB)
        if self.builtin_ops:
            mfcc = tf.matmul(mel_db, self.dct)
        else:
            mfcc = tf.signal.dct(mel_db, type=2, norm="ortho")[:, :, : reference.N_MFCC]
        cqt = self.cqt(waveform, lengths)[:, :t]
        features = tf.concat(
            [
                chroma, mfcc, self._delta(mfcc, frame_lengths), tf.math.log(10.0 * mel_power + 1e-6),
                tf.math.log(10.0 * cqt + 1e-6),
            ],
            axis=-1,
        )  # fmt: skip
        features = tf.where(real3, features, 0.0)
        return features, frame_lengths

    def __call__(self, waveform, lengths):
        """([B, T, 324] model inputs, normalized as configured, [B] frame lengths)."""
        features, frame_lengths = self.raw(waveform, lengths)
        real = tf.expand_dims(tf.sequence_mask(frame_lengths, tf.shape(features)[1]), -1)
        inputs = model_inputs(
            self.normalization, features, lambda: self._cmvn(features, frame_lengths, real),
            self.scale,
        )  # fmt: skip
        return tf.where(real, inputs, 0.0), frame_lengths

    def _cmvn(self, features, frame_lengths, real):
        """[B, T, 324] per-row CMVN over the real frames (float64 sums, as
        extraction normalizes a track; float32 with `builtin_ops`: LiteRT has
        no float64 arithmetic); flat channels and padding are 0."""
        dtype = tf.float32 if self.builtin_ops else tf.float64
        x = tf.cast(features, dtype)
        count = tf.reshape(tf.cast(frame_lengths, dtype), [-1, 1, 1])
        weights = tf.cast(real, dtype)
        mean = tf.reduce_sum(x * weights, 1, keepdims=True) / count
        var = tf.reduce_sum(tf.square((x - mean) * weights), 1, keepdims=True) / count
        std = tf.sqrt(var)
        flat = std < reference.CMVN_MIN_STD
        out = (x - mean) / tf.maximum(std, reference.CMVN_MIN_STD)
        out = tf.where(flat | ~real, tf.zeros_like(out), out)
        return tf.cast(out, tf.float32)
