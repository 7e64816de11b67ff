"""Fine-tuning batches from an `ExampleCache`, addressed by step.

Batch s is a function of (seed, s) and nothing else: its tasks are drawn with
P(task) ~ n_task^temperature from a generator seeded by (seed, s); each task
walks through its training examples in a fresh permutation per pass
(seeded by (seed, task, pass)), and each example is cropped at an offset drawn
from the same step generator. So a resumed run seeks to its step (replaying
the task draws, which is cheap) and continues on exactly the batches of an
uninterrupted run, with no input buffers in the checkpoint.

Each batch is `(inputs, labels, weights)`:
  inputs  {input_key: [B, C, D] float32, "padding_mask": [B, C] bool}
  labels  {task: [B, size] float32}   (zeros where not labeled)
  weights {task: [B] float32}         1 for the task the example was drawn for
with C = `crop` rows of the cache (examples shorter are zero-padded).
"""

import numpy as np


class CachedBatches:
    """An endless, seekable iterator of training batches.

    Args:
      cache: an `example_cache.ExampleCache`.
      tasks: task names, in head order.
      probabilities: {task: P(task)} (`tasks.mixing_probabilities`).
      batch_size: B.
      crop: C, rows per example.
      seed: the run's seed.
      input_key: "sequence" (cached encoder outputs) or "features".
    """

    def __init__(self, cache, tasks, probabilities, batch_size, crop, seed, input_key):
        self.cache, self.tasks = cache, list(tasks)
        self.p = np.array([probabilities[t] for t in self.tasks], np.float64)
        self.p = self.p / self.p.sum()
        self.batch_size, self.crop, self.seed, self.input_key = (
            batch_size, crop, seed, input_key,
        )  # fmt: skip
        self.pool = [cache.ids("train", t) for t in self.tasks]
        self._perms: dict[tuple[int, int], np.ndarray] = {}
        self.seek(0)

    def _task_draws(self, step: int, rng=None) -> np.ndarray:
        rng = rng or np.random.default_rng([self.seed, step])
        return rng.choice(len(self.tasks), size=self.batch_size, p=self.p)

    def seek(self, step: int) -> "CachedBatches":
        """Positions the iterator so that the next batch is batch `step`; returns it."""
        counts = np.zeros(len(self.tasks), np.int64)
        for s in range(step):
            counts += np.bincount(self._task_draws(s), minlength=len(self.tasks))
        self.step, self.drawn = step, counts
        return self

    def _example(self, task: int) -> int:
        n = len(self.pool[task])
        epoch, k = divmod(int(self.drawn[task]), n)
        key = (task, epoch)
        if key not in self._perms:
            self._perms = {k_: v for k_, v in self._perms.items() if k_[0] != task}
            self._perms[key] = np.random.default_rng(
                [self.seed, 1 + task, epoch]
            ).permutation(n)
        self.drawn[task] += 1
        return int(self.pool[task][self._perms[key][k]])

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng([self.seed, self.step])
        drawn = self._task_draws(self.step, rng)
        b, c = self.batch_size, self.crop
        x = np.zeros((b, c, self.cache.width), np.float32)
        mask = np.zeros((b, c), bool)
        labels = {
            t: np.zeros((b, self.cache.labels[t].shape[1]), np.float32) for t in self.tasks
        }
        weights = {t: np.zeros(b, np.float32) for t in self.tasks}
        offsets = rng.random(b)
        for row, task in enumerate(drawn):
            i = self._example(task)
            n = int(self.cache.lengths[i])
            start = int(offsets[row] * (max(n - c, 0) + 1))
            rows = self.cache.sequence(i, start, start + c)
            x[row, : len(rows)] = rows
            mask[row, : len(rows)] = True
            for t in self.tasks:
                labels[t][row] = self.cache.labels[t][i]
            weights[self.tasks[task]][row] = 1.0
        self.step += 1
        return {self.input_key: x, "padding_mask": mask}, labels, weights
