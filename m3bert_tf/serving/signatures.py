"""Every serving signature, once: what it takes, what a model needs to have it,
and whether a run directory serves it too.

    for s in available(computations): s.name, input_specs(s, computations)

`bin/export` writes `available(computations)` in this order (the first is
also `serving_default`), its warm-up records and export.json's list come from
the same call, and the in-memory backend serves those marked `in_memory`.
A new signature is one `Signature` here and one method of
`graph.Computations` of the same name (or `method`).

| signature | inputs | when |
| --- | --- | --- |
| embed (= serving_default) | features, lengths | always |
| embed_all_layers | features, lengths | always |
| predict | features, lengths | fine-tuned |
| predict_clip | clip_enrichment | fine-tuned |
| embed_waveform | waveform, lengths | TF front end |
| embed_wav_bytes | wav_bytes | TF front end |
| waveform_features | waveform, lengths | TF front end |
| predict_waveform | waveform, lengths | fine-tuned, TF front end |
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from m3bert_tf import schema

ENRICHMENT = "E"  # a dimension of the model: its clip enrichment width


@dataclasses.dataclass(frozen=True)
class Input:
    """One named input tensor, as clients send it: `shape` with None for any
    size and ENRICHMENT for the model's enrichment width; dtype a tf dtype name."""

    name: str
    shape: tuple
    dtype: str


