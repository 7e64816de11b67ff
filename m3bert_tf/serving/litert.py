"""The model in TensorFlow's on-device format, LiteRT (`.tflite`): the
export's signatures in builtin operators only, the audio front end included,
and the backend that runs them (`ai_edge_litert`).

    bin/export --litert                                # model*.tflite in the version dir
    m3bert_tf.load("<version_dir>/model.tflite")       # the same Model interface

Builtin operators only (`TFLITE_BUILTINS`): a model with TensorFlow ("Flex")
operators does not run in `ai_edge_litert` (google-ai-edge/LiteRT#6458), so
the conversion fails, naming every operator that is not builtin, rather than
falling back to them. The waveform signatures take the front end's LiteRT
form (`FrontEnd(builtin_ops=True)`: the CQT by real time-domain kernels, the
MFCC's DCT as a matrix, CMVN in float32; the STFT stays LiteRT's RFFT2D).
The time axis stays dynamic (a signature runner resizes its inputs per
call). The graph's input checks are TensorFlow assertions, which the
converter drops: `LiteRTBackend` makes the same checks before calling the
model (`check_rows`), so a request is refused with the SavedModel's words.
The metadata (`export.json`: feature spec, normalization, frame and sample
rates, version, model digest, the files written here) is the export's,
beside the files.

Variants (`VARIANTS`): float32; float16 weights (half the size, computed in
float32); dynamic-range int8 (weights int8, a quarter of the size,
activations quantized per call). Full-integer int8 (TFLITE_BUILTINS_INT8
with a representative dataset) is not written: it converts for the
features-in signatures, but its fixed activation ranges do not hold over the
dynamic time axis (2026-12-07, tiny model calibrated on 64-frame crops:
clip embeddings at cosine 0.999 to float32's at 64 frames, 0.89 at 7 and
0.55 at 300), and the front end's FFT and logarithms do not quantize.
"""

import os

import numpy as np

from m3bert_tf import schema
from m3bert_tf.io import storage
from m3bert_tf.serving.backends import _Backend
from m3bert_tf.serving.graph import (
    MAX_FRAMES,
    MAX_FRONTEND_SECONDS,
    MAX_REQUEST_SECONDS,
    MAX_SECONDS,
    MIN_FRAMES,
)

LITERT_NAME = "model.tflite"  # float32, in an export version directory beside export.json
VARIANTS = {"float32": LITERT_NAME, "float16": "model_float16.tflite",
            "int8": "model_int8.tflite"}  # fmt: skip
# What a LiteRT file serves: every signature of the export but WAV bytes in
# (core tf.audio.decode_wav is no builtin; decode before, as the Python API does).
LITERT_SIGNATURES = ("embed", "embed_all_layers", "predict", "predict_clip",
                     "embed_waveform", "predict_waveform", "waveform_features")  # fmt: skip


def write_litert(saved_dir: str, keys: list, directory: str, log=print) -> dict:
    """Converts the signatures `keys` of the SavedModel at `saved_dir` (the
    export's computations with `builtin_ops`, `export.write_litert_files`)
    into the `VARIANTS` files in `directory`; returns export.json's "litert"
    entry: {"signatures", "files": {variant: {"file", "bytes"}}}.

    Raises:
      ValueError: an operator is not a LiteRT builtin (the converter names it).
    """
    files = {}
    for variant, name in VARIANTS.items():
        blob = _convert(saved_dir, keys, variant, directory)
        storage.write_atomic(os.path.join(directory, name), blob)
        files[variant] = {"file": name, "bytes": len(blob)}
    sizes = ", ".join(f"{v} {f['bytes'] / 1e6:.2f} MB" for v, f in files.items())
    log(f"export: LiteRT (builtin operators; {', '.join(keys)}): {sizes}")
    return {"signatures": list(keys), "files": files}


def _convert(saved_dir: str, keys: list, variant: str, directory: str) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_dir, signature_keys=keys)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights, dynamic range
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        return converter.convert()
    except Exception as e:  # the converter's ConverterError lists each operator
        raise ValueError(
            f"{directory}: LiteRT conversion ({variant}, builtin operators only) failed: "
            f"{str(e).strip().splitlines()[0]}"
        ) from None


