"""What a model's window outputs become: the frames a window keeps, stitched
into a track's outputs with timestamps and clip means (numpy only: the
Python API, bin/embed, HEAR and bin/evaluate share them)."""

import numpy as np

from m3bert_tf import schema
from m3bert_tf.data import windows as windows_lib


def padded(batch):
    """([B, longest, 324] zero-padded windows, [B] int32 real frames) of [n_i, 324] windows."""
    longest = max(len(w) for w in batch)
    features = np.zeros((len(batch), longest, schema.NUM_FEATURES), np.float32)
    for i, w in enumerate(batch):
        features[i, : len(w)] = w
    return features, np.array([len(w) for w in batch], np.int32)


def select_frames(out: dict, window, frame_stack: int, signature: str) -> dict:
    """The output frames a window keeps (`Window.kept`), as [n, ...] arrays
    (all layers: [n, L, H])."""
    frames = window.kept(frame_stack)
    kept = {}
    for key, value in out.items():
        if not key.startswith("frame_"):
            continue
        if signature == "embed_all_layers":
            kept[key] = np.moveaxis(value[:, frames], 0, 1)  # [L, n, H] -> [n, L, H]
        else:
            kept[key] = value[frames]
    return kept


def finish(frames: dict, layer, frame_stack: int) -> dict:
    """Stitched frames -> the API's outputs for `layer`, with timestamps and clip means."""
    frames = reduce_layers(frames, layer)
    out = {
        "timestamps": windows_lib.timestamps(len(frames["frame_embeddings"]), frame_stack)
    }
    for key, value in frames.items():
        out[key] = value.astype(np.float32)
        out[clip_key(key)] = value.mean(axis=0).astype(np.float32)
    return out


def clip_key(frame_key: str) -> str:
    """The clip output of a frame output: frame_embeddings -> clip_embedding,
    frame_enrichment -> clip_enrichment (the signatures' names)."""
    return {"frame_embeddings": "clip_embedding"}.get(
        frame_key, frame_key.replace("frame_", "clip_")
    )


def signature_for(layer) -> str:
    """The signature serving `layer`: embed for the last block, else every block."""
    return "embed" if layer == "last" else "embed_all_layers"


def reduce_layers(frames: dict, layer) -> dict:
    """All-layer frames [n, L, H] -> the asked layer ("mean" or a block index);
    frames of "last" and "all" are returned as they are."""
    if layer in ("last", "all"):
        return frames
    value = frames["frame_embeddings"]
    return {"frame_embeddings": value.mean(axis=1) if layer == "mean" else value[:, layer]}
