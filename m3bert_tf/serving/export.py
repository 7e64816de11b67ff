"""`bin/export`: a trained run -> a SavedModel version directory for TensorFlow Serving.

    path = export_run("runs/finetune", "exports/m3bert")   # -> exports/m3bert/1

<base>/<N>/ holds (N: the next integer, or the one asked for; an existing
version is never overwritten: the directory is written under a temporary name
and renamed into place):

    saved_model.pb, variables/      the signatures of `signatures.SIGNATURES`
                                    the model has (embed = serving_default)
    assets/labels_<task>.txt        class (or output) names, one per line
    assets.extra/tf_serving_warmup_requests
                                    PredictionLog records TF Serving replays
    labels.json                     {task: {"kind", "names"}}
    export.json                     model config, input spec (feature spec,
                                    normalization and its statistics), the
                                    training crop, package version

The signatures (`serving.graph`; their inputs: `serving.signatures`) take
`features` [batch, time, 324] float32 normalized as the model was trained,
and `lengths` [batch] int32; the waveform ones take `waveform` [batch,
samples] float32 at 44.1 kHz and `lengths` [batch] int32 real samples, the
features computed inside the graph by the TensorFlow front end (`frontend/`:
core ops only). Keras 3's
`ExportArchive` writes them with their input names and dtypes; no jit_compile
(the time axis is `None`, XLA would recompile for every length).
"""

import dataclasses
import os

import numpy as np

from m3bert_tf import runs, schema
from m3bert_tf.io import storage
from m3bert_tf.serving import signatures
from m3bert_tf.version import __version__

EXPORT_INFO_NAME = runs.EXPORT_INFO_NAME
LABELS_NAME = "labels.json"
WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
MODEL_NAME = "m3bert"  # the model name docs/serve.md's serving command uses


class ExportError(ValueError):
    """A refused export (existing version, not a finished run); names what."""


def next_version(base: str) -> int:
    """1 + the largest integer version directory under `base` (1 when none)."""
    versions = (
        [int(n) for n in storage.listdir(base) if n.isdigit()]
        if storage.isdir(base)
        else []
    )
    return max(versions, default=0) + 1


def export_info(model_dir: str, kind: str, computations) -> dict:
    """The content of export.json."""
    config = runs.read_config(model_dir)
    results = os.path.join(
        model_dir, runs.RESULTS_NAME if kind == "pretrained" else runs.METRICS_NAME
    )
    return {
        "package_version": __version__,
        "source_run": storage.abspath(model_dir),
        "kind": kind,
        # Which weights: the run's last step and a digest of its model files
        # (`runs.model_digest`: equal digests, equal weights).
        "step": storage.read_json(results).get("step") if storage.exists(results) else None,
        "model_digest": runs.model_digest(model_dir),
        "config": config,
        "input_spec": runs.read_input_spec(model_dir),
        "training_frames": runs.training_frames(model_dir),
        "sample_rate": schema.SAMPLE_RATE,
        "hop_length": schema.HOP_LENGTH,
        "num_features": schema.NUM_FEATURES,
        "encoder": {
            "num_layers": computations.num_layers,
            "hidden_dim": computations.hidden_dim,
            "frame_stack": computations.frame_stack,
            "block": computations.encoder.block,
        },
        "enrichment_dim": computations.enrichment_dim,
        "input_sample_rate": computations.input_sample_rate,
        "tasks": computations.tasks,
        "signatures": [s.name for s in signatures.available(computations)],
        "dtype": "float32",
    }


def labels_of(tasks: list[dict]) -> dict:
    """{task: {"kind", "names"}}: class names, or a regression task's output names."""
    return {
        t["name"]: {
            "kind": t["kind"],
            "names": list(t["outputs"] if t["kind"] == "regression" else t["classes"]),
        }
        for t in tasks
    }


