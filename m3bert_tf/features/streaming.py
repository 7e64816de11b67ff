"""The features of audio of any length, in memory bounded by a block, not the track.

    with spill_file(path, extractor) as track:     # or spill_waveform(waveform, rate, ...)
        track.num_frames, track.duration_s
        track.mean, track.std                      # [324] raw per-channel statistics
        track.normalized(start, stop)              # [stop - start, 324] per-track CMVN
        track.raw(start, stop)                     # [stop - start, 324] before CMVN

Three passes, none holding more than a block (BLOCK_FRAMES frames, 47.6 s)
of audio, spectrograms or features:

1. The file is decoded and resampled as a stream (soundfile blocks, a soxr
   stream: the same samples as decoding it whole). Each block's frame-local
   parts (`FeatureExtractor.local_blocks`: chroma, mel power, CQT) are
   computed on the block's audio with CONTEXT_FRAMES frames of audio on each
   side (more than the CQT's longest filter, about 1 s, and the resampling
   filters between its octaves need), and only the block's own frames are
   kept, in a temporary file. The track's largest mel value is tracked.
2. The stored parts are read back a block at a time with 8 frames of
   context; MFCC (floored 80 dB under the track's largest mel value, as
   `librosa.power_to_db` floors the whole track) and its delta are finished,
   the 324-dim raw features go to a second temporary file, and the
   per-channel mean and variance are accumulated (Chan's pairwise merge, in
   float64).
3. The caller reads any frame range back, raw or normalized with the
   track's statistics.

The result equals `FeatureExtractor()(whole waveform)`: exactly for a track
of one block; beyond, up to float32 noise (the resamplers see other edges):
on a 150 s test track the features differ by 1e-5 on average and by at most
0.05 outside its -80 dB passage, where the log-CQT of near-zero values
(ln(10 S + 1e-6) near its floor) differs by up to 0.6 (tests/test_streaming.py).
"""

import contextlib
import os
import tempfile
import warnings

import numpy as np

from m3bert_tf import schema
from m3bert_tf.features import audio as audio_lib
from m3bert_tf.features import frames as frames_lib
from m3bert_tf.features.samples import BLOCK_FRAMES, file_samples, waveform_samples
from m3bert_tf.io import storage

CONTEXT_FRAMES = 96  # frames of audio on each side of a block (2.2 s)
FINISH_CONTEXT = 8  # frames of context for the delta (width 9 needs 4)
LOCAL_DIMS = (
    frames_lib.N_CHROMA + frames_lib.N_MELS + frames_lib.N_CQT
)  # chroma | mel power | cqt, as stored between the passes
HOP = schema.HOP_LENGTH


