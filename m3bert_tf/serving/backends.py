"""How `serving.api.Model` calls a model's computations: an export's
signatures, or a run directory's Keras model through the same `Computations`.

Both answer `call(signature, *values)` with numpy arrays in and out, the
values fed as the signature's input kind says (`signatures.feed`), and the
shorthands `backend(signature, features, lengths)`, `predict_clip(clip)` and,
where the model has the TensorFlow front end, `waveform_features(waveform,
lengths)`; `signatures` names what they serve.
"""

import numpy as np

from m3bert_tf.serving import signatures as table


class _Backend:
    """The shorthands every backend answers through its `call`."""

    signatures: set

    def call(self, signature: str, *values) -> dict:
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

    def call(self, signature: str, *values) -> dict:
        out = self._model.signatures[signature](**table.feed(signature, values))
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

    def call(self, signature: str, *values) -> dict:
        out = self._fns[signature](*table.feed(signature, values).values())
        return {k: v.numpy() for k, v in out.items()}
