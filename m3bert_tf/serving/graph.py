"""The serving computations of a trained model: what every signature computes.

    computations = Computations(model)     # an M3BertEncoder or M3BertMultiTask
    computations.embed(features, lengths)
    computations.embed_all_layers(features, lengths)
    computations.predict(features, lengths)          # fine-tuned models only

Inputs: `features` [B, T, 324] float32, normalized as the model was trained;
`lengths` [B] int32, real frames per row (frames past a row's length are
padding, never attended to). Outputs, dicts of float32 tensors; T' = ceil(T / k)
with k the encoder's frame stack, and padded frames are zeros:

- embed: "frame_embeddings" [B, T', H] (last layer), "clip_embedding" [B, H]
  (the mean over real frames), "frame_lengths" [B] int32 (real frames in
  T'); a fine-tuned model adds "frame_enrichment" [B, T', E] and
  "clip_enrichment" [B, E] (its enrichment layer, the M3BERT embedding).
- embed_all_layers: "frame_embeddings" [B, L, T', H], "clip_embedding"
  [B, L, H], "frame_lengths".
- predict: one [B, outputs] tensor per task (probabilities or values).
- embed_waveform / predict_waveform: embed / predict of `waveform` [B, S]
  float32 at the input sample rate (44.1 kHz unless built for another) with
  `lengths` [B] int32 real samples, the features
  computed by the TensorFlow front end (`frontend/`) as the model's training
  data was extracted and normalized (models built with an input spec).
- embed_wav_bytes: embed_waveform of [B] WAV files' bytes (at the input rate).
- waveform_features: the front end alone (features and frame lengths).
- predict_clip: the same from `clip_enrichment` [B, E] (the heads alone),
  for a clip longer than a window: its frames' enrichment pooled over every
  window first, as fine-tuning scores whole clips.

The export (`serving.export`) and the in-memory run-directory backend
(`serving.api`) both call these, so a SavedModel and the Keras model compute
the same thing. Every computation runs in float32 (`float32_copy`), whatever
precision the model trained in.

Inputs are checked inside the graph, so TF Serving answers a bad request with
INVALID_ARGUMENT and a message naming the input (`INPUT_LIMITS`): `lengths`
one per row, each at least 1 and at most the frames (samples) sent; at most
`MAX_SECONDS` of audio per row (attention memory grows with the square of the
frames: longer audio is windowed by the caller, as bin/embed and
`m3bert_tf.load(...).embed_file` do; `waveform_features`, the front end
alone, takes any length); NaN or infinity in a real frame or
sample refused; whatever padding holds is ignored (set to zero); a waveform
at least `MIN_FRAMES` frames long (the delta features' width); WAV bytes with
a RIFF/WAVE header.
"""

import keras
import numpy as np
import tensorflow as tf

from m3bert_tf import schema
from m3bert_tf.features.frames import DELTA_WIDTH
from m3bert_tf.layers.pooling import MaskedMeanPooling

MAX_SECONDS = 60.0  # of audio per row of one request
MAX_FRAMES = int(MAX_SECONDS * schema.FRAMES_PER_SECOND) + 1  # 2584 + 1
# Audio per request of a waveform signature (rows x samples sent): the front
# end's memory grows with it (4 rows of 60 s: +0.9 GB at the peak, measured
# 2026-12-07 on an AMD EPYC; 8 x 30 s is bin/embed's default batch).
MAX_REQUEST_SECONDS = 480.0
# Audio per request of `waveform_features` (the front end alone, no
# encoder): 600 s peaked at +1.2 GB (same day and CPU), about 2 MB a second.
MAX_FRONTEND_SECONDS = 600.0
MIN_FRAMES = DELTA_WIDTH  # the front end's delta MFCCs need this many frames
INPUT_LIMITS = (
    f"lengths: one per row, 1 <= length <= the frames or samples sent; at most "
    f"{MAX_SECONDS:g} s ({MAX_FRAMES} frames) per row and {MAX_REQUEST_SECONDS:g} s "
    f"per request of waveforms; waveform_features at most {MAX_FRONTEND_SECONDS:g} s "
    f"per request; a waveform row at least "
    f"{MIN_FRAMES} frames ({(MIN_FRAMES - 1) * schema.HOP_LENGTH / schema.SAMPLE_RATE:.3f} s); "
    "at least one row; no NaN or infinity in real frames or samples"
)