class _FrameFile:
    """[num_frames, dims] float32 rows in a temporary file.

    Unnamed (gone when closed) unless `named`: then `path` can be handed to
    another process (`SpilledTrack.detach`), and closing deletes it.
    """

    def __init__(self, dims: int, directory: str | None, named: bool = False, path=None):
        self.dims = dims
        self.path = path
        # Where a failed write happened, for its message.
        self.where = path or directory or tempfile.gettempdir()
        if path is not None:
            self.file = open(path, "rb")
        else:
            with storage.writing(self.where):
                if named:
                    self.file = tempfile.NamedTemporaryFile(
                        dir=directory, prefix=".features-", suffix=storage.TMP_SUFFIX,
                        delete=False,
                    )  # fmt: skip
                    self.path = self.where = self.file.name
                else:
                    self.file = tempfile.TemporaryFile(dir=directory)
        size = os.path.getsize(path) if path is not None else 0
        if size % (dims * 4):
            raise OSError(
                f"{path}: {size} bytes is not a whole number of {dims}-dim frames"
            )
        self.num_frames = size // (dims * 4)

    def append(self, rows: np.ndarray) -> None:
        """Appends [n, dims] rows; every byte is written or `OutputError` is
        raised (a full disk's short write is never counted as frames)."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        offset = self.num_frames * self.dims * 4
        storage.pwrite_all(self.file.fileno(), rows.tobytes(), offset, self.where)
        self.num_frames += len(rows)

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(stop, self.num_frames)
        count = max(0, stop - start) * self.dims
        data = os.pread(self.file.fileno(), count * 4, start * self.dims * 4)
        if len(data) != count * 4:
            raise OSError(
                f"{self.where}: read {len(data)} of {count * 4} bytes of frames "
                f"{start}..{stop} (the file was cut short)"
            )
        return np.frombuffer(data, dtype=np.float32).reshape(-1, self.dims)

    def close(self, delete: bool = True) -> None:
        self.file.close()
        if delete and self.path is not None and os.path.exists(self.path):
            os.remove(self.path)


class SpilledTrack:
    """A track's raw features in a temporary file, with its statistics.

    Attributes:
      name: the file (or caller's name) the features came from, for messages.
      num_frames: T, frames of the whole track (1 + num_samples // 1024).
      duration_s: seconds of audio.
      peak: largest absolute sample value.
      mean, std: [324] float64 raw per-channel statistics over the track.
    """

    def __init__(self, name, features: _FrameFile, num_samples, peak, mean, std):
        self.name = name
        self._features = features
        self.num_frames = features.num_frames
        self.duration_s = num_samples / schema.SAMPLE_RATE
        self.peak = peak
        self.mean = mean
        self.std = std

    def raw(self, start: int, stop: int) -> np.ndarray:
        """[n, 324] float32 features of frames [start, stop) before normalization."""
        return self._features.read(start, stop)

    def normalized(self, start: int, stop: int) -> np.ndarray:
        """[n, 324] float32 per-track CMVN'd frames [start, stop) (as bin/extract stores)."""
        return frames_lib.apply_cmvn(self.raw(start, stop), self.mean, self.std)

    def close(self) -> None:
        """Deletes the temporary file."""
        self._features.close()

    def detach(self) -> dict:
        """Closes without deleting (spilled with `named=True`) and returns what
        `attach` needs in another process, which then owns the file."""
        if self._features.path is None:
            raise ValueError("only a track spilled with named=True can be detached")
        self._features.close(delete=False)
        return {
            "name": self.name, "path": self._features.path, "peak": self.peak,
            "num_samples": round(self.duration_s * schema.SAMPLE_RATE),
            "mean": self.mean, "std": self.std,
        }  # fmt: skip

    @classmethod
    def attach(cls, detached: dict) -> "SpilledTrack":
        features = _FrameFile(schema.NUM_FEATURES, None, path=detached["path"])
        return cls(
            detached["name"], features, detached["num_samples"], detached["peak"],
            detached["mean"], detached["std"],
        )  # fmt: skip

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def spill(
    samples,
    extractor: frames_lib.FeatureExtractor,
    name: str,
    min_duration: float = 0.0,
    reject_silent: bool = False,
    directory: str | None = None,
    named: bool = False,
) -> SpilledTrack:
    """Featurizes a stream of 44.1 kHz pieces (`file_samples`, `waveform_samples`).

    Args:
      name: what messages call the audio (its path).
      min_duration: seconds; shorter audio raises AudioError.
      reject_silent: raise AudioError for a peak under `audio.SILENCE_PEAK`.
      directory: where the temporary files go (default: the system's).
      named: keep the features in a named file, so that the track can be
        `detach`ed and handed to another process.

    Raises:
      AudioError: NaN or infinite samples, too short (also: under 9 frames,
        the delta's width), silent when `reject_silent`.
    """
    local = _FrameFile(LOCAL_DIMS, directory)
    try:
        num_samples, peak, db_max = _local_pass(samples, extractor, local, name)
        duration = num_samples / schema.SAMPLE_RATE
        if duration < min_duration:
            raise audio_lib.AudioError(
                f"{name}: too short ({duration:.2f} s < min_duration {min_duration:g} s)"
            )
        if local.num_frames < frames_lib.DELTA_WIDTH:
            raise audio_lib.AudioError(
                f"{name}: too short ({duration:.3f} s: under {frames_lib.DELTA_WIDTH} frames)"
            )
        if reject_silent and peak < audio_lib.SILENCE_PEAK:
            raise audio_lib.AudioError(
                f"{name}: silent (peak {peak:.1e} < {audio_lib.SILENCE_PEAK:g})"
            )
        features = _FrameFile(schema.NUM_FEATURES, directory, named=named)
        try:
            mean, std = _finish_pass(local, features, db_max)
        except BaseException:
            features.close()
            raise
    finally:
        local.close()
    return SpilledTrack(name, features, num_samples, peak, mean, std)


def _local_pass(samples, extractor, out: _FrameFile, name: str):
    """Pass 1: frame-local parts of every block -> `out`; (samples, peak, dB max)."""
    buffer = np.zeros(0, np.float32)
    buffer_start = 0  # sample index of buffer[0], a multiple of HOP
    next_frame = 0
    num_samples, peak, mel_max = 0, 0.0, 0.0

    def compute(stop_sample: int | None) -> None:
        nonlocal next_frame, mel_max
        segment_start = max(0, next_frame - CONTEXT_FRAMES)
        lo = segment_start * HOP - buffer_start
        hi = None if stop_sample is None else stop_sample - buffer_start
        with warnings.catch_warnings():
            # A clip shorter than the CQT's low-octave filters (~1 s) is padded
            # as librosa documents; its warning (from chroma_cqt, the authors
            # set) would repeat for every clip.
            warnings.filterwarnings("ignore", message="n_fft=.* is too large")
            local = extractor.local_blocks(buffer[lo:hi])
        rows = np.concatenate([local["chroma"], local["mel_power"], local["cqt"]], axis=1)
        offset = next_frame - segment_start
        keep = (
            rows[offset:] if stop_sample is None else rows[offset : offset + BLOCK_FRAMES]
        )
        mel_max = max(
            mel_max, float(keep[:, frames_lib.N_CHROMA : -frames_lib.N_CQT].max())
        )
        out.append(keep)
        next_frame += len(keep)

    for piece in samples:
        if len(piece):
            # NaN and infinity survive max and min: one check of the extremes.
            piece_peak = max(float(np.max(piece)), -float(np.min(piece)))
            if not np.isfinite(piece_peak):
                raise audio_lib.AudioError(f"{name}: samples contain NaN or infinity")
            peak = max(peak, piece_peak)
        num_samples += len(piece)
        buffer = np.concatenate([buffer, piece]) if len(buffer) else piece
        while (
            buffer_start + len(buffer) >= (next_frame + BLOCK_FRAMES + CONTEXT_FRAMES) * HOP
        ):
            compute((next_frame + BLOCK_FRAMES + CONTEXT_FRAMES) * HOP)
            drop = max(0, next_frame - CONTEXT_FRAMES) * HOP - buffer_start
            buffer, buffer_start = buffer[drop:], buffer_start + drop
    if num_samples == 0:
        raise audio_lib.AudioError(f"{name}: no audio samples")
    compute(None)
    return num_samples, peak, frames_lib.mel_db_max(np.array([mel_max]))


def _finish_pass(local: _FrameFile, out: _FrameFile, db_max: float):
    """Pass 2: MFCC and delta with the track's dB floor -> `out`; (mean, std) float64."""
    n = local.num_frames
    count, mean, m2 = 0, np.zeros(schema.NUM_FEATURES), np.zeros(schema.NUM_FEATURES)
    chroma_end = frames_lib.N_CHROMA
    mel_end = chroma_end + frames_lib.N_MELS
    for start in range(0, n, BLOCK_FRAMES):
        stop = min(n, start + BLOCK_FRAMES)
        lo, hi = max(0, start - FINISH_CONTEXT), min(n, stop + FINISH_CONTEXT)
        rows = local.read(lo, hi)
        parts = {
            "chroma": rows[:, :chroma_end],
            "mel_power": rows[:, chroma_end:mel_end],
            "cqt": rows[:, mel_end:],
        }
        blocks = frames_lib.FeatureExtractor.finish_blocks(parts, db_max)
        features = frames_lib.stack_blocks(blocks)
        block = features[start - lo : stop - lo]
        out.append(block)
        # Chan et al.'s pairwise update of the mean and the sum of squares.
        x = block.astype(np.float64)
        block_mean = x.mean(axis=0)
        x -= block_mean
        block_m2 = np.einsum("ij,ij->j", x, x)
        total = count + len(x)
        delta = block_mean - mean
        mean = mean + delta * (len(x) / total)
        m2 = m2 + block_m2 + delta**2 * (count * len(x) / total)
        count = total
    return mean, np.sqrt(m2 / count)


@contextlib.contextmanager
def spill_file(path: str, extractor, **kwargs):
    """`spill` of an audio file, closed (temporary files deleted) on exit."""
    track = spill(file_samples(path), extractor, path, **kwargs)
    try:
        yield track
    finally:
        track.close()


@contextlib.contextmanager
def spill_waveform(
    waveform: np.ndarray, sample_rate: int, extractor, name="waveform", **kwargs
):
    """`spill` of an in-memory [num_samples] waveform at `sample_rate` Hz."""
    track = spill(waveform_samples(waveform, sample_rate), extractor, name, **kwargs)
    try:
        yield track
    finally:
        track.close()
