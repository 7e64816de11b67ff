"""The 324-dim frame features, per-track CMVN and the 30 s chunking rule.

    waveform [num_samples] float32 at 44.1 kHz
      -> power STFT [1025, T] (Hamming 2048, hop 1024, centered), computed once
      -> chroma 12 | mfcc 20 | delta_mfcc 20 | mel 128 | cqt 144   -> [T, 324]
      -> CMVN over the whole track -> chunks of at most 1294 frames -> float16

The feature sets:
- "paper" (default): the CQT block is a 144-bin CQT magnitude, 24 bins per
  octave from C1 (32.70 Hz to 2.09 kHz), as DESIGN.md's table says.
- "authors": the authors' public code instead used a 144-bin chroma-folded
  CQT (librosa.feature.chroma_cqt with n_chroma=144 over 7 octaves at 144
  bins per octave); offered for reproducing their numbers.
Both take ln(10 * S + 1e-6) of the mel power and of the CQT block.

Tuning: chroma and CQT assume A440 (tuning 0.0, librosa's CQT default) rather
than estimating a per-track tuning. The estimate (librosa's chroma default)
would cost a third of the extraction time and would misalign the chroma with
the CQT block, which never estimates it.
"""

import librosa
import numpy as np

from m3bert_tf import schema
from m3bert_tf.features.config import FEATURE_SETS, FeatureConfig  # noqa: F401 (re-exported)
from m3bert_tf.features.cqt import ConstantQ

N_MELS = schema.BLOCK["mel"].dim
N_MFCC = schema.BLOCK["mfcc"].dim
N_CHROMA = schema.BLOCK["chroma"].dim
N_CQT = schema.BLOCK["cqt"].dim
CQT_FMIN = 32.70319566257483  # C1 in Hz
CQT_BINS_PER_OCTAVE = 24
DELTA_WIDTH = 9  # librosa.feature.delta's default
CMVN_MIN_STD = 1e-5  # channels flatter than this are set to 0 (their mean)
TOP_DB = 80.0  # librosa.power_to_db's default floor under the loudest value


def mel_db_max(mel_power: np.ndarray) -> float:
    """The largest value of `librosa.power_to_db(mel_power)` (ref 1.0, amin 1e-10)."""
    return float(10.0 * np.log10(max(float(np.max(mel_power)), 1e-10)))


def log_compress(power: np.ndarray) -> np.ndarray:
    """The paper's log: ln(10 * S + 1e-6)."""
    return np.log(10.0 * power + 1e-6)


