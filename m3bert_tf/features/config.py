"""What the feature extractor computes, as a config: light (no librosa), so a
job's parent process and its flags never import librosa for it.

    FeatureConfig(feature_set="authors").to_json()   # stored in every manifest
    FeatureConfig.from_spec(manifest["feature_spec"]) # back from one
"""

import dataclasses

from m3bert_tf import schema
from m3bert_tf.fields import check_choices, choice


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """One variant of the 324 features (they differ in the CQT block only).

    Attributes:
      cqt_kernels: the CQT block is a CQT magnitude computed from our kernels
        (`banks.cqt_bank`, `cqt.ConstantQ`); else librosa's chroma_cqt.
      tf_frontend: the TensorFlow front end (`frontend/`) computes it too, so
        an export of a model fed these features has the waveform signatures.
      what: one line for the docs and errors.
    """

    cqt_kernels: bool
    tf_frontend: bool
    what: str


# The feature sets: every part that depends on which one reads this table.
FEATURE_SETS = {
    "paper": FeatureSet(
        True, True, "144-bin CQT magnitude, 24 bins per octave from C1 (docs/contract.md)"
    ),
    "authors": FeatureSet(
        False, False,
        "the authors' 144-bin chroma-folded CQT (chroma_cqt, 144 bins per octave; 10x slower)",
    ),
}  # fmt: skip
DEFAULT_FEATURE_SET = "paper"  # also what a spec without the field was made with


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """What `FeatureExtractor` computes; stored in every manifest.

    Attributes:
      feature_set: a row of FEATURE_SETS: "paper" (the 144-bin CQT of
        docs/contract.md) or "authors" (the authors' chroma-folded CQT).
      tuning: chroma/CQT tuning offset in fractions of a bin (0.0 = A440).
      min_duration: seconds; shorter files are rejected as too short.
    """

    feature_set: str = choice(DEFAULT_FEATURE_SET, FEATURE_SETS)
    tuning: float = 0.0
    min_duration: float = 1.0

    def __post_init__(self):
        check_choices(self)
        if self.min_duration <= 0:
            raise ValueError(f"min_duration must be > 0 s, got {self.min_duration}")

    @property
    def variant(self) -> FeatureSet:
        """The FEATURE_SETS row of `feature_set`."""
        return FEATURE_SETS[self.feature_set]

    def to_json(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "version": schema.FEATURE_SPEC_VERSION,
            "sample_rate": schema.SAMPLE_RATE,
            "n_fft": schema.N_FFT,
            "hop_length": schema.HOP_LENGTH,
            "window": schema.WINDOW,
            "blocks": [b._asdict() for b in schema.BLOCKS],
            "num_features": schema.NUM_FEATURES,
            "chunk_frames": schema.CHUNK_FRAMES,
            "dtype": "float16",
            "normalization": "per-track CMVN; track_mean/track_std stored",
        }

    @classmethod
    def from_spec(cls, spec: dict | None) -> "FeatureConfig":
        """The config of a stored feature spec (None: unknown, the paper's)."""
        spec = spec or {}
        return cls(
            feature_set=spec.get("feature_set", DEFAULT_FEATURE_SET),
            tuning=spec.get("tuning", 0.0),
        )
