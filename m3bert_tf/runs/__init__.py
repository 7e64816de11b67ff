"""The run directory: one module owns its layout, every tool reads it here.

A run directory (`--model_dir` of bin/pretrain or bin/finetune) holds:

    config.json            the resolved config of the first start (never rewritten)
    flags.txt              the command-line flags of the first start
    config.resume-NNN.json each later start with a changed config: the full
                           config and {"changed": {field: [old, new]}}
    input_spec.json        what the model was fed: the data's feature spec
                           (manifest.json's) and the normalization (with the
                           global statistics when `global`)
    checkpoints/           training state (model, optimizer, data position)
    cache/<key>/           bin/finetune's frozen-encoder outputs of its examples
                           (`example_cache.py`; the key names encoder and data)
    train/ eval/           TensorBoard logs
    encoder.keras          bin/pretrain's encoder
    snapshots/encoder-NNNNNNNN.keras  bin/pretrain's encoder at step N
                           (--snapshot_every): the points of a learning
                           curve, read as `run@N` (`at_step`)
    multitask.keras        bin/finetune's model
    best.weights.h5        bin/finetune's best weights so far
    results.json           bin/pretrain's final results
    metrics.json           bin/finetune's final table

Export, embedding and evaluation read runs through `load_model`,
`load_encoder`, `load_multitask`, `read_config` and `read_input_spec`, never
through `train/`. An export version directory (bin/export's) is told apart
here too: `is_export` (a `saved_model.pb`) and `read_export_info` (its
`export.json`), so every tool that takes "a model" decides it one way. Writes go through a `RunDir` whose `is_chief` predicate is false
on every worker but one in multi-worker training.
"""

import dataclasses
import json
import os
from collections.abc import Callable

from m3bert_tf import schema
from m3bert_tf.io import storage
from m3bert_tf.runs import layouts

CONFIG_NAME = "config.json"
FLAGS_NAME = "flags.txt"
RESUME_PATTERN = "config.resume-{:03d}.json"
INPUT_SPEC_NAME = "input_spec.json"
CHECKPOINTS_DIR = "checkpoints"
CACHE_DIR = "cache"
TRAIN_LOGS_DIR = "train"
EVAL_LOGS_DIR = "eval"
ENCODER_NAME = "encoder.keras"
MULTITASK_NAME = "multitask.keras"
BEST_WEIGHTS_NAME = "best.weights.h5"
SNAPSHOTS_DIR = "snapshots"
SNAPSHOT_PATTERN = "encoder-{:08d}.keras"
RESULTS_NAME = "results.json"
METRICS_NAME = "metrics.json"
# An export version directory (written by serving/export.py):
SAVED_MODEL_NAME = "saved_model.pb"
EXPORT_INFO_NAME = "export.json"  # what the export is: kind, config, input spec, digest


class ConfigMismatch(ValueError):
    """A config that does not fit what it names: a resumed run's stored config,
    the pretrained run it builds on, or the data's tasks."""


