"""The frame-feature layout and the TFRecord schema, written once.

Everything that touches a feature channel or a record key imports it from
here: the extractor, the shard writer and reader, the masking and the tests.

Frame layout (docs/contract.md, the paper's Table 1): 44.1 kHz mono, 2048-sample Hamming
window, hop 1024 samples (23.2 ms), centered frames; per frame the blocks
below, concatenated in this order.
"""

from typing import NamedTuple

# Feature-spec version: bump it whenever a change alters stored feature values
# (the manifest records it, and resuming into a directory of another version
# is refused).
# 2: labels as label/<task> float features; 3: track statistics in every record
FEATURE_SPEC_VERSION = 3

SAMPLE_RATE = 44100  # Hz
N_FFT = 2048  # samples (46.4 ms)
HOP_LENGTH = 1024  # samples (23.2 ms)
WINDOW = "hamming"
FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH  # about 43.07

# One example is at most 30 s: the paper's maximum sequence length.
CHUNK_FRAMES = 1294
# Long tracks drop a last remainder shorter than this (15 s).
MIN_REMAINDER_FRAMES = CHUNK_FRAMES // 2


class Block(NamedTuple):
    """One named block of channels: `[start, start + dim)` of the 324."""

    name: str
    start: int
    dim: int

    @property
    def stop(self) -> int:
        return self.start + self.dim


def _layout(*blocks: tuple[str, int]) -> tuple[Block, ...]:
    out, start = [], 0
    for name, dim in blocks:
        out.append(Block(name, start, dim))
        start += dim
    return tuple(out)


BLOCKS = _layout(
    ("chroma", 12),
    ("mfcc", 20),
    ("delta_mfcc", 20),
    ("mel", 128),
    ("cqt", 144),
)
BLOCK = {b.name: b for b in BLOCKS}
NUM_FEATURES = BLOCKS[-1].stop  # 324

# The spectral channels (mel + cqt): the H = 272 of channel masking.
SPECTRAL_START = BLOCK["mel"].start  # 52
SPECTRAL_STOP = BLOCK["cqt"].stop  # 324
NUM_SPECTRAL = SPECTRAL_STOP - SPECTRAL_START  # 272

assert NUM_FEATURES == 324 and SPECTRAL_START == 52 and NUM_SPECTRAL == 272

# --- Record schema (one tf.train.Example per chunk) ---------------------------
# features: raw little-endian float16 bytes of a [num_frames, 324] array
# (a float list would be 35x slower to build and twice the size).
FEATURES_KEY = "features"
NUM_FRAMES_KEY = "num_frames"  # int64
TRACK_ID_KEY = "track_id"  # bytes (utf-8); splits are by track, never by chunk
CHUNK_INDEX_KEY = "chunk_index"  # int64, 0-based position of the chunk in its track
SOURCE_PATH_KEY = "source_path"  # bytes (utf-8)
SPLIT_KEY = "split"  # bytes, "" when unknown
LABELS_KEY = "labels"  # bytes, JSON object {task: label}, "{}" when unlabeled
# float32 [324] each: the raw features' per-channel mean and standard deviation
# over the whole track (before CMVN), in every chunk of the track.
TRACK_MEAN_KEY = "track_mean"
TRACK_STD_KEY = "track_std"
# float list per labeled task, e.g. "label/genre": [class index] (see tasks.py)
LABEL_PREFIX = "label/"

FEATURE_DTYPE = "<f2"  # float16, little-endian


# Sample rates a waveform handed over in memory may have: below 1 kHz a
# rate is a mistake (kHz given for Hz: 44.1), and resampling it to 44.1 kHz
# would multiply its samples by up to 44 100.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000


def check_sample_rate(sample_rate, name: str = "waveform") -> int:
    """`sample_rate` as an int Hz, refused (ValueError naming `name`) outside
    1 kHz-384 kHz or when not a whole number, before anything is allocated."""
    rate = float(sample_rate)
    if not (MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE) or rate != int(rate):
        raise ValueError(
            f"{name}: sample_rate={sample_rate!r} Hz; a whole number of Hz from "
            f"{MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} is needed (44100, not 44.1)"
        )
    return int(rate)
