"""What pretraining learns to predict at the masked frames: the objectives.

    objective = Objective(config.objective, config.model.frame_stack, config.seed)
    counts = objective.counts(inputs, masks)            # before the forward pass
    sums = objective.sums(outputs, inputs, targets, masks)
    loss = objective.loss(sums, global_counts)

- `reconstruct` (the paper's): the clean features of every masked element,
  Huber (delta 1), summed and divided by the masked elements.
- `tokens` (BEST-RQ, Chiu et al. 2022, as MusicFM and OMAR-RQ use it for
  music): each encoder frame's clean input (its k stacked frames) is
  projected by a frozen random matrix and assigned the index of the nearest
  of a frozen random codebook's codes (cosine); the encoder predicts that
  index at the masked frames, cross-entropy divided by the masked frames and
  the codebooks. One codebook per feature block (`blocks`: chroma, mfcc,
  delta_mfcc, mel, cqt; OMAR-RQ keeps one per input view) or one over all 324
  channels (`all`). Nothing of the quantizer is learned: its matrices come
  from the run's seed alone (`Quantizer`), so they are the same on every
  worker, on resume, and on any number of replicas.
- `reconstruct+tokens`: both, the token term weighted by `token_weight`.
- a clip term (`clip="contrastive"`, added to any of them; BYOL-A and
  contrastive audio encoders learn what two crops of one clip share): the
  batch holds two crops of each record, adjacent (`pipeline.pair_views`);
  each crop's mean encoder output over its real frames, projected and
  normalized, must pick its partner among the other crops of the batch
  (NT-Xent: cross-entropy over cosine similarities / temperature), divided
  by the crops. Negatives are the crops of one replica's micro-batch.

A term's loss is its sum over the micro-batch divided by its count over the
whole global batch (every replica and micro-batch), counted from the masks
before the forward pass: so a step is the same on one device or N replicas,
with or without accumulation, whatever the terms.
"""

import math

import numpy as np
import tensorflow as tf

from m3bert_tf import schema
from m3bert_tf.data import masking as masking_lib

# An objective is the terms it sums (a new objective is a row; a new term,
# its branch in `Objective.sums` and `Objective.counts`).
OBJECTIVES = {
    "reconstruct": ("reconstruct",),
    "tokens": ("tokens",),
    "reconstruct+tokens": ("reconstruct", "tokens"),
}
CODEBOOK_LAYOUTS = ("blocks", "all")
CLIP_TERMS = ("none", "contrastive")  # a clip-level term added to any objective


def codebook_channels(layout: str) -> list[tuple[str, int, int]]:
    """(name, first channel, last channel + 1) of each codebook's input."""
    if layout == "all":
        return [("all", 0, schema.NUM_FEATURES)]
    return [(b.name, b.start, b.stop) for b in schema.BLOCKS]


class Quantizer:
    """BEST-RQ's frozen random-projection quantizer, one codebook per group of
    channels.

    For codebook c over channels [a, b) and k stacked frames: a projection
    P_c [k (b - a), codebook_dim] (Xavier normal) and codes C_c [codebook_size,
    codebook_dim] (standard normal, unit length); a frame's token is
    argmax_j <P_c x / |P_c x|, C_c[j]>. Made with numpy from `seed` alone.

    Args:
      layout: "blocks" or "all" (`codebook_channels`).
      codebook_size, codebook_dim: codes per codebook and their dimension.
      frame_stack: k, the encoder's frame stacking (a token per encoder frame).
      seed: the run's seed.
    """

    def __init__(self, layout: str, codebook_size: int, codebook_dim: int,
                 frame_stack: int, seed: int):  # fmt: skip
        rng = np.random.default_rng([seed, 0xB357, codebook_size, codebook_dim])
        self.groups = codebook_channels(layout)
        self.size, self.frame_stack = codebook_size, frame_stack
        self.projections, self.codes = [], []
        for _, start, stop in self.groups:
            fan_in = frame_stack * (stop - start)
            scale = math.sqrt(2.0 / (fan_in + codebook_dim))
            self.projections.append(
                tf.constant(rng.normal(0.0, scale, (fan_in, codebook_dim)), tf.float32)
            )
            codes = rng.normal(0.0, 1.0, (codebook_size, codebook_dim))
            codes /= np.linalg.norm(codes, axis=1, keepdims=True)
            self.codes.append(tf.constant(codes, tf.float32))

    @property
    def num_codebooks(self) -> int:
        return len(self.groups)

    def stack(self, x):
        """[B, T, C] -> [B, ceil(T / k), k, C] (zero-padded to a multiple of k)."""
        k = self.frame_stack
        t = tf.shape(x)[1]
        x = tf.pad(x, [[0, 0], [0, (k - t % k) % k], [0, 0]])
        return tf.reshape(x, [tf.shape(x)[0], -1, k, tf.shape(x)[2]])

    def __call__(self, targets):
        """Clean features [B, T, 324] -> tokens [B, ceil(T / k), num_codebooks] int32."""
        stacked = self.stack(tf.cast(targets, tf.float32))
        tokens = []
        for (_, start, stop), projection, codes in zip(
            self.groups, self.projections, self.codes, strict=True
        ):
            x = stacked[:, :, :, start:stop]
            x = tf.reshape(x, [tf.shape(x)[0], tf.shape(x)[1], -1])
            z = tf.math.l2_normalize(tf.einsum("btd,de->bte", x, projection), axis=-1)
            tokens.append(tf.argmax(tf.einsum("bte,ne->btn", z, codes), -1, tf.int32))
        return tf.stack(tokens, axis=-1)