def op_names(path: str) -> set[str]:
    """The operators a `.tflite` file uses, in every signature's subgraph (its
    operator codes): builtin names ("FULLY_CONNECTED"), a custom operator by
    its code ("FlexMatMul" for a TensorFlow one)."""
    from ai_edge_litert import schema_py_generated as schema_fb

    with storage.open(path, "rb") as f:
        model = schema_fb.Model.GetRootAs(f.read(), 0)
    names = {
        v: k for k, v in vars(schema_fb.BuiltinOperator).items() if not k.startswith("_")
    }
    out = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        out.add(custom.decode() if custom else names.get(builtin, str(builtin)))
    return out


def _interpreter(path: str):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ImportError(
            f"{path}: a LiteRT file runs on ai-edge-litert: pip install 'm3bert_tf[litert]'"
        ) from None

    threads = os.cpu_count() or 1
    if storage.is_url(path):  # gs://, s3://: read through the file system's driver
        with storage.open(path, "rb") as f:
            return Interpreter(model_content=f.read(), num_threads=threads)
    return Interpreter(model_path=path, num_threads=threads)


def check_rows(values: np.ndarray, lengths: np.ndarray, name: str, unit: str, most: int,
               least: int = 1, total: int | None = None) -> np.ndarray:  # fmt: skip
    """The checks the SavedModel makes in its graph (`graph._checked`,
    `graph.INPUT_LIMITS`), for a runtime that drops assertions: `values`
    [B, N, ...] with `lengths` [B] real `unit`s per row; returns `values`
    with their padding set to zero.

    Raises:
      ValueError: naming the input, in the SavedModel's words.
    """
    batch, width = values.shape[0], values.shape[1]
    if batch < 1:
        raise ValueError(f"{name}: a request needs at least one row")
    if total is not None and batch * width > total:
        raise ValueError(f"{name}: at most {total} {unit} per request (rows x {unit} sent); "
                         "send fewer or shorter rows")  # fmt: skip
    if lengths.shape != (batch,):
        raise ValueError(f"lengths: one entry per row of {name} is needed")
    if (lengths < least).any():
        raise ValueError(f"lengths: every row needs at least {least} real {unit}")
    if (lengths > width).any():
        raise ValueError(f"lengths: a row's length exceeds the {unit} of {name} sent")
    if width > most:
        raise ValueError(
            f"{name}: at most {most} {unit} per row; window longer audio "
            "(bin/embed and m3bert_tf.load(...).embed_file do)"
        )
    real = np.arange(width)[None, :] < lengths[:, None]
    values = np.where(real.reshape(real.shape + (1,) * (values.ndim - 2)), values, 0.0)
    if not np.isfinite(values).all():
        raise ValueError(f"{name}: NaN or infinity in a real {unit[:-1]}")
    return values.astype(np.float32)


class LiteRTBackend(_Backend):
    """Runs a `.tflite` file's signatures through `ai_edge_litert` (one
    signature runner per entry point, inputs resized per call), each request
    checked first as the SavedModel checks it."""

    def __init__(self, path: str, info: dict):
        self._interpreter = _interpreter(path)
        listed = self._interpreter.get_signature_list()
        self.signatures = set(listed)
        self._runners = {
            name: self._interpreter.get_signature_runner(name) for name in listed
        }
        self.enrichment_dim = info.get("enrichment_dim")
        self.rate = int(info.get("input_sample_rate") or schema.SAMPLE_RATE)

    def _call(self, signature: str, *values) -> dict:
        from m3bert_tf.serving import signatures as table

        fed = table.checked_values(signature, values, self.enrichment_dim)
        if "features" in fed:
            fed["features"] = check_rows(
                fed["features"], fed["lengths"], "features", "frames", MAX_FRAMES
            )
        elif "waveform" in fed:
            seconds = (MAX_FRONTEND_SECONDS,) * 2 if signature == "waveform_features" else (
                MAX_SECONDS, MAX_REQUEST_SECONDS)  # fmt: skip
            least = -(
                -(MIN_FRAMES - 1) * schema.HOP_LENGTH * self.rate // schema.SAMPLE_RATE
            )
            fed["waveform"] = check_rows(
                fed["waveform"], fed["lengths"], "waveform", "samples",
                int(seconds[0] * self.rate), least, int(seconds[1] * self.rate),
            )  # fmt: skip
        elif not np.isfinite(fed["clip_enrichment"]).all():
            raise ValueError("clip_enrichment: NaN or infinity")
        return dict(self._runners[signature](**fed))
