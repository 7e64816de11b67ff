"""The single-process twin of a two-worker pretraining run: two logical CPU
replicas in one process, replica r fed the pipeline that worker r reads.

    python tests/multi_worker_twin.py <bin/pretrain flags...>

Prints {"losses": [loss of each step]} as JSON (test_distributed.py compares
it with the workers' run).
"""

import json
import sys

import tensorflow as tf
from absl import flags as absl_flags

from m3bert_tf.cli import flags
from m3bert_tf.data import pipeline
from m3bert_tf.train import distribute, pretrain


def main(argv):
    flags.define_pretrain_flags()
    absl_flags.FLAGS(argv)
    config = flags.pretrain_config_from_flags()
    strategy = distribute.make_strategy("mirrored", 2)
    trainer = pretrain.Trainer(config, strategy)
    data = pretrain.pipeline_config(config, trainer.batch_size)
    workers = [
        pipeline.make_pretrain_dataset(data, True, tf.distribute.InputContext(2, r, 2))
        for r in range(2)
    ]
    alternating = tf.data.Dataset.zip(*workers).flat_map(
        lambda a, b: tf.data.Dataset.from_tensors(a).concatenate(
            tf.data.Dataset.from_tensors(b)
        )
    )
    iterator = iter(alternating)
    losses = [
        float(trainer.train_step(iterator)["loss"]) for _ in range(config.train_steps)
    ]
    print(json.dumps({"losses": losses}))


if __name__ == "__main__":
    main(sys.argv)
