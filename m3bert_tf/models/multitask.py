"""M3BERT: a frozen encoder, an enrichment layer and one head per task."""

import keras

from m3bert_tf.layers.pooling import MaskedMeanPooling
from m3bert_tf.models.encoder import encoder_inputs
from m3bert_tf.tasks import TaskSpec

ACTIVATIONS = {"classification": "softmax", "multilabel": "sigmoid", "regression": None}


@keras.saving.register_keras_serializable(package="m3bert_tf")
class M3BertMultiTask(keras.Model):
    """Multi-task model on an encoder.

    Inputs:  the encoder's {"features": [B, T, 324], "padding_mask": [B, T]},
             any T.
    Outputs: {"frame_embedding": [B, ceil(T / k), E] (the M3BERT embedding),
              "clip_embedding": [B, E] (its mean over real frames),
              <task>: [B, num_outputs] probabilities or values, per task}.

    The encoder runs in inference mode (no dropout): it is frozen, or only its
    top blocks are fine-tuned. Freezing is the trainer's choice (layer
    `trainable` flags), not part of this model's config.

    Args:
      encoder: an `M3BertEncoder` instance.
      tasks: TaskSpec dicts (`TaskSpec.to_json()`), in head order.
      embedding_dim: E, width of the time-distributed enrichment layer.
      dropout: rate on the clip embedding before the heads.
    """

    def __init__(self, encoder, tasks, embedding_dim=256, dropout=0.1, **kwargs):
        specs = [TaskSpec.from_json(t) if isinstance(t, dict) else t for t in tasks]
        # === Layers ===
        enrichment = keras.layers.Dense(embedding_dim, activation="gelu", name="enrichment")
        pooling = MaskedMeanPooling(name="pooling")
        head_dropout = keras.layers.Dropout(dropout, name="head_dropout")
        heads = {
            s.name: keras.layers.Dense(
                s.num_outputs,
                activation=ACTIVATIONS[s.kind],
                dtype="float32",
                name=f"head_{s.name}",
            )
            for s in specs
        }

        # === Functional Model ===
        inputs = encoder_inputs(encoder)
        encoded = encoder(inputs, training=False)
        frames = enrichment(encoded["sequence_output"])
        clip = pooling(frames, encoded["padding_mask"])
        outputs = {"frame_embedding": frames, "clip_embedding": clip}
        for name, head in heads.items():
            outputs[name] = head(head_dropout(clip))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.encoder = encoder
        self.tasks = [s.to_json() for s in specs]
        self.embedding_dim = embedding_dim
        self.dropout = dropout

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "tasks": self.tasks,
            "embedding_dim": self.embedding_dim,
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)