def usage_entropy(tokens, frames, size: int):
    """Mean over codebooks of the entropy of the tokens' distribution over the
    real frames, over log(size): 1 = every code used equally, 0 = one code.

    Args:
      tokens: [B, T', N] int32; frames: [B, T'] bool, the frames counted.
    """
    one_hot = tf.one_hot(tokens, size) * tf.cast(frames, tf.float32)[:, :, None, None]
    counts = tf.reduce_sum(one_hot, axis=[0, 1])  # [N, size]
    p = counts / tf.maximum(tf.reduce_sum(counts, -1, keepdims=True), 1.0)
    entropy = -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(p), p), -1)
    return tf.reduce_mean(entropy) / math.log(size)


def contrastive(projection, temperature: float):
    """NT-Xent over a batch of adjacent pairs: (cross-entropy [B], 1.0 where
    the partner scored highest [B]). Row i's positive is row i ^ 1 (the
    other crop of its record); every other row is a negative.

    Args:
      projection: [B, P] clip projections, B even.
    """
    z = tf.math.l2_normalize(tf.cast(projection, tf.float32), axis=-1)
    n = tf.shape(z)[0]
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    logits = tf.where(tf.cast(tf.eye(n), tf.bool), -1e9, logits)  # never oneself
    partner = tf.bitwise.bitwise_xor(tf.range(n), 1)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(partner, logits)
    hit = tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), partner), tf.float32)
    return ce, hit


