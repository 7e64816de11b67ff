"""Audio as a stream of consecutive mono float32 pieces at 44.1 kHz.

    for piece in file_samples(path): ...            # decoded a block at a time
    for piece in waveform_samples(y, rate): ...     # an array, in pieces

The same samples as `audio.load_audio` gives whole (channels averaged, soxr
"HQ"), so `streaming.spill` featurizes a track of any length in memory
bounded by a block.
"""

from collections.abc import Iterator

import numpy as np
import soxr

from m3bert_tf import schema
from m3bert_tf.features import audio as audio_lib

BLOCK_FRAMES = 2048  # frames a piece holds by default (47.6 s): streaming's block
HOP = schema.HOP_LENGTH


def file_samples(
    path: str, block_samples: int = BLOCK_FRAMES * HOP
) -> Iterator[np.ndarray]:
    """Yields `path` as consecutive mono float32 pieces at 44.1 kHz.

    The same samples as `audio.load_audio` (channels averaged, soxr "HQ"),
    decoded a block at a time.

    Raises:
      AudioError: missing, empty or undecodable file, or no samples.
    """
    try:
        sound = audio_lib.open_sound(path)
    except audio_lib.AudioError:
        raise
    except Exception as e:  # libsndfile raises several types for bad data
        raise audio_lib.AudioError(f"{path}: not decodable audio ({_reason(e)})") from None
    with sound:
        rate = sound.samplerate
        resample = _To44k(rate)
        read_frames = max(1, block_samples * rate // schema.SAMPLE_RATE)
        total = 0
        while True:
            try:
                data = sound.read(read_frames, dtype="float32", always_2d=True)
            except Exception as e:
                raise audio_lib.AudioError(
                    f"{path}: not decodable audio ({_reason(e)})"
                ) from None
            last = len(data) < read_frames
            total += len(data)
            mono = resample(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0], last)
            if len(mono):
                yield np.ascontiguousarray(mono, dtype=np.float32)
            if last:
                break
    if total == 0:
        raise audio_lib.AudioError(f"{path}: no audio samples")


def waveform_samples(
    waveform: np.ndarray, sample_rate: int, block_samples: int = BLOCK_FRAMES * HOP
) -> Iterator[np.ndarray]:
    """A [num_samples] waveform at `sample_rate` Hz as 44.1 kHz pieces."""
    sample_rate = schema.check_sample_rate(sample_rate)
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim != 1:
        raise ValueError(
            f"waveform must be [num_samples] (mono), got shape {waveform.shape}"
        )
    resample = _To44k(sample_rate)
    step = max(1, block_samples * sample_rate // schema.SAMPLE_RATE)
    for start in range(0, max(len(waveform), 1), step):
        piece = resample(waveform[start : start + step], start + step >= len(waveform))
        if len(piece):
            yield piece


class _To44k:
    """Consecutive float32 pieces at `rate` Hz -> 44.1 kHz, soxr "HQ" (as
    `audio.load_audio`): a signal that comes in one piece is resampled in one
    call, the same samples as a stream gives, without the stream's overhead."""

    def __init__(self, rate: int):
        self.rate = rate
        self.stream = None

    def __call__(self, piece: np.ndarray, last: bool) -> np.ndarray:
        if self.rate == schema.SAMPLE_RATE:
            return piece
        if last and self.stream is None:
            return soxr.resample(piece, self.rate, schema.SAMPLE_RATE, quality="HQ")
        if self.stream is None:
            self.stream = soxr.ResampleStream(
                self.rate, schema.SAMPLE_RATE, 1, dtype="float32", quality="HQ"
            )
        return self.stream.resample_chunk(piece, last=last)


def _reason(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
