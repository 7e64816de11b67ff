"""Task definitions: what a label means and how it is stored as numbers.

A task is one head of the multi-task model. Its spec travels in the shard
manifest, so fine-tuning knows every head's size without reading labels.

Kinds and their stored label vectors (`label/<task>` float features):
- "classification": [class index]; softmax head, cross-entropy, accuracy.
- "multilabel": multi-hot [num_classes]; sigmoid head, binary cross-entropy,
  ROC-AUC and PR-AUC macro.
- "regression": [num_outputs] values; linear head, MSE, R² per output.

Label text (CSV manifests, loaders): a class name; class names joined by "|"
for multi-label; numbers joined by ";" for regression.
"""

import dataclasses
import math

KINDS = ("classification", "multilabel", "regression")


class LabelError(ValueError):
    """A label that does not fit its task (unknown class, wrong count of values)."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task.

    Attributes:
      name: task name (head name); letters, digits and "_".
      kind: one of KINDS.
      classes: class names (classification, multilabel), in index order.
      outputs: names of the regression outputs (regression).
    """

    name: str
    kind: str
    classes: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(
                f"task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}"
            )
        if not self.name.replace("_", "").isalnum():
            raise ValueError(f"task name {self.name!r}: use letters, digits and '_'")
        if self.kind == "regression" and not self.outputs:
            raise ValueError(f"task {self.name!r}: a regression task needs outputs")
        if self.kind != "regression" and len(self.classes) < 2:
            raise ValueError(
                f"task {self.name!r}: needs at least 2 classes, got {self.classes}"
            )

    @property
    def size(self) -> int:
        """Width of the head and of the stored label vector (1 for classification)."""
        if self.kind == "regression":
            return len(self.outputs)
        return len(self.classes) if self.kind == "multilabel" else 1

    @property
    def num_outputs(self) -> int:
        """Units of the head."""
        return len(self.outputs) if self.kind == "regression" else len(self.classes)

    def encode(self, label) -> list[float]:
        """Label text (or a number, or a list of them) -> the stored float vector.

        Raises:
          LabelError: unknown class, the wrong number of regression values, or a
            value that is not finite.
        """
        if self.kind == "regression":
            values = label if isinstance(label, (list, tuple)) else str(label).split(";")
            try:
                out = [float(v) for v in values]
            except ValueError:
                raise LabelError(
                    f"task {self.name}: {label!r} is not {self.size} number(s)"
                ) from None
            if len(out) != self.size:
                raise LabelError(
                    f"task {self.name}: {label!r} has {len(out)} values, needs {self.size}"
                )
            if not all(math.isfinite(v) for v in out):  # "nan", "inf", "1e400"
                raise LabelError(
                    f"task {self.name}: {label!r} is not finite (NaN or infinity): "
                    "a regression target must be a finite number"
                )
            return out
        names = label if isinstance(label, (list, tuple)) else str(label).split("|")
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            raise LabelError(f"task {self.name}: unknown label {unknown[0]!r}")
        if self.kind == "classification":
            if len(names) != 1:
                raise LabelError(f"task {self.name}: one class expected, got {label!r}")
            return [float(self.classes.index(names[0]))]
        return [1.0 if c in names else 0.0 for c in self.classes]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: dict) -> "TaskSpec":
        return cls(
            value["name"],
            value["kind"],
            tuple(value.get("classes", ())),
            tuple(value.get("outputs", ())),
        )


def infer_spec(name: str, labels: list[str]) -> TaskSpec:
    """A task spec from all of a task's label texts (generic CSV manifests).

    Numbers (";"-joined) -> regression; any "|" -> multi-label; else
    classification over the sorted distinct labels.
    """

    def is_number(text):
        try:
            float(text)
            return True
        except ValueError:
            return False

    if labels and all(all(is_number(v) for v in str(x).split(";")) for x in labels):
        width = len(str(labels[0]).split(";"))
        outputs = (name,) if width == 1 else tuple(f"{name}_{i}" for i in range(width))
        return TaskSpec(name, "regression", outputs=outputs)
    if any("|" in str(x) for x in labels):
        classes = sorted({c for x in labels for c in str(x).split("|")})
        return TaskSpec(name, "multilabel", classes=tuple(classes))
    return TaskSpec(name, "classification", classes=tuple(sorted(set(map(str, labels)))))


def merge_specs(specs: list[TaskSpec]) -> dict[str, TaskSpec]:
    """{name: spec}; the same name must mean the same task everywhere."""
    out: dict[str, TaskSpec] = {}
    for spec in specs:
        if spec.name in out and out[spec.name] != spec:
            raise ValueError(
                f"task {spec.name!r} is defined twice differently: {out[spec.name]} vs {spec}"
            )
        out[spec.name] = spec
    return out


def read_task_info(
    manifests: dict[str, dict],
) -> tuple[dict[str, TaskSpec], dict[str, dict[str, int]]]:
    """({task: spec}, {task: {split: examples}}) from `shards.read_manifests`' result."""
    specs, counts = [], {}
    for manifest in manifests.values():
        specs.extend(TaskSpec.from_json(v) for v in manifest.get("tasks", {}).values())
        for task, per_split in manifest.get("label_counts", {}).items():
            for split, n in per_split.items():
                counts.setdefault(task, {}).setdefault(split, 0)
                counts[task][split] += n
    return merge_specs(specs), counts


def mixing_probabilities(sizes: dict[str, int], temperature: float) -> dict[str, float]:
    """P(task) proportional to size**temperature (0 gives uniform) for the
    tasks mixed in one fine-tuning batch; a task without examples gets 0."""
    powered = {t: float(n) ** temperature if n > 0 else 0.0 for t, n in sizes.items()}
    total = sum(powered.values())
    if total <= 0:
        raise ValueError(f"no training examples for any of the tasks {sorted(sizes)}")
    return {t: p / total for t, p in powered.items()}