def check_frontend_seconds(seconds: float, name: str) -> None:
    """Refuses audio longer than the TensorFlow front end takes in one piece
    (`graph.MAX_FRONTEND_SECONDS`), naming the librosa front end, block-wise,
    which takes any length."""
    if seconds > MAX_FRONTEND_SECONDS:
        raise ValueError(
            f"{name}: {seconds / 60:.1f} min of audio; the TensorFlow front end takes at "
            f"most {MAX_FRONTEND_SECONDS / 60:g} min in one piece (its memory grows with "
            "the audio): load the model with frontend='librosa' (block-wise, any length)"
        )


def _checked(values, lengths, name: str, unit: str, most: int, least: int = 1,
             total: int | None = None, seconds: float = MAX_SECONDS):  # fmt: skip
    """(values with padding set to zero, lengths) after the checks of
    `INPUT_LIMITS`: `values` [B, N, ...] float32 named `name`, `lengths` [B]
    int32 real `unit`s per row, at least `least` and at most `most` (that
    is `seconds` of audio), B >= 1 and B x N at most `total`."""
    values = tf.convert_to_tensor(values, tf.float32)
    lengths = tf.convert_to_tensor(lengths, tf.int32)
    shape = "[batch, frames, 324]" if unit == "frames" else "[batch, samples]"
    tf.debugging.assert_rank(
        values, len(shape.split(",")), message=f"{name}: {shape} is needed"
    )
    tf.debugging.assert_rank(lengths, 1, message="lengths: [batch] is needed")
    batch, width = tf.shape(values)[0], tf.shape(values)[1]
    sent = tf.cast(batch, tf.int64) * tf.cast(width, tf.int64)
    most_sent = total if total is not None else np.iinfo(np.int64).max
    trailing = [schema.NUM_FEATURES] if unit == "frames" else []
    checks = [
        tf.debugging.assert_greater_equal(
            batch, 1, message=f"{name}: a request needs at least one row"
        ),
        tf.debugging.assert_equal(
            tf.shape(values)[2:], tf.constant(trailing, tf.int32),
            message=f"{name}: {shape} is needed",
        ),
        tf.debugging.assert_less_equal(
            sent, tf.constant(most_sent, tf.int64),
            message=f"{name}: at most {total} {unit} per request (rows x {unit} sent); "
            "send fewer or shorter rows",
        ),
        tf.debugging.assert_equal(
            tf.size(lengths), batch, message=f"lengths: one entry per row of {name} is needed"
        ),
        tf.debugging.assert_greater_equal(
            lengths, least, message=f"lengths: every row needs at least {least} real {unit}"
        ),
        tf.debugging.assert_less_equal(
            lengths, width, message=f"lengths: a row's length exceeds the {unit} of {name} sent"
        ),
        tf.debugging.assert_less_equal(
            width, most,
            message=f"{name}: at most {most} {unit} ({seconds:g} s) per row; window "
            "longer audio (bin/embed and m3bert_tf.load(...).embed_file do)",
        ),
    ]  # fmt: skip
    with tf.control_dependencies(checks):
        mask = tf.sequence_mask(lengths, width)
        while len(mask.shape) < len(values.shape):
            mask = tf.expand_dims(mask, -1)
        values = tf.where(mask, values, tf.zeros_like(values))
        values = tf.debugging.check_numerics(
            values, f"{name}: NaN or infinity in a real {unit[:-1]}"
        )
    return values, lengths


