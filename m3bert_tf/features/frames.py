"""The 324-dim frame features, per-track CMVN and the 30 s chunking rule.

    waveform [num_samples] float32 at 44.1 kHz
      -> power STFT [T, 1025] (Hamming 2048, hop 1024, centered), computed once
      -> chroma 12 | mfcc 20 | delta_mfcc 20 | mel 128 | cqt 144   -> [T, 324]
      -> CMVN over the whole track -> chunks of at most 1294 frames -> float16

The feature sets:
- "paper" (default): the CQT block is a 144-bin CQT magnitude, 24 bins per
  octave from C1 (32.70 Hz to 2.09 kHz), as docs/contract.md's table says.
- "authors": the authors' public code instead used a 144-bin chroma-folded
  CQT (librosa.feature.chroma_cqt with n_chroma=144 over 7 octaves at 144
  bins per octave); offered for reproducing their numbers.
Both take ln(10 * S + 1e-6) of the mel power and of the CQT block.

Tuning: chroma and CQT assume A440 (tuning 0.0, librosa's CQT default) rather
than estimating a per-track tuning. The estimate (librosa's chroma default)
would cost a third of the extraction time and would misalign the chroma with
the CQT block, which never estimates it.
"""

import numpy as np

from m3bert_tf import schema
from m3bert_tf.features import banks, spectrum
from m3bert_tf.features.banks import CQT_BINS_PER_OCTAVE, CQT_FMIN  # noqa: F401 (re-exported)
from m3bert_tf.features.config import FEATURE_SETS, FeatureConfig  # noqa: F401 (re-exported)
from m3bert_tf.features.cqt import ConstantQ

N_MELS = schema.BLOCK["mel"].dim
N_MFCC = schema.BLOCK["mfcc"].dim
N_CHROMA = schema.BLOCK["chroma"].dim
N_CQT = schema.BLOCK["cqt"].dim
DELTA_WIDTH = 9  # librosa.feature.delta's default
CMVN_MIN_STD = 1e-5  # channels flatter than this are set to 0 (their mean)
TOP_DB = 80.0  # librosa.power_to_db's default floor under the loudest value
AMIN = 1e-10  # librosa.power_to_db's floor on power


def mel_db_max(mel_power: np.ndarray) -> float:
    """The largest value of `librosa.power_to_db(mel_power)` (ref 1.0, amin 1e-10)."""
    return float(10.0 * np.log10(max(float(np.max(mel_power)), AMIN)))


def log_compress(power: np.ndarray) -> np.ndarray:
    """The paper's log: ln(10 * S + 1e-6)."""
    return np.log(10.0 * power + 1e-6)


def delta_weights(width: int = DELTA_WIDTH) -> np.ndarray:
    """[width] float64 weights of the Savitzky-Golay first derivative
    (polynomial order 1) that librosa.feature.delta applies: k / sum(k^2),
    k = -width // 2 ... width // 2."""
    half = width // 2
    k = np.arange(-half, half + 1, dtype=np.float64)
    return k / (k * k).sum()


def delta(x: np.ndarray, width: int = DELTA_WIDTH) -> np.ndarray:
    """[T, C] -> [T, C] float32 `librosa.feature.delta(x.T, width).T`
    (mode "interp"): the local slope over `width` frames; the first and last
    width // 2 frames take the slope of the first and last full window (the
    derivative of the line fitted there). T >= width."""
    half = width // 2
    x64 = np.asarray(x, np.float64)
    num_frames = len(x64)
    inner = np.zeros((num_frames - 2 * half, x64.shape[1]))
    for k, w in enumerate(delta_weights(width)):
        if w:
            inner += w * x64[k : k + num_frames - 2 * half]
    out = np.empty(x64.shape, np.float32)
    out[half:-half] = inner
    out[:half] = inner[0]
    out[-half:] = inner[-1]
    return out


def dct_matrix(n: int, k: int) -> np.ndarray:
    """[n, k] float64: x @ D is the first k coefficients of the orthonormal
    DCT-II of x's rows (scipy.fft.dct(x, type=2, norm="ortho")[:, :k])."""
    rows = np.arange(n)[:, None] + 0.5
    d = np.sqrt(2.0 / n) * np.cos(np.pi / n * rows * np.arange(k)[None, :])
    d[:, 0] /= np.sqrt(2.0)
    return d


DCT_MFCC = dct_matrix(N_MELS, N_MFCC)


def mel_bands(mel_basis: np.ndarray, size: int = 16) -> list:
    """The mel bank as products over the FFT bins it uses: [(first filter,
    stop, first bin, stop bin, [bins, filters] float32 weights)] for groups of
    `size` adjacent filters. Each filter spans a few bins (1.5 % of the bank
    is nonzero): 0.7 ms for a 30 s clip against 2 ms for the dense product."""
    bands = []
    for first in range(0, len(mel_basis), size):
        rows = mel_basis[first : first + size]
        used = np.flatnonzero(rows.any(axis=0))
        lo, hi = (used[0], used[-1] + 1) if len(used) else (0, 0)
        weights = np.ascontiguousarray(rows[:, lo:hi].T, dtype=np.float32)
        bands.append((first, first + len(rows), lo, hi, weights))
    return bands