def flatten(config: dict, prefix: str = "") -> dict:
    """{"model": {"num_layers": 2}} -> {"model.num_layers": 2}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def config_changes(old: dict, new: dict) -> dict:
    """{field: [old, new]} for every flattened field that differs (lists compared as lists)."""
    a, b = flatten(json.loads(json.dumps(old))), flatten(json.loads(json.dumps(new)))
    return {
        k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    }


def at_step(path: str, allow_every: bool = False) -> tuple:
    """`run@step` -> (run, step) of a pretraining run's encoder snapshot;
    any other path (a directory whose name holds "@" too) -> (path, None).
    With `allow_every`, `run@every` -> (run, "every")."""
    head, sep, tail = path.rstrip("/").rpartition("@")
    if allow_every and sep and tail == "every":
        return head, "every"
    if not sep or not tail.isdigit():
        return path, None
    return head, int(tail)


def snapshot_file(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, SNAPSHOTS_DIR, SNAPSHOT_PATTERN.format(step))


def snapshot_steps(run_dir: str) -> list[int]:
    """The steps of the encoder snapshots a run kept, in order."""
    pattern = os.path.join(run_dir, SNAPSHOTS_DIR, SNAPSHOT_PATTERN.replace("{:08d}", "*"))
    names = (os.path.basename(f) for f in storage.glob(pattern))
    return sorted(int(n.removeprefix("encoder-").removesuffix(".keras")) for n in names)


def model_digest(path: str) -> str:
    """A digest of a run's or an export's model files (their bytes, not their
    path or dates), or of one snapshot's (`run@step`): what identifies "the
    same model" wherever outputs made with it are reused. Raises
    FileNotFoundError when `path` holds none."""
    import hashlib

    run_dir, step = at_step(path)
    if step is not None:
        return storage.sha256(snapshot_path(run_dir, step))[:16]
    if str(path).endswith(".tflite"):  # an export's LiteRT file: its own bytes
        return storage.sha256(path)[:16]
    h, found = hashlib.sha256(), False
    for pattern in (ENCODER_NAME, MULTITASK_NAME, SAVED_MODEL_NAME, "variables/*"):
        for f in sorted(storage.glob(os.path.join(path, pattern))):
            found = True
            h.update(os.path.relpath(f, path).encode())
            h.update(storage.sha256(f).encode())
    if not found:
        raise FileNotFoundError(
            f"{path}: no model files (encoder.keras, multitask.keras or a SavedModel)"
        )
    return h.hexdigest()[:16]


@dataclasses.dataclass
class RunDir:
    """One run directory, written only where `is_chief()` holds.

    Args:
      path: the directory.
      is_chief: () -> bool; false on non-chief workers, whose writes are
        skipped (each worker still reads).
    """

    path: str
    is_chief: Callable[[], bool] = lambda: True

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def lock(self, log=None):
        """Exclusive use of the directory for a job (`locks.DirectoryLock`); a
        no-op off the chief (workers share the chief's directory)."""
        import contextlib

        from m3bert_tf.io.locks import DirectoryLock

        if not self.is_chief():
            return contextlib.nullcontext()
        return DirectoryLock(self.path, "model_dir", log)

    def exists(self, name: str) -> bool:
        return storage.exists(self.file(name))

    def write_json(self, name: str, value) -> None:
        if self.is_chief():
            storage.write_json(self.file(name), value)

    def start(
        self, config: dict, flags_text: str = "", may_change: tuple[str, ...] = (),
        added: dict | None = None,
    ) -> dict:  # fmt: skip
        """Creates the directory or checks a resumed run's config.

        `added`: {field: value} of fields added to the config since an earlier
        release, with the value a run stored without them had; nested as the
        config is ({"model": {"block": "transformer"}} adds model.block).

        The first start writes config.json (and flags.txt). A later start
        compares `config` with the latest stored one (`model_dir` excluded):
        fields in `may_change` (flattened names such as "train_steps") may
        differ and are recorded in a config.resume-NNN.json; any other
        difference is refused.

        Returns:
          {field: [old, new]} of the allowed changes ({} on a first start).

        Raises:
          ConfigMismatch: naming every field that may not change.
        """
        if self.is_chief():
            storage.makedirs(self.path)
        stored = read_config(self.path) if self.exists(CONFIG_NAME) else None
        if stored is not None and added:
            stored = layouts.with_added(stored, added)
        if stored is None:
            self.write_json(CONFIG_NAME, config)
            if flags_text and self.is_chief():
                storage.write_atomic(self.file(FLAGS_NAME), flags_text)
            return {}
        changes = {
            k: v for k, v in config_changes(stored, config).items() if k != "model_dir"
        }
        refused = {k: v for k, v in changes.items() if k not in may_change}
        if refused:
            listed = "; ".join(
                f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items()
            )
            raise ConfigMismatch(
                f"{self.path} holds a run with another config ({listed}). Use a new "
                f"model_dir, or the stored values. Fields that may change on resume: "
                f"{', '.join(may_change) or 'none'}"
            )
        if changes:
            number = len(storage.glob(self.file(RESUME_PATTERN.replace("{:03d}", "*")))) + 1
            self.write_json(
                RESUME_PATTERN.format(number),
                {"config": config, "changed": changes, "flags": flags_text},
            )
        return changes


def read_config(run_dir: str) -> dict:
    """The latest config of a run: config.json, or its last config.resume-NNN.json,
    in this release's layout (`layouts.current_layout`)."""
    resumes = storage.glob(os.path.join(run_dir, RESUME_PATTERN.replace("{:03d}", "*")))
    if resumes:
        return layouts.current_layout(storage.read_json(resumes[-1])["config"])
    path = os.path.join(run_dir, CONFIG_NAME)
    if not storage.exists(path):
        raise FileNotFoundError(
            f"{run_dir}: no {CONFIG_NAME} (not a bin/pretrain or bin/finetune run)"
        )
    return layouts.current_layout(storage.read_json(path))


def training_frames(run_dir: str) -> int:
    """The crop length (frames) a run's model was trained on: its max_frames, or
    for a fine-tuning run that left it unset, its pretrained run's (positions
    past it were never seen in training, so embedding windows stay within it)."""
    config = read_config(run_dir)
    if config.get("max_frames"):
        return int(config["max_frames"])
    pretrained = config.get("pretrained")
    if pretrained and storage.exists(pretrained):
        return training_frames(pretrained)
    return schema.CHUNK_FRAMES


def input_spec(feature_spec: dict | None, normalization: str, stats: dict | None) -> dict:
    """The content of input_spec.json."""
    return {"feature_spec": feature_spec, "normalization": normalization, "stats": stats}


def read_input_spec(run_dir: str) -> dict:
    """{"feature_spec": manifest's spec or None, "normalization": "track"|"global"|"none",
    "stats": global statistics or None} of a run.

    Runs of release 0.1.0 have no input_spec.json: per-track CMVN, spec unknown.
    """
    path = os.path.join(run_dir, INPUT_SPEC_NAME)
    if not storage.exists(path):
        return input_spec(None, "track", None)
    return storage.read_json(path)


def same_features(a: dict | None, b: dict | None) -> bool:
    """Whether two feature specs give the same feature values (None: unknown, taken as same)."""
    if a is None or b is None:
        return True
    ignore = ("min_duration",)  # which files are kept, not what their features are
    return {k: v for k, v in a.items() if k not in ignore} == {
        k: v for k, v in b.items() if k not in ignore
    }


def check_same_features(
    reference: dict | None, spec: dict | None, data: str, reference_name: str
) -> None:
    """The one "same features" check of every tool that feeds a model data.

    Args:
      reference: the feature spec the model (or the first data) was made with.
      spec: the feature spec of `data` (a manifest's).
      data: the data's directory or flag value, as the message names it.
      reference_name: what `reference` belongs to ("the run in DIR", ...).

    Raises:
      ConfigMismatch: naming the data, the reference and the fields that
        differ, and what to do.
    """
    if same_features(reference, spec):
        return
    differ = sorted(
        k for k in set(reference) | set(spec)
        if k != "min_duration" and reference.get(k) != spec.get(k)
    )  # fmt: skip
    shown = ", ".join(f"{k} {spec.get(k)!r} vs {reference.get(k)!r}" for k in differ)
    raise ConfigMismatch(
        f"data: {data} holds features of another spec than {reference_name} ({shown}); "
        "extract the audio again with the model's feature settings, or use data made with them"
    )


def _load_keras(path: str):
    import keras

    # Registers the classes a saved model may hold.
    import m3bert_tf.models.multitask  # noqa: F401
    import m3bert_tf.models.pretrainer  # noqa: F401

    return keras.saving.load_model(path)


def encoder_file(run_dir: str) -> str:
    """The file `load_encoder` reads: a pretraining run's encoder.keras, or a
    fine-tuning run's multitask.keras. Raises FileNotFoundError naming the run."""
    for name in (ENCODER_NAME, MULTITASK_NAME):
        if storage.exists(os.path.join(run_dir, name)):
            return os.path.join(run_dir, name)
    raise FileNotFoundError(
        f"{run_dir}: no {ENCODER_NAME} or {MULTITASK_NAME} (not a finished bin/pretrain "
        "or bin/finetune run)"
    )


def snapshot_path(run_dir: str, step: int) -> str:
    """The snapshot file of `run@step`; FileNotFoundError naming the steps kept."""
    path = snapshot_file(run_dir, step)
    if not storage.exists(path):
        kept = snapshot_steps(run_dir)
        raise FileNotFoundError(
            f"{run_dir}@{step}: no encoder snapshot of step {step} (kept: "
            f"{', '.join(map(str, kept)) or 'none; pretrain with --snapshot_every=N'})"
        )
    return path


def load_encoder(run_dir: str, step: int | None = None):
    """The `M3BertEncoder` of a run: a pretraining run's encoder.keras (or its
    snapshot of `step`), or the encoder inside a fine-tuning run's
    multitask.keras."""
    if step is not None:
        return _load_keras(snapshot_path(run_dir, step))
    path = encoder_file(run_dir)
    if path.endswith(ENCODER_NAME):
        return _load_keras(path)
    return load_multitask(run_dir).encoder


def load_multitask(run_dir: str):
    """The `M3BertMultiTask` model of a finished bin/finetune run."""
    path = os.path.join(run_dir, MULTITASK_NAME)
    if not storage.exists(path):
        raise FileNotFoundError(
            f"{run_dir}: no {MULTITASK_NAME} (not a finished bin/finetune run)"
        )
    return _load_keras(path)


def is_export(path: str) -> bool:
    """Whether `path` is an export version directory (bin/export's), not a run."""
    return storage.exists(os.path.join(path, SAVED_MODEL_NAME))


def read_export_info(path: str) -> dict:
    """An export's export.json. Raises FileNotFoundError naming the file when
    the directory has a SavedModel but not ours (made elsewhere, or damaged)."""
    info = os.path.join(path, EXPORT_INFO_NAME)
    if not storage.exists(info):
        raise FileNotFoundError(
            f"{path}: a SavedModel without {EXPORT_INFO_NAME}: not a bin/export directory "
            "(or a damaged one); export the run again"
        )
    return storage.read_json(info)


def load_model(run_dir: str):
    """(model, kind) of a finished run directory: a fine-tuning run's
    M3BertMultiTask ("finetuned") or a pretraining run's M3BertEncoder
    ("pretrained")."""
    if storage.exists(os.path.join(run_dir, MULTITASK_NAME)):
        return load_multitask(run_dir), "finetuned"
    return load_encoder(run_dir), "pretrained"
