"""The flags of bin/pretrain and bin/finetune, and their configs.

Every flag is the config field of the same name (`train/configs.py`).
"""

from absl import flags

FLAGS = flags.FLAGS


def finetune_config_from_flagfile(path: str, **fields):
    """A FinetuneConfig from a flag file's `--name=value` lines plus `fields`.

    Flag names are the config's field names; values are parsed by the field's type.
    """
    import dataclasses
    import os

    from m3bert_tf.io import storage
    from m3bert_tf.train.configs import FinetuneConfig

    types = {f.name: f.type for f in dataclasses.fields(FinetuneConfig)}
    values = {}
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not storage.exists(path) and os.path.exists(os.path.join(repo, path)):
        path = os.path.join(repo, path)
    if not storage.exists(path):
        raise ValueError(f"finetune_flagfile={path}: no such file")
    with storage.open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("--"):
                continue
            name, _, text = line[2:].partition("=")
            if name not in types:
                raise ValueError(f"{path}: --{name} is not a bin/finetune flag")
            kind = types[name]
            if kind is bool:
                values[name] = text.lower() in ("", "true", "1")
            elif kind in (int, float, str):
                values[name] = kind(text)
            else:  # tuple[str, ...]
                values[name] = tuple(t for t in text.split(",") if t)
    return FinetuneConfig(**{**values, **fields})


def _define_run_flags(job: str, data_help: str, defaults: dict, with_paths: bool) -> None:
    """The flags every training job has; `defaults` gives each job its values."""
    if with_paths:
        flags.DEFINE_string("data", None, data_help)
        flags.DEFINE_string(
            "model_dir", None, f"Checkpoints, TensorBoard logs, config: the {job} run."
        )
        flags.mark_flags_as_required(["data", "model_dir"])
    flags.DEFINE_integer("train_steps", defaults["train_steps"], "Optimizer steps.")
    flags.DEFINE_integer(
        "max_frames", defaults["max_frames"], "Frames per example (crop / padding)."
    )
    flags.DEFINE_float("learning_rate", defaults["learning_rate"], "(Peak) learning rate.")
    flags.DEFINE_float("dropout", 0.1, "Dropout rate.")
    flags.DEFINE_integer(
        "checkpoint_every", defaults["every"], "Steps between checkpoints."
    )
    flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.")
    flags.DEFINE_integer(
        "eval_every", defaults["every"], "Steps between evaluations; 0 = at the end."
    )
    flags.DEFINE_integer(
        "log_every", defaults["log_every"], "Steps between progress lines."
    )
    flags.DEFINE_integer("seed", 0, "Seed of data order, crops and masks.")


def define_pretrain_flags(with_paths: bool = True) -> None:
    """Pretraining flags; `with_paths=False` when a caller sets --data/--model_dir itself."""
    _define_run_flags(
        "pretraining", "Training shards: a directory, glob or comma-separated globs.",
        {"train_steps": 200_000, "max_frames": 1294, "learning_rate": 2e-4, "every": 1000,
         "log_every": 100},
        with_paths,
    )  # fmt: skip
    flags.DEFINE_enum(
        "normalization", "track", ["track", "global", "none"],
        "Features as the encoder sees them: track (per-track CMVN, the paper's), global "
        "(one mean/std over the training data, keeps track levels) or none (raw).",
    )  # fmt: skip
    flags.DEFINE_string(
        "eval_data", "", "Evaluation shards; empty = held-out tracks of --data."
    )
    flags.DEFINE_integer(
        "global_batch_size", 128, "Examples per optimizer step, all replicas."
    )
    flags.DEFINE_integer(
        "gradient_accumulation_steps",
        1,
        "Micro-batches per step, to reach the global batch.",
    )
    flags.DEFINE_enum(
        "masking", "cfm+ccm", ["cfm+ccm", "cfm", "ccm", "pm"], "Masking policy."
    )
    flags.DEFINE_bool(
        "per_clip_mask_choice", False,
        "Draw CFM's zero/replace/keep choice once per clip (authors' code), not per span.",
    )  # fmt: skip
    flags.DEFINE_integer("num_layers", 4, "Transformer blocks (L).")
    flags.DEFINE_integer("hidden_dim", 768, "Hidden size (H).")
    flags.DEFINE_integer("num_heads", 12, "Attention heads (A).")
    flags.DEFINE_integer("ffn_dim", 3072, "FFN inner size.")
    flags.DEFINE_integer("frame_stack", 1, "Consecutive frames concatenated per token.")
    flags.DEFINE_float(
        "warmup_fraction", 0.07, "Warm-up steps as a fraction of --train_steps."
    )
    flags.DEFINE_float("clip_norm", 1.0, "Global gradient-norm clip; 0 = off.")
    flags.DEFINE_enum(
        "mixed_precision", "auto", ["auto", "bf16", "fp32"],
        "bfloat16 compute with float32 weights: auto = where the hardware has bf16 "
        "arithmetic (GPU 8.0+, TPU, CPU with avx512_bf16/amx_bf16), else float32.",
    )  # fmt: skip
    flags.DEFINE_bool("xla", False, "Compile the forward/backward pass with XLA.")
    flags.DEFINE_enum(
        "strategy", "auto", ["auto", "mirrored", "multi_worker", "one_device", "tpu"],
        "auto = multi_worker when TF_CONFIG names a cluster, else mirrored (local GPUs "
        "or --num_cpu_replicas CPUs).",
    )  # fmt: skip
    flags.DEFINE_string(
        "tpu", "", "--strategy=tpu: the TPU's name or grpc:// address; empty = local."
    )
    flags.DEFINE_string(
        "data_service", "",
        "grpc://host:port of a tf.data service dispatcher (bin/data_service): the "
        "pipeline's parse/crop/mask/batch runs on its workers.",
    )  # fmt: skip
    flags.DEFINE_integer(
        "num_cpu_replicas", 1, "With no GPU: logical CPU devices for MirroredStrategy."
    )
    flags.DEFINE_integer("eval_batches", 20, "Batches per evaluation.")
    flags.DEFINE_integer("shuffle_buffer", 64, "Examples in the shuffle buffer.")
    flags.DEFINE_integer("holdout_percent", 5, "Percent of tracks held out for evaluation.")