def _features_example(rng, batch: int, frames: int, computations) -> tuple:
    """Noise features of `frames` frames, the rows of mixed lengths."""
    features = rng.standard_normal((batch, frames, schema.NUM_FEATURES)).astype(np.float32)
    return features, np.linspace(frames, max(1, frames // 4), batch).astype(np.int32)


_SECONDS = (0.5, 0.25, 0.375, 0.2)  # a warm-up row's audio (a frame takes 0.19 s)


def _waveform_example(rng, batch: int, frames: int, computations) -> tuple:
    """Up to 0.5 s of quiet noise per row at the model's input rate."""
    samples = (np.array(_SECONDS[:batch]) * computations.input_sample_rate).astype(np.int32)
    noise = 0.1 * rng.standard_normal((batch, samples.max()))
    return noise.astype(np.float32), samples


def _wav_bytes_example(rng, batch: int, frames: int, computations) -> tuple:
    """Mono 16-bit WAV files of 0.2-0.5 s of quiet noise at the input rate."""
    import tensorflow as tf

    rate = computations.input_sample_rate
    files = []
    for seconds in _SECONDS[:batch]:
        noise = 0.1 * rng.standard_normal((int(seconds * rate), 1))
        files.append(tf.audio.encode_wav(noise.astype(np.float32), rate).numpy())
    return (files,)


def _clip_example(rng, batch: int, frames: int, computations) -> tuple:
    return (rng.standard_normal((batch, computations.enrichment_dim)).astype(np.float32),)


@dataclasses.dataclass(frozen=True)
class InputKind:
    """What a signature takes: its tensors (`inputs`, in call order) and a
    warm-up example, `example(rng, batch, frames, computations)` -> one
    value per input (noise a model answers in milliseconds)."""

    inputs: tuple[Input, ...]
    example: Callable[..., tuple]


# The input kinds: the one place that says what each takes. Signature specs,
# the export's warm-up records and both backends' feeds derive from it.
INPUT_KINDS = {
    # [batch, time, 324] features normalized as the model trained; real frames per row
    "features": InputKind(
        (Input("features", (None, None, schema.NUM_FEATURES), "float32"),
         Input("lengths", (None,), "int32")),
        _features_example,
    ),
    # [batch, samples] at the export's input rate; real samples per row
    "waveform": InputKind(
        (Input("waveform", (None, None), "float32"), Input("lengths", (None,), "int32")),
        _waveform_example,
    ),
    # [batch] whole WAV files at the input rate
    "wav_bytes": InputKind((Input("wav_bytes", (None,), "string"),), _wav_bytes_example),
    # [batch, E] clip enrichments (a fine-tuned model's heads alone)
    "clip": InputKind(
        (Input("clip_enrichment", (None, ENRICHMENT), "float32"),), _clip_example
    ),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Signature:
    """One signature. needs: "multitask" (a fine-tuned model) and/or
    "frontend" (the TensorFlow front end); in_memory: a run directory's Keras
    model serves it too (`backends.KerasBackend`); method: the `Computations`
    method that computes it (default: `name`)."""

    name: str
    inputs: str
    needs: tuple = ()
    in_memory: bool = True
    method: str = ""

    def __post_init__(self):
        if self.inputs not in INPUT_KINDS:
            raise ValueError(
                f"signature {self.name}: inputs must be one of {tuple(INPUT_KINDS)}"
            )

    def compute(self, computations):
        return getattr(computations, self.method or self.name)


SIGNATURES = [
    Signature("embed", "features"),
    Signature("embed_all_layers", "features"),
    Signature("predict", "features", ("multitask",)),
    Signature("predict_clip", "clip", ("multitask",)),
    Signature("embed_waveform", "waveform", ("frontend",), in_memory=False),
    Signature("embed_wav_bytes", "wav_bytes", ("frontend",), in_memory=False),
    Signature("waveform_features", "waveform", ("frontend",)),
    Signature("predict_waveform", "waveform", ("multitask", "frontend"), in_memory=False),
]


def available(computations, in_memory: bool = False) -> list[Signature]:
    """The signatures `computations` has, in table order (only those a run
    directory serves when `in_memory`)."""
    has = {
        "multitask": computations.multitask is not None,
        "frontend": computations.frontend is not None,
    }
    return [
        s
        for s in SIGNATURES
        if all(has[n] for n in s.needs) and (s.in_memory or not in_memory)
    ]


def _shape(item: Input, computations) -> list:
    return [computations.enrichment_dim if d == ENRICHMENT else d for d in item.shape]


def input_specs(signature: Signature, computations) -> list:
    """The `tf.TensorSpec`s `signature` takes, named as clients send them."""
    import tensorflow as tf

    return [
        tf.TensorSpec(_shape(item, computations), item.dtype, name=item.name)
        for item in INPUT_KINDS[signature.inputs].inputs
    ]


def by_name(name: str) -> Signature:
    """The Signature called `name` (KeyError naming the table's when none)."""
    for s in SIGNATURES:
        if s.name == name:
            return s
    raise KeyError(f"no signature {name!r}; the table has {[s.name for s in SIGNATURES]}")


def feed(signature: str, values, enrichment_dim=None) -> dict:
    """{input name: tf tensor} of `values` (numpy arrays, in the kind's order)
    for the signature called `signature`, checked by `checked_values`."""
    import tensorflow as tf

    return {
        name: tf.constant(value)
        for name, value in checked_values(signature, values, enrichment_dim).items()
    }


def checked_values(signature: str, values, enrichment_dim=None) -> dict:
    """{input name: numpy array of the input's dtype} of `values` (in the
    kind's order) for the signature called `signature`.

    Raises:
      ValueError: a value of another rank or fixed width than its input's
        (named, with the shape it needs), as TF Serving refuses it.
    """
    items = INPUT_KINDS[by_name(signature).inputs].inputs
    if len(values) != len(items):
        raise TypeError(
            f"{signature} takes {[i.name for i in items]}, got {len(values)} values"
        )
    out = {}
    for item, value in zip(items, values, strict=True):
        need = [enrichment_dim if d == ENRICHMENT else d for d in item.shape]
        got = np.shape(value)
        if len(got) != len(need) or any(
            n and g != n for g, n in zip(got, need, strict=True)
        ):
            wanted = ", ".join(
                "batch" if i == 0 else str(n or "any") for i, n in enumerate(need)
            )
            raise ValueError(f"{item.name}: [{wanted}] is needed, got shape {list(got)}")
        given = np.asarray(value)
        if item.dtype.startswith("int") and given.dtype.kind not in "iu":
            raise ValueError(f"{item.name}: {item.dtype} is needed, got {given.dtype}")
        out[item.name] = given.astype(object if item.dtype == "string" else item.dtype)
    return out


def warmup_example(
    signature: Signature, computations, batch: int, frames: int, rng
) -> dict:
    """{input name: numpy value} of one warm-up request of `signature`."""
    kind = INPUT_KINDS[signature.inputs]
    values = kind.example(rng, batch, frames, computations)
    return {item.name: v for item, v in zip(kind.inputs, values, strict=True)}
