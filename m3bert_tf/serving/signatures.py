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

from m3bert_tf import schema

# What a signature takes: "features" [batch, time, 324] float32 and "lengths"
# [batch] int32 frames; "waveform" [batch, samples] float32 at the export's
# input rate and "lengths" [batch] int32 samples; "wav_bytes" [batch] string
# (whole WAV files); "clip" [batch, E] float32 clip enrichments.
INPUT_KINDS = ("features", "waveform", "wav_bytes", "clip")


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
            raise ValueError(f"signature {self.name}: inputs must be one of {INPUT_KINDS}")

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


def input_specs(signature: Signature, computations) -> list:
    """The `tf.TensorSpec`s `signature` takes, named as clients send them."""
    import tensorflow as tf

    if signature.inputs == "features":
        return [
            tf.TensorSpec([None, None, schema.NUM_FEATURES], tf.float32, name="features"),
            tf.TensorSpec([None], tf.int32, name="lengths"),
        ]
    if signature.inputs == "waveform":
        return [
            tf.TensorSpec([None, None], tf.float32, name="waveform"),
            tf.TensorSpec([None], tf.int32, name="lengths"),
        ]
    if signature.inputs == "wav_bytes":
        return [tf.TensorSpec([None], tf.string, name="wav_bytes")]
    return [
        tf.TensorSpec(
            [None, computations.enrichment_dim], tf.float32, name="clip_enrichment"
        )
    ]
