"""Runs one training step on a fixed batch; prints loss, grad norm, weight sum.

    python tests/replica_check.py <shards> <num_cpu_replicas> <accumulation_steps> [objective]

A separate process per replica count: logical CPU devices must be set up
before TensorFlow initializes (test_pretrain.py compares the outputs).
"""

import json
import sys

import keras
import numpy as np
import tensorflow as tf

from m3bert_tf.data import pipeline
from m3bert_tf.train import distribute, pretrain
from m3bert_tf.train.configs import ObjectiveConfig


def main(shards, replicas, accumulation, objective="reconstruct"):
    config = pretrain.PretrainConfig(
        objective=ObjectiveConfig(kind=objective, codebook_size=64),
        data=shards, model_dir="/tmp/unused", max_frames=32, global_batch_size=4,
        gradient_accumulation_steps=accumulation, num_cpu_replicas=replicas, train_steps=10,
        model=pretrain.ModelConfig(num_layers=1, hidden_dim=16, num_heads=2, ffn_dim=32, dropout=0.0),
        learning_rate=1e-2, warmup_fraction=0.1,
    )  # fmt: skip
    strategy = distribute.make_strategy("mirrored", replicas)
    keras.utils.set_random_seed(1)
    trainer = pretrain.Trainer(config, strategy)
    context = tf.distribute.InputContext(1, 0, strategy.num_replicas_in_sync)
    data = pipeline.make_pretrain_dataset(
        pretrain.pipeline_config(config, trainer.batch_size), True, context
    )
    iterator = iter(data)
    first = trainer.train_step(iterator)
    second = trainer.train_step(iterator)
    weights = sum(
        float(np.sum(np.abs(v.numpy()))) for v in trainer.model.trainable_variables
    )
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "loss": float(first["loss"]),
                "grad_norm": float(first["grad_norm"]),
                "loss_2": float(second["loss"]),
                "weights": weights,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:])