class Objective:
    """The terms of one objective, their sums, counts and the loss.

    Args:
      config: a `configs.ObjectiveConfig`.
      frame_stack: the encoder's k.
      seed: the run's seed (the quantizer's matrices).
    """

    def __init__(self, config, frame_stack: int, seed: int):
        self.config = config
        self.terms = OBJECTIVES[config.kind] + (("clip",) if config.clip != "none" else ())
        self.quantizer = (
            Quantizer(config.codebooks, config.codebook_size, config.codebook_dim,
                      frame_stack, seed)
            if "tokens" in self.terms else None
        )  # fmt: skip
        self.weights = {
            "reconstruct": 1.0, "tokens": config.token_weight, "clip": config.clip_weight,
        }  # fmt: skip

    def heads(self) -> dict:
        """The pretrainer's heads: {"reconstruct": bool, "token_codebooks": N,
        "codebook_size": S} (`models.pretrainer.M3BertPretrainer`)."""
        q = self.quantizer
        return {
            "reconstruct": "reconstruct" in self.terms,
            "token_codebooks": q.num_codebooks if q else 0,
            "codebook_size": q.size if q else 0,
            "clip_dim": self.config.clip_dim if "clip" in self.terms else 0,
        }

    def token_frames(self, inputs, masks):
        """[B, T'] bool: the encoder frames whose k input frames hold a masked
        element (what the token term is scored on), from the compact masks
        (no [B, T, 324] expansion: it runs twice a micro-batch)."""
        padding = inputs["padding_mask"]
        channel = tf.reduce_any(masks["channel"], axis=-1, keepdims=True)  # [B, 1]
        patch = tf.reduce_any(masks["patch"], axis=-1)  # [B, T], or [B, 1] without patches
        masked = masks["frame"] | ((channel | patch) & padding)  # [B, T]
        stacked = self.quantizer.stack(tf.cast(masked, tf.float32)[:, :, None])
        return tf.reduce_max(stacked, axis=[2, 3]) > 0

    def counts(self, inputs, masks) -> dict:
        """{term: what its sum is divided by} over this micro-batch, float32."""
        out = {}
        if "reconstruct" in self.terms:
            weights = masking_lib.expand_weights(masks, inputs["padding_mask"])
            out["reconstruct"] = tf.reduce_sum(weights["total"])
        if "tokens" in self.terms:
            frames = tf.reduce_sum(tf.cast(self.token_frames(inputs, masks), tf.float32))
            out["tokens"] = frames * self.quantizer.num_codebooks
        if "clip" in self.terms:
            out["clip"] = tf.cast(tf.shape(inputs["padding_mask"])[0], tf.float32)
        return out

    def sums(self, outputs, inputs, targets, masks) -> dict:
        """Every sum of the terms over this micro-batch: "reconstruct" with
        "loss_<kind>"/"weight_<kind>" per masked kind; "tokens" with
        "token_correct" and "token_entropy" (of this micro-batch's tokens)."""
        from m3bert_tf.train.losses import huber

        out = {}
        if "reconstruct" in self.terms:
            loss = huber(targets, outputs["reconstruction"])
            weights = masking_lib.expand_weights(masks, inputs["padding_mask"])
            for kind, w in weights.items():
                out[f"loss_{kind}"] = tf.reduce_sum(loss * w)
                out[f"weight_{kind}"] = tf.reduce_sum(w)
            out["reconstruct"] = out["loss_total"]
        if "tokens" in self.terms:
            tokens = self.quantizer(targets)
            logits = tf.cast(outputs["token_logits"], tf.float32)  # [B, T', N, S]
            frames = tf.cast(self.token_frames(inputs, masks), tf.float32)[:, :, None]
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tokens, logits)
            out["tokens"] = tf.reduce_sum(ce * frames)
            hit = tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), tokens), tf.float32)
            out["token_correct"] = tf.reduce_sum(hit * frames)
            out["token_count"] = tf.reduce_sum(frames) * self.quantizer.num_codebooks
            stacked_padding = self.quantizer.stack(
                tf.cast(inputs["padding_mask"], tf.float32)[:, :, None]
            )
            real = tf.reduce_max(stacked_padding, axis=[2, 3]) > 0
            out["token_entropy"] = usage_entropy(tokens, real, self.quantizer.size)
        if "clip" in self.terms:
            ce, hit = contrastive(outputs["clip_projection"], self.config.clip_temperature)
            out["clip"], out["clip_correct"] = tf.reduce_sum(ce), tf.reduce_sum(hit)
        return out

    def loss(self, sums: dict, counts: dict):
        """The scalar to differentiate: each term's sum over its global count."""
        return tf.add_n(
            [self.weights[t] * sums[t] / tf.maximum(counts[t], 1.0) for t in self.terms]
        )

    def metrics(self, sums: dict, counts: dict, parts: int) -> dict:
        """A step's scalars from its all-reduced sums and counts; `parts`: the
        micro-batches summed (replicas x accumulation), for the averages."""
        out = {"loss": self.loss(sums, counts)}
        if "reconstruct" in self.terms:
            for kind in masking_lib.KINDS:
                out[kind] = tf.math.divide_no_nan(
                    sums[f"loss_{kind}"], sums[f"weight_{kind}"]
                )
            out["reconstruct_loss"] = sums["reconstruct"] / tf.maximum(
                counts["reconstruct"], 1.0
            )
        if "tokens" in self.terms:
            out["token_ce"] = sums["tokens"] / tf.maximum(counts["tokens"], 1.0)
            out["token_accuracy"] = sums["token_correct"] / tf.maximum(
                sums["token_count"], 1.0
            )
            out["codebook_entropy"] = sums["token_entropy"] / parts
        if "clip" in self.terms:
            out["clip_ce"] = sums["clip"] / tf.maximum(counts["clip"], 1.0)
            out["clip_accuracy"] = sums["clip_correct"] / tf.maximum(counts["clip"], 1.0)
        return out

    def eval_sums(self, model, inputs, targets, masks):
        """(sums of one held-out batch, its reconstruction or zeros): the
        model's and, for reconstruction, predicting zeros' (the mean)."""
        outputs = model(inputs, training=False)
        sums = self.sums(outputs, inputs, targets, masks)
        if "reconstruct" in self.terms:
            from m3bert_tf.train.losses import huber

            zero = huber(targets, tf.zeros_like(targets))
            weights = masking_lib.expand_weights(masks, inputs["padding_mask"])
            sums.update(
                {f"zero_loss_{k}": tf.reduce_sum(zero * w) for k, w in weights.items()}
            )
        sums["batches"] = tf.constant(1.0)
        sums["crops"] = tf.cast(tf.shape(targets)[0], tf.float32)
        return sums, outputs.get("reconstruction", tf.zeros_like(targets))

    def eval_results(self, totals: dict) -> dict:
        """Held-out scores from summed `eval_sums`: reconstruction's masked
        Huber per kind, predicting zeros' and their ratio ("loss_vs_zero");
        the tokens' cross-entropy, its ratio to guessing uniformly (log S),
        accuracy and codebook usage entropy."""
        out = {}
        if "reconstruct" in self.terms:
            for kind in ("total", *masking_lib.KINDS):
                w = totals[f"weight_{kind}"]
                if w > 0:
                    out[f"loss_{kind}"] = totals[f"loss_{kind}"] / w
                    out[f"zero_loss_{kind}"] = totals[f"zero_loss_{kind}"] / w
            out["loss_vs_zero"] = out["loss_total"] / out["zero_loss_total"]
        if "tokens" in self.terms:
            n = max(totals["token_count"], 1.0)
            out["token_ce"] = totals["tokens"] / n
            out["token_ce_vs_uniform"] = out["token_ce"] / math.log(self.quantizer.size)
            out["token_accuracy"] = totals["token_correct"] / n
            out["codebook_entropy"] = totals["token_entropy"] / totals["batches"]
        if "clip" in self.terms:
            out["clip_ce"] = totals["clip"] / max(totals["crops"], 1.0)
            out["clip_accuracy"] = totals["clip_correct"] / max(totals["crops"], 1.0)
        return out
