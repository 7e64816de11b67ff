"""What the feature extractor computes, as a config: light (no librosa), so a
job's parent process and its flags never import librosa for it.

    FeatureConfig(feature_set="authors").to_json()   # stored in every manifest
    FeatureConfig.from_spec(manifest["feature_spec"]) # back from one
"""

import dataclasses

from m3bert_tf import schema
from m3bert_tf.fields import check_choices, choice

FEATURE_SETS = ("paper", "authors")


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """What `FeatureExtractor` computes; stored in every manifest.

    Attributes:
      feature_set: "paper" (the 144-bin CQT of docs/contract.md) or "authors" (the
        authors' chroma-folded CQT).
      tuning: chroma/CQT tuning offset in fractions of a bin (0.0 = A440).
      min_duration: seconds; shorter files are rejected as too short.
    """

    feature_set: str = choice("paper", FEATURE_SETS)
    tuning: float = 0.0
    min_duration: float = 1.0

    def __post_init__(self):
        check_choices(self)
        if self.min_duration <= 0:
            raise ValueError(f"min_duration must be > 0 s, got {self.min_duration}")

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
            feature_set=spec.get("feature_set", "paper"), tuning=spec.get("tuning", 0.0)
        )
