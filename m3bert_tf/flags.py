"""Every command-line flag of the project, defined here and nowhere else.

Each binary calls the `define_*_flags()` it needs, then turns the parsed flags
into one config object with the matching `*_config_from_flags()`.
"""

from absl import flags

FLAGS = flags.FLAGS


def define_extract_flags() -> None:
    flags.DEFINE_string(
        "input", None,
        "Audio to extract: a directory (searched recursively), a glob, or a CSV "
        "manifest with columns path[,track_id][,split][,task,label].",
    )  # fmt: skip
    flags.DEFINE_string("output_dir", None, "Where shards and manifest.json go.")
    flags.DEFINE_integer("num_workers", 0, "Worker processes; 0 = all cores.")
    flags.DEFINE_integer(
        "shard_size", 128, "Examples (30 s chunks, ~0.84 MB each) per shard."
    )
    flags.DEFINE_enum(
        "feature_set", "paper", ["paper", "authors"],
        "paper: 144-bin CQT (DESIGN.md); authors: the authors' chroma-folded CQT.",
    )  # fmt: skip
    flags.DEFINE_float(
        "min_duration", 1.0, "Seconds; shorter files are reported and skipped."
    )
    flags.DEFINE_bool("strict", False, "Stop at the first file that fails.")
    flags.DEFINE_bool(
        "retry_failed", False, "Try again files an earlier run recorded as failed."
    )
    flags.mark_flags_as_required(["input", "output_dir"])


def extract_config_from_flags():
    from m3bert_tf.extract import ExtractConfig
    from m3bert_tf.features.frames import FeatureConfig

    return ExtractConfig(
        input=FLAGS.input,
        output_dir=FLAGS.output_dir,
        features=FeatureConfig(
            feature_set=FLAGS.feature_set, min_duration=FLAGS.min_duration
        ),
        num_workers=FLAGS.num_workers,
        shard_size=FLAGS.shard_size,
        strict=FLAGS.strict,
        retry_failed=FLAGS.retry_failed,
    )


def define_demo_flags() -> None:
    flags.DEFINE_string("workdir", "demo_output", "Where the demo writes everything.")
    flags.DEFINE_integer("num_tracks", 48, "Tracks in the synthesized example corpus.")
    flags.DEFINE_integer("num_workers", 0, "Extraction worker processes; 0 = all cores.")


def demo_config_from_flags() -> dict:
    return {
        "workdir": FLAGS.workdir,
        "num_tracks": FLAGS.num_tracks,
        "num_workers": FLAGS.num_workers,
    }
