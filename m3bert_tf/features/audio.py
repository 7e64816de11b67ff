"""Decoding audio files to 44.1 kHz mono float32.

Any format libsndfile reads (wav, flac, ogg/vorbis, mp3, au, aiff), any sample
rate, any channel count, integer or float samples. Channels are averaged to
mono; resampling uses soxr at high quality ("HQ").
"""

import numpy as np
import soundfile
import soxr

from m3bert_tf import schema

# Peak amplitude under which a file counts as silent (-80 dBFS).
SILENCE_PEAK = 1e-4


class AudioError(ValueError):
    """A file that cannot be used: unreadable, empty, silent or too short.

    The message names the file and the reason, in one line.
    """


def open_sound(path: str) -> soundfile.SoundFile:
    """`path` opened for decoding: a local file, or any URL `storage` reads
    (gs://, s3://, file://...) through a file object.

    Raises:
      AudioError: missing or empty (0 bytes) file.
      Exception: whatever libsndfile raises for data it cannot decode.
    """
    from m3bert_tf.io import storage

    try:
        size = storage.size(path)
    except OSError as e:
        raise AudioError(f"{path}: cannot open ({e.strerror or e})") from None
    if size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    if not storage.is_url(path):
        return soundfile.SoundFile(path)
    handle = storage.open(path, "rb")
    try:
        return soundfile.SoundFile(handle)
    except Exception:
        handle.close()
        raise


def load_audio(path: str, sample_rate: int = schema.SAMPLE_RATE) -> np.ndarray:
    """Reads `path` as mono float32 at `sample_rate` Hz.

    Returns:
      [num_samples] float32, nominally in [-1, 1].

    Raises:
      AudioError: the file is missing, zero bytes, not decodable or holds no
        samples.
    """
    try:
        with open_sound(path) as sound:
            rate = sound.samplerate
            audio = sound.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:  # libsndfile raises several types for bad data
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioError(f"{path}: not decodable audio ({reason})") from None
    if audio.shape[0] == 0:
        raise AudioError(f"{path}: no audio samples")
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def check_usable(
    path: str, waveform: np.ndarray, sample_rate: int, min_duration: float
) -> None:
    """Raises AudioError if `waveform` is silent or shorter than `min_duration` s."""
    duration = len(waveform) / sample_rate
    if duration < min_duration:
        raise AudioError(
            f"{path}: too short ({duration:.2f} s < min_duration {min_duration:g} s)"
        )
    if not np.all(np.isfinite(waveform)):
        raise AudioError(f"{path}: samples contain NaN or infinity")
    peak = float(np.max(np.abs(waveform)))
    if peak < SILENCE_PEAK:
        raise AudioError(f"{path}: silent (peak {peak:.1e} < {SILENCE_PEAK:g})")
