"""How `serving.api.Model` calls a model's computations: an export's
signatures, or a run directory's Keras model through the same `Computations`.

Both answer `backend(signature, features, lengths)`, `predict_clip(clip)`
and, where the model has the TensorFlow front end, `waveform_features(waveform,
lengths)`, with numpy arrays; `signatures` names what they serve.
"""

import numpy as np


class SavedModelBackend:
    """Calls an exported SavedModel's signatures."""

    def __init__(self, path: str):
        import tensorflow as tf

        self._tf = tf
        self._model = tf.saved_model.load(path)
        self.signatures = set(self._model.signatures.keys())

    def __call__(self, signature: str, features: np.ndarray, lengths: np.ndarray) -> dict:
        fn = self._model.signatures[signature]
        out = fn(
            features=self._tf.constant(features, self._tf.float32),
            lengths=self._tf.constant(lengths, self._tf.int32),
        )
        return {k: v.numpy() for k, v in out.items()}

    def waveform_features(self, waveform: np.ndarray, lengths: np.ndarray) -> dict:
        fn = self._model.signatures["waveform_features"]
        out = fn(
            waveform=self._tf.constant(waveform, self._tf.float32),
            lengths=self._tf.constant(lengths, self._tf.int32),
        )
        return {k: v.numpy() for k, v in out.items()}

    def predict_clip(self, clip_enrichment: np.ndarray) -> dict:
        fn = self._model.signatures["predict_clip"]
        out = fn(clip_enrichment=self._tf.constant(clip_enrichment, self._tf.float32))
        return {k: v.numpy() for k, v in out.items()}


class KerasBackend:
    """Runs a run directory's Keras model through the same computations an export serves."""

    def __init__(self, model, input_spec: dict | None = None):
        import tensorflow as tf

        from m3bert_tf.serving import signatures
        from m3bert_tf.serving.graph import Computations

        self._tf = tf
        self.computations = Computations(model, input_spec)
        served = signatures.available(self.computations, in_memory=True)
        self._fns = {
            s.name: tf.function(s.compute(self.computations), reduce_retracing=True)
            for s in served
        }
        self.signatures = set(self._fns)

    def __call__(self, signature: str, features: np.ndarray, lengths: np.ndarray) -> dict:
        out = self._fns[signature](
            self._tf.constant(features, self._tf.float32),
            self._tf.constant(lengths, self._tf.int32),
        )
        return {k: v.numpy() for k, v in out.items()}

    def waveform_features(self, waveform: np.ndarray, lengths: np.ndarray) -> dict:
        out = self._fns["waveform_features"](
            self._tf.constant(waveform, self._tf.float32),
            self._tf.constant(lengths, self._tf.int32),
        )
        return {k: v.numpy() for k, v in out.items()}

    def predict_clip(self, clip_enrichment: np.ndarray) -> dict:
        out = self._fns["predict_clip"](
            self._tf.constant(clip_enrichment, self._tf.float32)
        )
        return {k: v.numpy() for k, v in out.items()}
