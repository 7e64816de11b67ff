"""The HEAR 2021 API (https://hearbenchmark.com): how audio-representation
benchmarks call a model.

    import m3bert_tf.hear as module
    model = module.load_model("exports/m3bert/1")        # an export or a run directory
    emb, ts = module.get_timestamp_embeddings(audio, model)   # audio [n_sounds, n_samples]
    scene = module.get_scene_embeddings(audio, model)

Audio comes at `model.sample_rate` = 44100 Hz (HEAR resamples to it), float32
in [-1, 1]. Timestamp embeddings are the encoder's last-layer frames, one per
output frame: every 23.2 ms (1024 samples) times the frame stack, timestamps in
milliseconds at each frame's center (frame 0 at 0 ms). The scene embedding is
the clip embedding, their mean. Clips are embedded in windows of the model's
training crop (at most 30 s), windows of all clips batched together.
"""

import numpy as np
import tensorflow as tf

from m3bert_tf import schema


class HearModel(tf.Module):
    """A loaded M3BERT with the attributes HEAR reads.

    Attributes:
      sample_rate: 44100, or an export's --input_sample_rate.
      scene_embedding_size, timestamp_embedding_size: H, the encoder width.
      model: the `m3bert_tf.serving.api.Model` doing the work.
    """

    sample_rate = schema.SAMPLE_RATE

    def __init__(self, model):
        super().__init__(name="m3bert")
        self.model = model
        # An export built for another client rate takes audio at that rate.
        self.sample_rate = int(model.input_rate)
        self.scene_embedding_size = int(model.hidden_dim)
        self.timestamp_embedding_size = int(model.hidden_dim)


def load_model(model_file_path: str = "") -> HearModel:
    """Loads an export version directory (`bin/export`) or a run directory.

    There is no default model: M3BERT ships no weights, so an empty path is
    an error that says so.
    """
    if not model_file_path:
        raise ValueError(
            "m3bert_tf.hear.load_model needs a model: an export directory (bin/export) "
            "or a bin/pretrain / bin/finetune run directory"
        )
    from m3bert_tf.serving.api import load

    return HearModel(load(model_file_path))


def _embed_batch(audio, model: HearModel, batch_size: int = 16) -> list[np.ndarray]:
    """[n_sounds, n_samples] -> per sound [T', H] float32 frame embeddings
    (features by the model's front end: TensorFlow's inside an export)."""
    import contextlib

    from m3bert_tf.serving.outputs import select_frames

    audio = np.asarray(audio.numpy() if hasattr(audio, "numpy") else audio, np.float32)
    if audio.ndim != 2:
        raise ValueError(f"audio must be [n_sounds, n_samples], got shape {audio.shape}")
    inner = model.model
    frames = [[] for _ in range(len(audio))]
    with contextlib.ExitStack() as stack:
        tracks = [
            stack.enter_context(inner.track(sound, model.sample_rate, f"audio[{i}]"))
            for i, sound in enumerate(audio)
        ]
        items = [(i, t, w) for i, t in enumerate(tracks) for w in inner.plan(t.num_frames)]
        for i, w, out in inner.batches(items, "embed", batch_size):
            kept = select_frames(out, w, inner.frame_stack, "embed")
            frames[i].append(kept["frame_embeddings"])
    return [np.concatenate(f).astype(np.float32) for f in frames]


def get_timestamp_embeddings(audio, model: HearModel):
    """([n_sounds, T', H] float32 tf.Tensor, [n_sounds, T'] float32 timestamps in ms)."""
    from m3bert_tf.data.windows import timestamps

    per_sound = _embed_batch(audio, model)
    if not per_sound:  # no sounds: empty answers of the right rank
        width = model.model.hidden_dim
        return tf.zeros([0, 0, width], tf.float32), tf.zeros([0, 0], tf.float32)
    embeddings = np.stack(per_sound)
    ms = timestamps(embeddings.shape[1], model.model.frame_stack) * 1000.0
    stamps = np.broadcast_to(ms, embeddings.shape[:2])
    return tf.constant(embeddings, tf.float32), tf.constant(stamps, tf.float32)


def get_scene_embeddings(audio, model: HearModel):
    """[n_sounds, H] float32 tf.Tensor: each sound's mean frame embedding."""
    per_sound = _embed_batch(audio, model)
    if not per_sound:
        return tf.zeros([0, model.model.hidden_dim], tf.float32)
    return tf.constant(np.stack([f.mean(axis=0) for f in per_sound]), tf.float32)