def _to_float32(config):
    """A serialized Keras config with every dtype policy set to float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy":
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {k: _to_float32(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_to_float32(v) for v in config]
    if isinstance(config, str) and config.startswith("mixed_"):
        return "float32"
    return config


def float32_copy(model: keras.Model) -> keras.Model:
    """The same model with float32 variables and computations (a bf16/fp16
    mixed-precision model's weights are float32 already; its compute dtype is
    what changes)."""
    serialized = keras.saving.serialize_keras_object(model)
    copy = keras.saving.deserialize_keras_object(_to_float32(serialized))
    copy.set_weights(model.get_weights())
    return copy


def frontend_for(input_spec: dict, input_rate: int = 44100, builtin_ops: bool = False):
    """The `frontend.FrontEnd` computing a model's inputs from audio as its
    training data was extracted and normalized, or None where the front end
    cannot (a feature set without `FeatureSet.tf_frontend`); `builtin_ops`:
    its LiteRT form (`FrontEnd`)."""
    from m3bert_tf.features.frames import FeatureConfig
    from m3bert_tf.frontend import FrontEnd

    config = FeatureConfig.from_spec(input_spec.get("feature_spec"))
    if not config.variant.tf_frontend:
        return None
    return FrontEnd(
        config,
        input_spec["normalization"],
        input_spec.get("stats"),
        input_rate,
        builtin_ops,
    )


class Computations:
    """The serving functions of an encoder or a fine-tuned multi-task model.

    Attributes:
      encoder: the float32 `M3BertEncoder`.
      multitask: the float32 `M3BertMultiTask`, or None for an encoder.
      tasks: the multi-task model's TaskSpec dicts ([] for an encoder).
      num_layers, hidden_dim, frame_stack: the encoder's L, H and k.
      enrichment_dim: E of a fine-tuned model, else None.
    """

    def __init__(self, model: keras.Model, input_spec: dict | None = None,
                 input_sample_rate: int = 44100, builtin_ops: bool = False):  # fmt: skip
        model = float32_copy(model)
        # The TensorFlow front end (raw audio in at `input_sample_rate`) where
        # the model's features are ones it computes: the "paper" feature set;
        # `builtin_ops`: in LiteRT's builtin operators (`serving/litert.py`).
        self.input_sample_rate = int(input_sample_rate)
        self.frontend = (
            frontend_for(input_spec, self.input_sample_rate, builtin_ops)
            if input_spec is not None
            else None
        )
        self.multitask = model if hasattr(model, "tasks") else None
        self.encoder = model.encoder if self.multitask is not None else model
        self.tasks = list(self.multitask.tasks) if self.multitask is not None else []
        self.num_layers = self.encoder.num_layers
        self.hidden_dim = self.encoder.hidden_dim
        self.frame_stack = self.encoder.frame_stack
        self.enrichment_dim = (
            self.multitask.embedding_dim if self.multitask is not None else None
        )
        # One pass of the encoder gives every layer and the frame mask.
        encoded = self.encoder.output
        self._layers = keras.Model(
            self.encoder.input,
            {
                "layers": [block.output for block in self.encoder.blocks],
                "padding_mask": encoded["padding_mask"],
            },
            name="all_layers",
        )
        self._pooling = MaskedMeanPooling(name="serving_pooling")

    def trackables(self) -> list:
        """What an export must track: the models holding every variable used."""
        return [self._layers] + ([self.multitask] if self.multitask is not None else [])

    def _encode(self, features, lengths):
        features, lengths = _checked(features, lengths, "features", "frames", MAX_FRAMES)
        padding_mask = tf.sequence_mask(lengths, tf.shape(features)[1])
        out = self._layers(
            {"features": features, "padding_mask": padding_mask}, training=False
        )
        mask = out["padding_mask"]
        keep = tf.expand_dims(tf.cast(mask, tf.float32), -1)
        layers = [tf.cast(x, tf.float32) * keep for x in out["layers"]]
        return layers, mask, tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)

    def _enrich(self, last, mask):
        frames = self.multitask.get_layer("enrichment")(last)
        frames = frames * tf.expand_dims(tf.cast(mask, frames.dtype), -1)
        return frames, self._pooling(frames, mask)

    def embed(self, features, lengths) -> dict:
        layers, mask, frame_lengths = self._encode(features, lengths)
        out = {
            "frame_embeddings": layers[-1],
            "clip_embedding": self._pooling(layers[-1], mask),
            "frame_lengths": frame_lengths,
        }
        if self.multitask is not None:
            out["frame_enrichment"], out["clip_enrichment"] = self._enrich(layers[-1], mask)
        return out

    def embed_all_layers(self, features, lengths) -> dict:
        layers, mask, frame_lengths = self._encode(features, lengths)
        return {
            "frame_embeddings": tf.stack(layers, axis=1),
            "clip_embedding": tf.stack([self._pooling(x, mask) for x in layers], axis=1),
            "frame_lengths": frame_lengths,
        }

    def predict(self, features, lengths) -> dict:
        if self.multitask is None:
            raise ValueError("predict needs a fine-tuned model (a bin/finetune run)")
        layers, mask, _ = self._encode(features, lengths)
        _, clip = self._enrich(layers[-1], mask)
        return self.predict_clip(clip)

    def waveform_features(self, waveform, lengths) -> dict:
        """The model's inputs from waveforms at the input rate: "features" [B, T, 324]
        (normalized as in training), "frame_lengths" [B]; for clients that
        window a long track themselves (the Python and HEAR APIs). At most
        `MAX_FRONTEND_SECONDS` of audio per request: the front end's memory
        grows with the audio (not its square, as the encoder's)."""
        features, frame_lengths = self._features(
            waveform, lengths, MAX_FRONTEND_SECONDS, MAX_FRONTEND_SECONDS
        )
        return {"features": features, "frame_lengths": frame_lengths}

    def _features(self, waveform, lengths, row_seconds: float = MAX_SECONDS,
                  request_seconds: float = MAX_REQUEST_SECONDS):  # fmt: skip
        """The front end on checked waveforms (see `INPUT_LIMITS`): at most
        `row_seconds` per row (`MAX_SECONDS`: what then goes through the
        encoder) and `request_seconds` per request."""
        rate = self.input_sample_rate
        least = -(-(MIN_FRAMES - 1) * schema.HOP_LENGTH * rate // schema.SAMPLE_RATE)
        waveform, lengths = _checked(
            waveform, lengths, "waveform", "samples", int(row_seconds * rate), least,
            total=int(request_seconds * rate), seconds=row_seconds,
        )  # fmt: skip
        return self.frontend(waveform, lengths)

    def embed_waveform(self, waveform, lengths) -> dict:
        """`embed` of waveforms [B, S] at the input rate, [B] real samples, through
        the TensorFlow front end (features normalized as in training)."""
        return self.embed(*self._features(waveform, lengths))

    def predict_waveform(self, waveform, lengths) -> dict:
        """`predict` of waveforms at the input rate, through the TensorFlow front end."""
        return self.predict(*self._features(waveform, lengths))

    def embed_wav_bytes(self, wav_bytes) -> dict:
        """`embed_waveform` of a batch of WAV files' bytes ([B] string; 16-bit
        PCM, any channel count, averaged to mono; at the input sample rate,
        else an InvalidArgument error), decoded by core `tf.audio.decode_wav`."""

        def decode(contents):
            header = tf.strings.substr(tf.strings.join([contents, b"\0" * 12]), 0, 12)
            is_wav = tf.logical_and(
                tf.equal(tf.strings.substr(header, 0, 4), b"RIFF"),
                tf.equal(tf.strings.substr(header, 8, 4), b"WAVE"),
            )
            assertion = tf.debugging.Assert(
                tf.logical_and(tf.strings.length(contents) >= 12, is_wav),
                ["wav_bytes: a row is not a WAV file (no RIFF/WAVE header)"],
            )
            with tf.control_dependencies([assertion]):
                contents = tf.identity(contents)
            audio, rate = tf.audio.decode_wav(contents)
            tf.debugging.assert_equal(
                rate, self.input_sample_rate,
                message=f"embed_wav_bytes takes WAV files at {self.input_sample_rate} Hz",
            )  # fmt: skip
            return tf.RaggedTensor.from_tensor(tf.reduce_mean(audio, axis=1)[None])[0]

        waves = tf.map_fn(
            decode, wav_bytes, fn_output_signature=tf.RaggedTensorSpec([None], tf.float32)
        )
        lengths = tf.cast(waves.row_lengths(), tf.int32)
        return self.embed_waveform(waves.to_tensor(), lengths)

    def predict_clip(self, clip_enrichment) -> dict:
        if self.multitask is None:
            raise ValueError("predict_clip needs a fine-tuned model (a bin/finetune run)")
        clip = tf.convert_to_tensor(clip_enrichment, tf.float32)
        width = self.multitask.embedding_dim
        with tf.control_dependencies([
            tf.debugging.assert_equal(
                tf.shape(clip)[-1], width,
                message=f"clip_enrichment: [batch, {width}] is needed (the model's "
                "enrichment width)",
            ),
        ]):  # fmt: skip
            clip = tf.debugging.check_numerics(clip, "clip_enrichment: NaN or infinity")
        return {
            task["name"]: tf.cast(
                self.multitask.get_layer(f"head_{task['name']}")(clip), tf.float32
            )
            for task in self.tasks
        }