def warmup_requests(computations, frames: int) -> list:
    """PredictionLog records: each signature at batch 1 and 4 of its input
    kind's example (`signatures.INPUT_KINDS`; features of `frames` frames,
    the window bin/embed sends), the 4 of mixed lengths."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    rng = np.random.default_rng(0)
    logs = []
    for signature in signatures.available(computations):
        for batch in (1, 4):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(
                    name=MODEL_NAME, signature_name=signature.name
                )
            )
            example = signatures.warmup_example(signature, computations, batch, frames, rng)
            for name, value in example.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            logs.append(
                prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request)
                )
            )
    return logs


def write_savedmodel(computations, path: str) -> None:
    """The signatures of `computations` as a SavedModel at `path`."""
    import keras

    archive = keras.export.ExportArchive()
    for trackable in computations.trackables():
        archive.track(trackable)
    # In table order: the first endpoint added is also served as "serving_default".
    for signature in signatures.available(computations):
        archive.add_endpoint(
            signature.name, signature.compute(computations),
            input_signature=signatures.input_specs(signature, computations),
        )  # fmt: skip
    archive.write_out(path, verbose=False)


def write_litert_files(model, input_spec: dict, input_sample_rate: int, directory: str,
                       log=print) -> dict:  # fmt: skip
    """The LiteRT files of `model` in `directory` (`litert.write_litert`), from
    its computations in LiteRT's builtin operators (`builtin_ops`: the front
    end's LiteRT form), written as a SavedModel in a directory of their own."""
    import shutil
    import tempfile

    from m3bert_tf.serving import litert
    from m3bert_tf.serving.graph import Computations

    computations = Computations(model, input_spec, input_sample_rate, builtin_ops=True)
    keys = [
        s.name for s in signatures.available(computations)
        if s.name in litert.LITERT_SIGNATURES
    ]  # fmt: skip
    staging = tempfile.mkdtemp(prefix="m3bert-litert-")
    try:
        write_savedmodel(computations, os.path.join(staging, "saved"))
        return litert.write_litert(os.path.join(staging, "saved"), keys, directory, log)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What `bin/export` exports (`export_run`'s arguments).

    Attributes:
      model_dir: a finished bin/pretrain or bin/finetune run.
      export_dir: the base directory; the SavedModel goes to <export_dir>/<version>/.
      version: the version number; default: one more than the largest there.
      input_sample_rate: Hz of the audio the waveform signatures take
        (resampled in the graph).
      litert: also write model.tflite (and its float16 and int8 variants)
        into the version directory: LiteRT, builtin operators only, the
        front end included (`serving/litert.py`).
    """

    model_dir: str
    export_dir: str
    version: int | None = None
    input_sample_rate: int = schema.SAMPLE_RATE
    litert: bool = False


def export_run(
    model_dir: str, export_base: str, version: int | None = None, log=print,
    input_sample_rate: int = schema.SAMPLE_RATE, litert: bool = False,
) -> str:  # fmt: skip
    """Exports a finished bin/pretrain or bin/finetune run; returns `<base>/<N>`.

    `input_sample_rate`: Hz of the waveforms the waveform signatures take
    (resampled to 44.1 kHz inside the graph when other). `litert`: also
    `<base>/<N>/model*.tflite` (`litert.write_litert`).

    Raises:
      ExportError: `version` exists already, or `model_dir` is no finished run.
      FileNotFoundError: `model_dir` is missing.
    """
    from m3bert_tf.io import locks
    from m3bert_tf.serving.graph import Computations

    if not storage.isdir(model_dir):
        raise ExportError(f"model_dir={model_dir}: no such directory")
    try:
        model, kind = runs.load_model(model_dir)
    except FileNotFoundError as e:
        raise ExportError(str(e)) from None
    if input_sample_rate <= 0:
        raise ExportError(f"input_sample_rate={input_sample_rate}: a rate in Hz is needed")
    training = locks.holder(model_dir)
    if training:
        log(
            f"export: warning: {model_dir} is in use by a running job (pid {training}); "
            "exporting the model it saved last (export.json records its step and digest)"
        )
    computations = Computations(model, runs.read_input_spec(model_dir), input_sample_rate)
    if version is not None and version < 1:
        raise ExportError(f"version={version}: versions are positive integers")
    # One export at a time into a base: a second one waits, then takes the next version.
    with locks.DirectoryLock(export_base, "export_dir", log, wait=True):
        return _export_locked(
            model_dir, export_base, version, log, model, kind, computations, litert
        )


def _export_locked(model_dir, export_base, version, log, model, kind, computations,
                   litert=False) -> str:  # fmt: skip
    import tensorflow as tf

    from m3bert_tf.data.windows import default_window_frames

    version = next_version(export_base) if version is None else version
    final = os.path.join(export_base, str(version))
    if storage.exists(final):
        raise ExportError(f"{final} exists: versions are never overwritten (omit version "
                          "to take the next one)")  # fmt: skip
    temporary = os.path.join(export_base, f".{version}{storage.TMP_SUFFIX}")
    storage.rmtree(temporary)
    info = export_info(model_dir, kind, computations)
    try:
        write_savedmodel(computations, temporary)
        labels = labels_of(computations.tasks)
        storage.makedirs(os.path.join(temporary, "assets"))
        for task, entry in labels.items():
            with storage.open(
                os.path.join(temporary, "assets", f"labels_{task}.txt"), "w"
            ) as f:
                f.write("".join(f"{n}\n" for n in entry["names"]))
        storage.makedirs(os.path.dirname(os.path.join(temporary, WARMUP_PATH)))
        with tf.io.TFRecordWriter(os.path.join(temporary, WARMUP_PATH)) as writer:
            frames = default_window_frames(
                info["training_frames"], computations.frame_stack
            )
            for record in warmup_requests(computations, frames):
                writer.write(record.SerializeToString())
        storage.write_json(os.path.join(temporary, LABELS_NAME), labels)
        if litert:
            info["litert"] = write_litert_files(
                model, runs.read_input_spec(model_dir), computations.input_sample_rate,
                temporary, log,
            )  # fmt: skip
        storage.write_json(os.path.join(temporary, EXPORT_INFO_NAME), info)
        # A version that appeared meanwhile (a non-empty directory) is not
        # replaced on a local disk: rename(2) fails on it.
        storage.replace(temporary, final)
    except BaseException:
        storage.rmtree(temporary)
        raise
    log(f"exported {kind} model {model_dir} -> {final} "
        f"(signatures: {', '.join(info['signatures'])})")  # fmt: skip
    return final
