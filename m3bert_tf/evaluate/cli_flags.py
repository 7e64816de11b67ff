"""The flags of bin/evaluate and bin/correlate, and their configs."""

from absl import flags

FLAGS = flags.FLAGS


def _list(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def define_evaluate_flags() -> None:
    flags.DEFINE_string("data", None, "Labeled shard dirs or globs, comma-separated.")
    flags.DEFINE_string(
        "models", "",
        "Run or export dirs, comma-separated; `name=path` names a row (default: the "
        "directory's name). A fine-tuned run gives an M3BERT row and its encoder's M2BERT row.",
    )  # fmt: skip
    flags.DEFINE_string(
        "output_dir", None, "Where results.md/.json, plots and the cache go."
    )
    flags.DEFINE_string(
        "baselines", "mfcc,features,random",
        "Any of mfcc, features, random (the first model with random weights); '' = none.",
    )  # fmt: skip
    flags.DEFINE_string(
        "embeddings", "",
        "Dirs of <track id>.npz from any other model (VGGish, CLAP, MERT...), comma-separated, "
        "`name=dir` names a row.",
    )  # fmt: skip
    flags.DEFINE_string("tasks", "", "Tasks to probe; empty = every task of the data.")
    flags.DEFINE_string(
        "layer",
        "last",
        "Encoder output probed: last | mean | N (0-based) | all (the layer profile: every "
        "block, their mean and their learned weighted sum; layers_<task>.png).",
    )
    flags.DEFINE_string("probes", "mlp,linear", "Probes: mlp (one hidden layer), linear.")
    flags.DEFINE_integer("seeds", 3, "Probe seeds; tables give mean ± std over them.")
    flags.DEFINE_integer("epochs", 100, "Probe epochs at most (the best on valid is kept).")
    flags.DEFINE_string(
        "score_per", "track",
        "track: a track's chunk predictions are averaged into one; example: each chunk alone.",
    )  # fmt: skip
    flags.DEFINE_integer("batch_size", 16, "Encoder windows per call while embedding.")
    flags.DEFINE_integer(
        "folds", 0,
        "0: the data's train/valid/test splits; K >= 3: each task's splits pooled into K "
        "folds grouped by track (for fewer than ~50 test tracks per task).",
    )  # fmt: skip


def evaluate_config_from_flags():
    from m3bert_tf.evaluate.job import EvaluateConfig

    for name in ("data", "output_dir"):
        if not getattr(FLAGS, name):
            raise ValueError(f"--{name} is required")
    return EvaluateConfig(
        data=FLAGS.data, output_dir=FLAGS.output_dir, models=_list(FLAGS.models),
        baselines=_list(FLAGS.baselines), embeddings=_list(FLAGS.embeddings),
        tasks=_list(FLAGS.tasks), layer=FLAGS.layer, probes=_list(FLAGS.probes),
        seeds=FLAGS.seeds, epochs=FLAGS.epochs, score_per=FLAGS.score_per,
        batch_size=FLAGS.batch_size, folds=FLAGS.folds,
    )  # fmt: skip


def define_correlate_flags() -> None:
    flags.DEFINE_string("model", None, "A run or export dir.")
    flags.DEFINE_string(
        "input", "", "Audio: a file, a directory (searched recursively), a glob or a CSV."
    )
    flags.DEFINE_string(
        "output_dir", None, "Where top_cells.csv, correlations.md and PNGs go."
    )
    flags.DEFINE_integer("top", 5, "Cells listed per descriptor.")
    flags.DEFINE_integer("seed", 0, "Seed of the random-weight encoder.")


def correlate_config_from_flags():
    from m3bert_tf.evaluate.correlate import CorrelateConfig

    for name in ("model", "input", "output_dir"):
        if not getattr(FLAGS, name):
            raise ValueError(f"--{name} is required")
    return CorrelateConfig(
        model=FLAGS.model, input=FLAGS.input, output_dir=FLAGS.output_dir,
        top=FLAGS.top, seed=FLAGS.seed,
    )  # fmt: skip
