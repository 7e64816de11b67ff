"""Configs stored by earlier releases, read in this release's layout.

A run directory outlives the release that wrote it: `read_config` and
`RunDir.start` read its config.json through these, so an older run resumes
with its own values and compares equal to the same flags.
"""

import dataclasses


def with_added(stored: dict, added: dict) -> dict:
    """`stored` with every field of `added` it lacks, at any depth."""
    out = dict(stored)
    for key, value in added.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = with_added(out[key], value)
    return out


def current_layout(config: dict) -> dict:
    """A stored pretraining config in this release's layout. Up to release
    0.2.0 the masking policy was a flat field ("masking": "cfm+ccm", beside
    "per_clip_mask_choice") and the other masking numbers were fixed at their
    defaults; now `masking` is the nested `MaskingConfig`. So an older run
    resumes with its own masking and compares equal to the same flags."""
    if not isinstance(config.get("masking"), str):
        return config
    from m3bert_tf.data.masking import MaskingConfig

    config = dict(config)
    config["masking"] = dataclasses.asdict(
        MaskingConfig(
            config["masking"], per_clip_choice=config.pop("per_clip_mask_choice", False)
        )
    )
    return config
