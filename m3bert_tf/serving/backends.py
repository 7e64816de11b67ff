"""How `serving.api.Model` calls a model's computations: an export's
signatures, or a run directory's Keras model through the same `Computations`.

Both answer `call(signature, *values)` with numpy arrays in and out, the
values fed as the signature's input kind says (`signatures.feed`), and the
shorthands `backend(signature, features, lengths)`, `predict_clip(clip)` and,
where the model has the TensorFlow front end, `waveform_features(waveform,
lengths)`; `signatures` names what they serve.
"""

import re
import sys

import numpy as np

from m3bert_tf.serving import signatures as table


def request_error(signature: str, error: Exception) -> ValueError:
    """The one line a refused request deserves: the graph's own check
    ("assertion failed: [...]", "...: NaN or infinity"), or the last
    "ValueError:" line of a trace-time error, after the signature's name."""
    text = getattr(error, "message", None) or str(error)
    found = (
        re.search(r"assertion failed: \[(.*?)\](?: \[|\s*$)", text, re.M)
        or re.search(r"^\s*(\S.*?) : Tensor had (?:NaN|Inf)", text, re.M)
        or re.search(
            r".*ValueError: (.*)", text.strip().splitlines()[-1] if text.strip() else ""
        )
    )
    line = (
        found.group(1)
        if found
        else (text.strip().splitlines() or [type(error).__name__])[-1]
    )
    return ValueError(f"{signature}: {line.strip()}")


def _graph_refusals() -> tuple:
    """TensorFlow's error for a refused request, where TensorFlow is loaded
    (a LiteRT backend never imports it)."""
    tf = sys.modules.get("tensorflow")
    return (tf.errors.InvalidArgumentError,) if tf is not None else ()


class _Backend:
    """The shorthands every backend answers through its `call`: a request
    the model's graph refuses raises ValueError in one line (`request_error`)."""

    signatures: set

    def call(self, signature: str, *values) -> dict:
        if signature not in self.signatures:
            raise ValueError(
                f"{signature}: not served by this model (it serves {', '.join(sorted(self.signatures))})"
            )
        try:
            return self._call(signature, *values)
        except (ValueError, *_graph_refusals()) as e:
            raise request_error(signature, e) from None

    def _call(self, signature: str, *values) -> dict:
        raise NotImplementedError

    def __call__(self, signature: str, features: np.ndarray, lengths: np.ndarray) -> dict:
        return self.call(signature, features, lengths)

    def waveform_features(self, waveform: np.ndarray, lengths: np.ndarray) -> dict:
        return self.call("waveform_features", waveform, lengths)

    def predict_clip(self, clip_enrichment: np.ndarray) -> dict:
        return self.call("predict_clip", clip_enrichment)


class SavedModelBackend(_Backend):
    """Calls an exported SavedModel's signatures."""

    def __init__(self, path: str):
        import tensorflow as tf

        self._model = tf.saved_model.load(path)
        self.signatures = set(self._model.signatures.keys())
        clip = self._model.signatures.get("predict_clip")  # its input's width: E
        self.enrichment_dim = (
            clip.structured_input_signature[1]["clip_enrichment"].shape[-1]
            if clip
            else None
        )

    def _call(self, signature: str, *values) -> dict:
        out = self._model.signatures[signature](
            **table.feed(signature, values, self.enrichment_dim)
        )
        return {k: v.numpy() for k, v in out.items()}


class KerasBackend(_Backend):
    """Runs a run directory's Keras model through the same computations an export serves."""

    def __init__(self, model, input_spec: dict | None = None):
        import tensorflow as tf

        from m3bert_tf.serving.graph import Computations

        self.computations = Computations(model, input_spec)
        served = table.available(self.computations, in_memory=True)
        self._fns = {
            s.name: tf.function(s.compute(self.computations), reduce_retracing=True)
            for s in served
        }
        self.signatures = set(self._fns)

    def _call(self, signature: str, *values) -> dict:
        fed = table.feed(signature, values, self.computations.enrichment_dim)
        out = self._fns[signature](*fed.values())
        return {k: v.numpy() for k, v in out.items()}