def pretrain_config_from_flags(**paths):
    """The PretrainConfig of the flags; `paths` gives data/model_dir when they are not flags."""
    from m3bert_tf.train.configs import ModelConfig, PretrainConfig

    return PretrainConfig(
        data=paths.get("data", FLAGS["data"].value if "data" in FLAGS else None),
        eval_data=FLAGS.eval_data,
        model_dir=paths.get(
            "model_dir", FLAGS["model_dir"].value if "model_dir" in FLAGS else None
        ),
        model=ModelConfig(
            num_layers=FLAGS.num_layers,
            hidden_dim=FLAGS.hidden_dim,
            num_heads=FLAGS.num_heads,
            ffn_dim=FLAGS.ffn_dim,
            frame_stack=FLAGS.frame_stack,
            dropout=FLAGS.dropout,
        ),  # fmt: skip
        masking=FLAGS.masking,
        per_clip_mask_choice=FLAGS.per_clip_mask_choice,
        normalization=FLAGS.normalization,
        train_steps=FLAGS.train_steps,
        global_batch_size=FLAGS.global_batch_size,
        gradient_accumulation_steps=FLAGS.gradient_accumulation_steps,
        max_frames=FLAGS.max_frames,
        learning_rate=FLAGS.learning_rate,
        warmup_fraction=FLAGS.warmup_fraction,
        clip_norm=FLAGS.clip_norm,
        mixed_precision=FLAGS.mixed_precision,
        xla=FLAGS.xla,
        strategy=FLAGS.strategy,
        tpu=FLAGS.tpu,
        data_service=FLAGS.data_service,
        num_cpu_replicas=FLAGS.num_cpu_replicas,
        checkpoint_every=FLAGS.checkpoint_every,
        keep_checkpoints=FLAGS.keep_checkpoints,
        eval_every=FLAGS.eval_every,
        eval_batches=FLAGS.eval_batches,
        log_every=FLAGS.log_every,
        shuffle_buffer=FLAGS.shuffle_buffer,
        holdout_percent=FLAGS.holdout_percent,
        seed=FLAGS.seed,
    )


def define_finetune_flags() -> None:
    _define_run_flags(
        "fine-tuning", "Labeled shard dirs or globs (bin/extract --dataset or a CSV), comma-separated.",
        {"train_steps": 20000, "max_frames": 0, "learning_rate": 1e-3, "every": 250, "log_every": 50},
        with_paths=True,
    )  # fmt: skip
    flags.DEFINE_string("pretrained", None, "A bin/pretrain model_dir (its encoder.keras).")
    flags.DEFINE_enum(
        "normalization", "", ["", "track", "global", "none"],
        "Empty: as the pretrained encoder was trained (anything else must equal it).",
    )  # fmt: skip
    flags.DEFINE_list(
        "tasks", [], "Tasks to train (one head each); empty = all in the data."
    )
    flags.DEFINE_integer("batch_size", 32, "Examples per step, tasks mixed.")
    flags.DEFINE_integer(
        "embedding_dim", 256, "Width of the enrichment layer (the M3BERT embedding)."
    )
    flags.DEFINE_integer(
        "unfreeze_top_blocks", 0, "Encoder blocks, from the top, trained too."
    )
    flags.DEFINE_bool(
        "uncertainty_weighting", False, "Learn task loss weights (Kendall et al.)."
    )
    flags.DEFINE_float(
        "task_sampling_temperature", 1.0, "P(task) ~ size^T: 1 proportional, 0 uniform."
    )
    flags.DEFINE_integer(
        "patience", 8, "Evaluations without improvement before stopping early."
    )
    flags.DEFINE_float(
        "warmup_fraction", 0.07,
        "Warm-up steps as a fraction of --train_steps (the ceiling); then linear decay.",
    )  # fmt: skip
    flags.mark_flags_as_required(["pretrained"])


def finetune_config_from_flags():
    from m3bert_tf.train.configs import FinetuneConfig

    return FinetuneConfig(
        pretrained=FLAGS.pretrained,
        data=FLAGS.data,
        model_dir=FLAGS.model_dir,
        tasks=tuple(FLAGS.tasks),
        normalization=FLAGS.normalization,
        train_steps=FLAGS.train_steps,
        batch_size=FLAGS.batch_size,
        max_frames=FLAGS.max_frames,
        learning_rate=FLAGS.learning_rate,
        warmup_fraction=FLAGS.warmup_fraction,
        embedding_dim=FLAGS.embedding_dim,
        dropout=FLAGS.dropout,
        unfreeze_top_blocks=FLAGS.unfreeze_top_blocks,
        uncertainty_weighting=FLAGS.uncertainty_weighting,
        task_sampling_temperature=FLAGS.task_sampling_temperature,
        eval_every=FLAGS.eval_every,
        patience=FLAGS.patience,
        checkpoint_every=FLAGS.checkpoint_every,
        keep_checkpoints=FLAGS.keep_checkpoints,
        log_every=FLAGS.log_every,
        seed=FLAGS.seed,
    )