class FeatureExtractor:
    """Computes [num_frames, 324] float32 features of a 44.1 kHz waveform.

    Build one per process: the mel, chroma and CQT filter banks are made once
    and reused for every track.
    """

    def __init__(self, config: FeatureConfig = FeatureConfig()):
        self.config = config
        sr = schema.SAMPLE_RATE
        self.mel_basis = librosa.filters.mel(sr=sr, n_fft=schema.N_FFT, n_mels=N_MELS)
        self.chroma_basis = librosa.filters.chroma(
            sr=sr, n_fft=schema.N_FFT, n_chroma=N_CHROMA, tuning=config.tuning
        )
        if config.feature_set == "paper":
            self.cqt = ConstantQ(
                sr, schema.HOP_LENGTH, CQT_FMIN, N_CQT, CQT_BINS_PER_OCTAVE,
                tuning=config.tuning,
            )  # fmt: skip

    def power_spectrogram(self, waveform: np.ndarray) -> np.ndarray:
        """[num_samples] -> [1025, num_frames] power STFT (float32)."""
        spec = librosa.stft(
            waveform, n_fft=schema.N_FFT, hop_length=schema.HOP_LENGTH,
            window=schema.WINDOW, center=True,
        )  # fmt: skip
        return np.abs(spec) ** 2

    def local_blocks(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
        """The parts of the features that depend only on nearby audio.

        Returns {"chroma": [12, T], "mel_power": [128, T] (linear power),
        "cqt": [144, T] (magnitude, not log-compressed)}, float32. Everything
        else (`finish_blocks`) needs the whole track: the MFCC's dB floor is
        80 dB under the track's loudest mel value.
        """
        power = self.power_spectrogram(waveform)
        # chroma_stft(S=power) with the cached basis: the same normalized chroma.
        chroma = librosa.util.normalize(self.chroma_basis @ power, norm=np.inf, axis=0)
        if self.config.feature_set == "paper":
            cqt = self.cqt(waveform)
        else:
            cqt = librosa.feature.chroma_cqt(
                y=waveform, sr=schema.SAMPLE_RATE, hop_length=schema.HOP_LENGTH,
                fmin=CQT_FMIN, n_chroma=N_CQT, bins_per_octave=N_CQT,
                tuning=self.config.tuning,
            )  # fmt: skip
        return {"chroma": chroma, "mel_power": self.mel_basis @ power, "cqt": cqt}

    @staticmethod
    def finish_blocks(local: dict[str, np.ndarray], db_max: float) -> dict[str, np.ndarray]:
        """`local_blocks` output -> every block before normalization, [dim, T] each.

        Args:
          local: the frame-local parts of `local_blocks`, T >= 9 frames (the
            delta's width).
          db_max: the track's largest mel power in dB (`mel_db_max`); the MFCC
            input is floored 80 dB below it, as `librosa.power_to_db` does.
        """
        mel_db = librosa.power_to_db(local["mel_power"], top_db=None)
        mel_db = np.maximum(mel_db, db_max - TOP_DB)
        mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=N_MFCC)
        return {
            "chroma": local["chroma"],
            "mfcc": mfcc,
            "delta_mfcc": librosa.feature.delta(mfcc, width=DELTA_WIDTH),
            "mel": log_compress(local["mel_power"]),
            "cqt": log_compress(local["cqt"]),
        }

    def blocks(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
        """Every block before normalization, each [dim, num_frames] float32.

        chroma and mel are the librosa functions' outputs given the shared power
        STFT; mel and cqt are log-compressed (ln(10 S + 1e-6)).
        """
        local = self.local_blocks(waveform)
        return self.finish_blocks(local, mel_db_max(local["mel_power"]))

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        """[num_samples] float32 -> [num_frames, 324] float32, not normalized.

        num_frames = 1 + num_samples // 1024 (centered frames).
        """
        return stack_blocks(self.blocks(waveform))


def stack_blocks(blocks: dict[str, np.ndarray]) -> np.ndarray:
    """{block name: [dim, T]} -> [T, 324] float32 in the schema's channel order
    (T: the shortest block's length)."""
    num_frames = min(b.shape[1] for b in blocks.values())
    out = np.empty((num_frames, schema.NUM_FEATURES), dtype=np.float32)
    for block in schema.BLOCKS:
        out[:, block.start : block.stop] = blocks[block.name][:, :num_frames].T
    return out


def cmvn_with_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel mean/variance normalization over the whole track.

    [num_frames, C] -> ([num_frames, C] float32 with each channel at zero mean
    and unit variance (a constant channel becomes all zeros), the raw
    per-channel mean [C] and standard deviation [C], float32). Zero is the
    mean, so masking a value to zero sets it to the mean; normalized * std +
    mean gives the raw features back (records store both statistics).
    """
    x = features.astype(np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return apply_cmvn(x, mean, std), mean.astype(np.float32), std.astype(np.float32)


def apply_cmvn(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """[num_frames, C] raw -> float32 (x - mean) / std per channel, computed in
    float64; channels with std < CMVN_MIN_STD become 0."""
    x = np.asarray(features, np.float64)
    std = np.asarray(std, np.float64)
    out = (x - np.asarray(mean, np.float64)) / np.maximum(std, CMVN_MIN_STD)
    out[:, std < CMVN_MIN_STD] = 0.0
    return out.astype(np.float32)


def cmvn(features: np.ndarray) -> np.ndarray:
    """The normalized features of `cmvn_with_stats`."""
    return cmvn_with_stats(features)[0]


def chunk_bounds(num_frames: int) -> list[tuple[int, int]]:
    """The 30 s chunking rule as [(start, stop)] frame ranges.

    - at most 1294 frames (30 s): one chunk, the whole track;
    - up to 2 x 1294 frames (60 s): two halves without overlap (the first one
      frame longer when num_frames is odd);
    - longer: consecutive 1294-frame chunks; a last remainder of at least 647
      frames (15 s) is its own shorter chunk, a shorter one is dropped (merging
      it would give chunks over the model's 30 s maximum).
    """
    size = schema.CHUNK_FRAMES
    if num_frames <= 0:
        return []
    if num_frames <= size:
        return [(0, num_frames)]
    if num_frames <= 2 * size:
        half = (num_frames + 1) // 2
        return [(0, half), (half, num_frames)]
    full = num_frames // size
    bounds = [(i * size, (i + 1) * size) for i in range(full)]
    if num_frames - full * size >= schema.MIN_REMAINDER_FRAMES:
        bounds.append((full * size, num_frames))
    return bounds


def to_chunks(features: np.ndarray) -> list[np.ndarray]:
    """[num_frames, 324] float32 -> list of [chunk_frames, 324] float16 chunks."""
    return [
        features[start:stop].astype(np.float16)
        for start, stop in chunk_bounds(len(features))
    ]
