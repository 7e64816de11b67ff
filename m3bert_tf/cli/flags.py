"""The command-line flags of extraction, the demo, export, embedding and the
tf.data service; the training jobs' are in `train/cli_flags.py`, evaluation's
in `evaluate/cli_flags.py`.

Each binary calls the `define_*_flags()` it needs, then turns the parsed flags
into one config object with the matching `*_config_from_flags()`.
"""

from absl import flags

from m3bert_tf.cli.flags import (
    define_pretrain_flags,
    finetune_config_from_flagfile,
    pretrain_config_from_flags,
)

FLAGS = flags.FLAGS


def define_extract_flags() -> None:
    flags.DEFINE_string(
        "input", "",
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
    flags.DEFINE_enum(
        "dataset", "",
        ["", "gtzan", "mtg_jamendo_moodtheme", "extended_ballroom", "deam", "rwc_instrument", "csv"],
        "Read a labeled dataset in its publisher's layout from --dataset_root.",
    )  # fmt: skip
    flags.DEFINE_string("dataset_root", "", "Root directory of --dataset.")
    flags.DEFINE_string(
        "split_dir", "",
        "gtzan: dir of the fault-filtered train/valid/test lists; "
        "mtg_jamendo_moodtheme: dir of the autotagging_moodtheme-*.tsv split files.",
    )  # fmt: skip
    flags.DEFINE_string(
        "rwc_pattern", r"^(?P<instrument>\d{2})\d",
        "rwc_instrument: regex on the file name with a group named 'instrument'.",
    )  # fmt: skip
    flags.DEFINE_integer("split_seed", 0, "Seed of the 60/20/20 splits by track.")
    flags.DEFINE_enum(
        "runner", "local", ["local", "beam"],
        "local: a process pool on this machine; beam: Apache Beam "
        "(pip install 'm3bert_tf[beam]'; DirectRunner unless --beam_options names one).",
    )  # fmt: skip
    flags.DEFINE_string(
        "beam_options", "",
        'Beam pipeline options, e.g. "--runner=DataflowRunner --project=P --region=R '
        '--temp_location=gs://B/tmp".',
    )  # fmt: skip
    flags.mark_flags_as_required(["output_dir"])


def extract_config_from_flags():
    from m3bert_tf.extract import ExtractConfig
    from m3bert_tf.features.frames import FeatureConfig

    if bool(FLAGS.input) == bool(FLAGS.dataset):
        raise ValueError("give either --input, or --dataset with --dataset_root")
    if FLAGS.runner == "beam" and FLAGS.strict:
        raise ValueError("--strict stops at the first failure: only with --runner=local")
    if FLAGS.beam_options and FLAGS.runner != "beam":
        raise ValueError("--beam_options needs --runner=beam")
    if FLAGS.dataset and not FLAGS.dataset_root:
        raise ValueError(f"--dataset={FLAGS.dataset} needs --dataset_root")
    options = {"seed": FLAGS.split_seed}
    if FLAGS.dataset in ("gtzan", "mtg_jamendo_moodtheme") and FLAGS.split_dir:
        options["split_dir"] = FLAGS.split_dir
    if FLAGS.dataset == "rwc_instrument":
        options["pattern"] = FLAGS.rwc_pattern
    if FLAGS.dataset == "mtg_jamendo_moodtheme":
        options.pop("seed")  # official splits only
    return ExtractConfig(
        input=FLAGS.dataset_root if FLAGS.dataset else FLAGS.input,
        dataset=FLAGS.dataset,
        dataset_options=options,
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
    """The demo takes the pretrain flags but --data and --model_dir (set by
    configs/tiny.flags), the fine-tuning ones as --finetune_* (set by
    configs/tiny_finetune.flags), plus its own."""
    define_pretrain_flags(with_paths=False)  # data and run dirs live under --workdir
    flags.DEFINE_string("workdir", "demo_output", "Where the demo writes everything.")
    flags.DEFINE_string(
        "finetune_flagfile",
        "configs/tiny_finetune.flags",
        "Fine-tuning settings of the demo (a relative path not found here is "
        "looked up in the repository).",
    )
    flags.DEFINE_integer("num_tracks", 160, "Tracks in the synthesized example corpus.")
    flags.DEFINE_integer("num_workers", 0, "Extraction worker processes; 0 = all cores.")


def demo_config_from_flags() -> dict:
    import os

    shards, pretrained = (
        os.path.join(FLAGS.workdir, "shards"),
        os.path.join(FLAGS.workdir, "pretrain"),
    )
    return {
        "workdir": FLAGS.workdir,
        "pretrain_config": pretrain_config_from_flags(data=shards, model_dir=pretrained),
        "finetune_config": finetune_config_from_flagfile(
            FLAGS.finetune_flagfile,
            pretrained=pretrained,
            data=shards,
            model_dir=os.path.join(FLAGS.workdir, "finetune"),
        ),  # fmt: skip
        "num_tracks": FLAGS.num_tracks,
        "num_workers": FLAGS.num_workers,
    }


def define_export_flags() -> None:
    flags.DEFINE_string("model_dir", None, "A finished bin/pretrain or bin/finetune run.")
    flags.DEFINE_string(
        "export_dir",
        None,
        "Base directory; the SavedModel goes to <export_dir>/<version>/.",
    )
    flags.DEFINE_integer(
        "version", None, "Version number; default: one more than the largest there."
    )
    flags.DEFINE_integer(
        "input_sample_rate", 44100,
        "Hz of the audio the waveform signatures take (resampled in the graph).",
    )  # fmt: skip


def define_embed_flags() -> None:
    flags.DEFINE_string("model", None, "An export version directory or a run directory.")
    flags.DEFINE_string(
        "input", "", "Audio: a file, a directory (searched recursively), a glob or a CSV."
    )
    flags.DEFINE_string("output_dir", None, "Where the .npz files and index.csv go.")
    flags.DEFINE_string(
        "layer", "last", "last | all | mean (of all blocks) | N (0-based block index)."
    )
    flags.DEFINE_float(
        "window_seconds", 0.0,
        "Window the model sees (at most 30); 0 = its training crop, at most 30 s.",
    )  # fmt: skip
    flags.DEFINE_float(
        "hop_seconds", 0.0, "Between window starts; 0 = the window (no overlap)."
    )
    flags.DEFINE_integer("batch_size", 8, "Windows per model call, across tracks.")
    flags.DEFINE_integer(
        "num_workers", 1, "Decoding/feature processes; 0 = in the main process."
    )
    flags.DEFINE_enum(
        "frontend", "librosa", ["librosa", "tf"],
        "Features by the librosa extractor (the reference, block-wise) or by the model's "
        "TensorFlow front end (workers decode; the front end runs beside the model).",
    )  # fmt: skip


def embed_config_from_flags():
    from m3bert_tf.serving.embed_job import EmbedConfig

    for name in ("model", "output_dir", "input"):
        if not getattr(FLAGS, name):
            raise ValueError(f"--{name} is required")
    return EmbedConfig(
        model=FLAGS.model, input=FLAGS.input, output_dir=FLAGS.output_dir, layer=FLAGS.layer,
        window_seconds=FLAGS.window_seconds, hop_seconds=FLAGS.hop_seconds,
        batch_size=FLAGS.batch_size, num_workers=FLAGS.num_workers, frontend=FLAGS.frontend,
    )  # fmt: skip


def define_data_service_flags() -> None:
    flags.DEFINE_enum("mode", None, ["dispatcher", "worker"], "Which server to run.")
    flags.DEFINE_integer("port", 0, "Port to listen on (0 = any free port, printed).")
    flags.DEFINE_string(
        "bind_address", "127.0.0.1",
        "The interfaces to listen on. TensorFlow's tf.data servers always listen on every "
        "interface (0.0.0.0) with unauthenticated gRPC, so the default refuses to start: "
        "give --bind_address=0.0.0.0 on a private network or behind a firewall.",
    )  # fmt: skip
    flags.DEFINE_string("dispatcher", "", "--mode=worker: the dispatcher's host:port.")
    flags.DEFINE_string(
        "worker_address", "",
        "--mode=worker: how trainers reach this worker (host:%port%); default localhost.",
    )  # fmt: skip
    flags.DEFINE_string(
        "work_dir", "", "--mode=dispatcher: where it journals its state (restartable)."
    )
    flags.DEFINE_bool(
        "fault_tolerant", False,
        "--mode=dispatcher: journal every change before acting (needs --work_dir).",
    )  # fmt: skip