class FeatureExtractor:
    """Computes [num_frames, 324] float32 features of a 44.1 kHz waveform.

    Build one per process: its window, filter banks and CQT kernels come from
    `banks.load` (built with librosa once per environment, then read from
    disk) and are reused for every track.
    """

    def __init__(self, config: FeatureConfig = FeatureConfig()):
        import scipy.fft  # noqa: F401 (spectrum's FFT, 0.1 s: loaded with the extractor)

        self.config = config
        bank = banks.load(config)
        self.window = bank["window"]  # [2048] float32
        self.mel_basis = bank["mel"]  # [128, 1025] float32
        self.chroma_basis = bank["chroma"]  # [12, 1025] float32
        self._mel_bands = mel_bands(self.mel_basis)
        self._chroma_t = np.ascontiguousarray(self.chroma_basis.T)
        if config.variant.cqt_kernels:
            self.cqt = ConstantQ(banks.cqt_part(bank))
        else:  # librosa's chroma_cqt and its libraries, loaded now, not at a first track
            import librosa

            self._chroma_cqt = librosa.feature.chroma_cqt

    def local_blocks(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
        """The parts of the features that depend only on nearby audio.

        Returns {"chroma": [T, 12] (max-normalized per frame), "mel_power":
        [T, 128] (linear power), "cqt": [T, 144] (magnitude, not
        log-compressed)}, float32. Everything else (`finish_blocks`) needs the
        whole track: the MFCC's dB floor is 80 dB under the track's loudest
        mel value.
        """
        frames = spectrum.frame_rows(waveform, schema.N_FFT, schema.HOP_LENGTH)
        chroma = np.empty((len(frames), N_CHROMA), np.float32)
        mel_power = np.empty((len(frames), N_MELS), np.float32)
        for start, stop in spectrum.blocks(len(frames)):
            power = spectrum.power(frames[start:stop], self.window)
            chroma[start:stop] = power @ self._chroma_t
            for first, last, lo, hi, weights in self._mel_bands:
                mel_power[start:stop, first:last] = power[:, lo:hi] @ weights
        # librosa.feature.chroma_stft(S=power): the chroma filters, then each
        # frame divided by its largest value (left as is when that is ~0).
        peak = np.max(np.abs(chroma), axis=1, keepdims=True)
        chroma /= np.where(peak < np.finfo(np.float32).tiny, 1.0, peak)
        if self.config.variant.cqt_kernels:
            cqt = self.cqt(waveform).T
        else:
            cqt = self._chroma_cqt(
                y=waveform, sr=schema.SAMPLE_RATE, hop_length=schema.HOP_LENGTH,
                fmin=CQT_FMIN, n_chroma=N_CQT, bins_per_octave=N_CQT,
                tuning=self.config.tuning,
            ).T  # fmt: skip
        return {"chroma": chroma, "mel_power": mel_power, "cqt": cqt}

    @staticmethod
    def finish_blocks(local: dict[str, np.ndarray], db_max: float) -> dict[str, np.ndarray]:
        """`local_blocks` output -> every block before normalization, [T, dim] each.

        Args:
          local: the frame-local parts of `local_blocks`, T >= 9 frames (the
            delta's width).
          db_max: the track's largest mel power in dB (`mel_db_max`); the MFCC
            input is floored 80 dB below it, as `librosa.power_to_db` does.
        """
        # librosa.power_to_db(ref=1.0, top_db=None), then the track's floor.
        mel_db = 10.0 * np.log10(np.maximum(AMIN, local["mel_power"]))
        mel_db = np.maximum(mel_db, db_max - TOP_DB)
        # librosa.feature.mfcc(S=mel_db): DCT-II, orthonormal, first 20 (in float64).
        mfcc = (mel_db.astype(np.float64) @ DCT_MFCC).astype(np.float32)
        return {
            "chroma": local["chroma"],
            "mfcc": mfcc,
            "delta_mfcc": delta(mfcc),
            "mel": log_compress(local["mel_power"]),
            "cqt": log_compress(local["cqt"]),
        }

    def blocks(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
        """Every block before normalization, each [num_frames, dim] float32.

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
    """{block name: [T, dim]} -> [T, 324] float32 in the schema's channel order
    (T: the shortest block's length)."""
    num_frames = min(len(b) for b in blocks.values())
    out = np.empty((num_frames, schema.NUM_FEATURES), dtype=np.float32)
    for block in schema.BLOCKS:
        out[:, block.start : block.stop] = blocks[block.name][:num_frames]
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
    out = np.array(features, np.float64)
    std = np.asarray(std, np.float64)
    out -= np.asarray(mean, np.float64)
    out /= np.maximum(std, CMVN_MIN_STD)
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
