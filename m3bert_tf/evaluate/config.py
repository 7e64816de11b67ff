"""What `bin/evaluate` is asked to do: `EvaluateConfig` (its flags are its fields)."""

import dataclasses

from m3bert_tf.evaluate import probe
from m3bert_tf.evaluate.baselines import BASELINES
from m3bert_tf.evaluate.pooling import DEFAULT_POOLING, POOLINGS
from m3bert_tf.fields import at_least, check_choices, choice

SCORE_PER = ("track", "example")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """One evaluation.

    Attributes:
      data: labeled shard dirs or globs, comma-separated.
      output_dir: where results.md/.json, plots and the embedding cache go.
      models: run or export dirs; `name=path` names a row (default: the
        directory's name). A fine-tuned run gives an M3BERT row and its
        encoder's M2BERT row. `run@step` is a pretraining run's encoder
        snapshot at that step, `run@every` every snapshot it kept
        (bin/pretrain --snapshot_every): a learning curve, curve_<task>.png.
      baselines: any of `baselines.BASELINES` (mfcc, features, random: the
        first model with random weights); empty = none.
      embeddings: dirs of <track id>.npz from any other model (VGGish, CLAP,
        MERT...); `name=dir` names a row.
      tasks: tasks to probe; empty = every task of the data.
      pooling: how every set's frames become one vector per example, the
        same for models, raw baselines and frame-level external embeddings:
        some of mean, std and max over time (`pooling.POOLINGS`); "mean" is
        the paper's pooling of model frames.
      added_value: give each model (and the random encoder) a row of its
        embedding joined to the raw baseline best on validation, compared
        paired with that baseline alone: what the encoder adds to its input.
      layer: encoder output probed: last | mean | N (0-based) | all (the layer
        profile: every block, their mean and their learned weighted sum;
        layers_<task>.png).
      probes: some of `probe.GRIDS`: mlp (one hidden layer), linear.
      seeds: probe seeds; tables give mean ± std over them.
      epochs: probe epochs at most (the best on valid is kept).
      score_per: track (a track's chunk predictions averaged into one) or
        example (each chunk alone).
      batch_size: encoder windows per call while embedding.
      folds: 0 = the data's train/valid/test splits; K >= 3 = each task's
        splits pooled into K folds grouped by track (for fewer than ~50 test
        tracks per task).
    """

    data: str
    output_dir: str
    models: tuple[str, ...] = ()
    baselines: tuple[str, ...] = tuple(BASELINES)
    embeddings: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    pooling: str = choice(DEFAULT_POOLING, tuple(POOLINGS))
    added_value: bool = True
    layer: str = "last"
    probes: tuple[str, ...] = ("mlp", "linear")
    seeds: int = 3
    epochs: int = 100
    score_per: str = choice("track", SCORE_PER)
    batch_size: int = 16
    folds: int = 0

    def __post_init__(self):
        from m3bert_tf.serving.api import parse_layer

        check_choices(self)
        parse_layer(self.layer)
        unknown = set(self.baselines) - set(BASELINES)
        if unknown:
            raise ValueError(
                f"baselines: unknown {sorted(unknown)}; known: {tuple(BASELINES)}"
            )
        needs_model = [b for b in self.baselines if BASELINES[b].from_model]
        if needs_model and not self.models:
            raise ValueError(
                f"baselines={','.join(needs_model)} needs models (it copies the first one)"
            )
        if not (self.models or self.baselines or self.embeddings):
            raise ValueError("nothing to evaluate: give models, baselines or embeddings")
        unknown = set(self.probes) - set(probe.GRIDS)
        if unknown or not self.probes:
            raise ValueError(f"probes: use some of {tuple(probe.GRIDS)}, got {self.probes}")
        if self.folds and self.folds < 3:
            raise ValueError(
                f"folds must be 0 (the data's splits) or >= 3 (test, valid and train "
                f"folds), got {self.folds}"
            )
        at_least(self, 1, "seeds", "epochs", "batch_size")
