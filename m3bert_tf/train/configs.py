"""The configs of the training jobs: one field per flag, the same names.

Errors name the field; with flag names equal to field names, the user reads
the flag to change. `*_MAY_CHANGE` list the fields a resumed run may change
(everything else is refused, `runs.RunDir.start`).
"""

import dataclasses

from m3bert_tf.data import masking as masking_lib
from m3bert_tf.data.normalization import MODES as NORMALIZATIONS
from m3bert_tf.fields import at_least, check_choices, choice
from m3bert_tf.models.encoder import BLOCKS
from m3bert_tf.train.distribute import PRECISIONS, STRATEGIES
from m3bert_tf.train.objectives import CLIP_TERMS, CODEBOOK_LAYOUTS, OBJECTIVES


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Encoder sizes (docs/contract.md "Model").

    Attributes:
      num_layers: transformer blocks (L).
      hidden_dim: hidden size (H).
      num_heads: attention heads (A).
      ffn_dim: the feed-forward inner size.
      frame_stack: consecutive frames concatenated per token.
      dropout: dropout rate.
      block: "transformer" (the paper's) or "conformer" (each block adds a
        depthwise convolution over time to attention: Gulati et al. 2020, the
        block of MusicFM).
      conv_kernel: the Conformer's convolution width in tokens (odd).
    """

    num_layers: int = 4
    hidden_dim: int = 768
    num_heads: int = 12
    ffn_dim: int = 3072
    frame_stack: int = 1
    dropout: float = 0.1
    block: str = choice("transformer", BLOCKS)
    conv_kernel: int = 31

    def __post_init__(self):
        check_choices(self)
        at_least(self, 1, "num_layers", "hidden_dim", "num_heads", "ffn_dim", "frame_stack")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ValueError(
                f"conv_kernel must be odd and positive, got {self.conv_kernel}"
            )
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim={self.hidden_dim} is not divisible by num_heads={self.num_heads}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """What pretraining predicts at the masked frames (`train/objectives.py`).

    Attributes:
      kind: "reconstruct" (the masked features, Huber: the paper's), "tokens"
        (each masked frame's code in frozen random codebooks, cross-entropy:
        BEST-RQ) or "reconstruct+tokens" (both, the tokens' weighted by
        token_weight).
      token_weight: weight of the token cross-entropy beside the Huber loss
        in reconstruct+tokens.
      codebooks: "blocks" (a codebook per feature block: chroma, mfcc,
        delta_mfcc, mel, cqt) or "all" (one over the 324 channels).
      codebook_size: codes per codebook.
      codebook_dim: dimension of the codes (of the random projection).
      clip: a clip-level term beside the frame objective: "none", or
        "contrastive" (two crops of each record in a batch; each crop's
        projected mean embedding must pick its partner among the batch's
        crops, NT-Xent: the batch holds half as many records).
      clip_weight: weight of the clip term.
      clip_temperature: the contrastive softmax temperature.
      clip_dim: width of the clip projection head.
    """

    kind: str = dataclasses.field(
        default="reconstruct", metadata={"flag": "objective", "choices": tuple(OBJECTIVES)}
    )
    token_weight: float = 1.0
    codebooks: str = dataclasses.field(
        default="blocks", metadata={"flag": "token_codebooks", "choices": CODEBOOK_LAYOUTS}
    )
    codebook_size: int = 512
    codebook_dim: int = 16
    clip: str = dataclasses.field(
        default="none", metadata={"flag": "clip_objective", "choices": CLIP_TERMS}
    )
    clip_weight: float = 1.0
    clip_temperature: float = 0.1
    clip_dim: int = 128

    def __post_init__(self):
        check_choices(self)
        at_least(self, 1, "clip_dim")
        if self.clip_weight <= 0 or self.clip_temperature <= 0:
            raise ValueError(
                f"clip_weight and clip_temperature must be > 0, got {self.clip_weight}, "
                f"{self.clip_temperature}"
            )
        at_least(self, 2, "codebook_size")
        at_least(self, 1, "codebook_dim")
        if self.token_weight <= 0:
            raise ValueError(f"token_weight must be > 0, got {self.token_weight}")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """One pre-training run.

    Attributes:
      data: training shards: a directory, glob or comma-separated globs.
      model_dir: the run directory: checkpoints, TensorBoard logs, config (a
        second run of the same command resumes it; `runs/`).
      eval_data: shards for evaluation; "" = the tracks of `data` held out by
        `holdout_percent` (hash of track id; never trained on).
      model: encoder sizes.
      masking: how examples are masked (`masking.MaskingConfig`: the policy
        is the flag --masking, its other fields flags of their own).
      objective: what is predicted at the masked frames (`ObjectiveConfig`:
        its kind is the flag --objective).
      normalization: features as the encoder sees them: "track" (per-track
        CMVN, the paper's), "global" (one mean/std over the training data,
        from the manifests) or "none" (raw features).
      train_steps: optimizer steps (T of the schedule).
      global_batch_size: examples per optimizer step, all replicas and
        micro-batches together.
      gradient_accumulation_steps: micro-batches per step per replica.
      max_frames: example length (crop/pad) in the data pipeline; the model
        takes any length.
      learning_rate: lmax of the schedule.
      warmup_fraction: w of the schedule.
      clip_norm: global gradient-norm clip (0 = none).
      mixed_precision: "auto" (bfloat16 compute with float32 weights where the
        hardware has bfloat16 arithmetic: a GPU of compute capability 8.0+,
        a TPU, a CPU with avx512_bf16 or amx_bf16; else float32), "bf16"
        (always; slower where emulated, with a warning) or "fp32".
      xla: compile the forward/backward pass with XLA.
      strategy: "auto" (multi_worker when TF_CONFIG names a cluster, else
        mirrored), "mirrored", "multi_worker", "one_device" or "tpu"
        (`distribute.make_strategy`).
      tpu: the TPU to use under strategy=tpu ("" = the local one).
      data_service: "grpc://host:port" of a tf.data service dispatcher
        (bin/data_service): the training pipeline up to the batches runs on
        its workers ("" = in this process).
      num_cpu_replicas: with no GPU, split the CPU into this many logical
        devices (mirrored; exercises the distributed path).
      checkpoint_every, keep_checkpoints: checkpoint cadence and retention.
      snapshot_every: keep the encoder every N steps as
        snapshots/encoder-<step>.keras, none removed (0 = never): the points
        of a learning curve (bin/evaluate --models=name=run@every).
      eval_every, eval_batches: evaluation cadence and size (0 = at the end only).
      log_every: steps between progress lines and TensorBoard scalars.
      shuffle_buffer: examples in the shuffle buffer.
      holdout_percent: percent of the tracks held out for evaluation.
      seed: seed of the data order, crops, masks and initial weights.
    """

    data: str
    model_dir: str
    eval_data: str = ""
    model: ModelConfig = ModelConfig()
    masking: masking_lib.MaskingConfig = masking_lib.MaskingConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    normalization: str = choice("track", NORMALIZATIONS)
    train_steps: int = 200_000
    global_batch_size: int = 128
    gradient_accumulation_steps: int = 1
    max_frames: int = 1294
    learning_rate: float = 2e-4
    warmup_fraction: float = 0.07
    clip_norm: float = 1.0
    mixed_precision: str = choice("auto", PRECISIONS)
    xla: bool = False
    strategy: str = choice("auto", STRATEGIES)
    tpu: str = ""
    data_service: str = ""
    num_cpu_replicas: int = 1
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    snapshot_every: int = 0
    eval_every: int = 1000
    eval_batches: int = 20
    log_every: int = 100
    shuffle_buffer: int = 64
    holdout_percent: int = 5
    seed: int = 0

    def __post_init__(self):
        check_choices(self)
        at_least(
            self, 1, "train_steps", "global_batch_size", "gradient_accumulation_steps",
            "max_frames", "num_cpu_replicas", "checkpoint_every", "keep_checkpoints",
            "log_every", "shuffle_buffer",
        )  # fmt: skip
        at_least(self, 0, "eval_every", "snapshot_every")
        if self.data_service and "://" not in self.data_service:
            raise ValueError(
                f"data_service must be grpc://host:port, got {self.data_service!r}"
            )
        if not 0 <= self.holdout_percent < 100:
            raise ValueError(
                f"holdout_percent must be in [0, 100), got {self.holdout_percent}"
            )


# Fields added since release 0.2.0: a run stored without them had these values.
PRETRAIN_ADDED = {
    "objective": dataclasses.asdict(ObjectiveConfig()),
    "model": {"block": "transformer", "conv_kernel": 31},
}

PRETRAIN_MAY_CHANGE = (
    "train_steps", "data", "eval_data", "checkpoint_every", "keep_checkpoints",
    "snapshot_every", "eval_every",
    "eval_batches", "log_every", "mixed_precision", "xla", "num_cpu_replicas",
    "gradient_accumulation_steps", "strategy", "tpu", "data_service",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run.

    Attributes:
      pretrained: a bin/pretrain run directory (its encoder.keras is loaded).
      data: labeled shard dirs or globs, comma-separated.
      model_dir: the run directory: checkpoints, TensorBoard logs, config (a
        second run of the same command resumes it; `runs/`).
      tasks: tasks to train; empty = every task in the data's manifests.
      normalization: "" = as the pretrained encoder was trained (anything
        else must equal it).
      train_steps: optimizer steps at most, a ceiling: early stopping by
        `patience` is the usual end.
      batch_size: examples per step, all tasks mixed.
      max_frames: training crop (frames); 0 = the pretraining run's.
        Evaluation always scores whole examples, in encoder windows of
        this length.
      learning_rate: Adam's peak (the pre-training schedule: linear warm-up
        over `warmup_fraction` of `train_steps`, then linear decay).
      warmup_fraction: of `train_steps`.
      embedding_dim: width of the enrichment layer (the M3BERT embedding).
      dropout: on the clip embedding before the heads.
      unfreeze_top_blocks: encoder blocks (from the top) trained too.
      uncertainty_weighting: learn the task weights (Kendall et al.).
      task_sampling_temperature: P(task) ~ size^T (1 proportional, 0 uniform).
      eval_every, patience: validation cadence (steps; 0 = at the end only)
        and early-stopping patience (evaluations).
      checkpoint_every, keep_checkpoints: checkpoint cadence (steps) and retention.
      log_every: steps between progress lines and TensorBoard scalars.
      seed: seed of the data order, crops and the heads' initial weights.
    """

    pretrained: str
    data: str
    model_dir: str
    tasks: tuple[str, ...] = ()
    normalization: str = choice("", ("",) + NORMALIZATIONS)
    train_steps: int = 20000
    batch_size: int = 32
    max_frames: int = 0
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.07
    embedding_dim: int = 256
    dropout: float = 0.1
    unfreeze_top_blocks: int = 0
    uncertainty_weighting: bool = False
    task_sampling_temperature: float = 1.0
    eval_every: int = 250
    patience: int = 8
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    log_every: int = 50
    seed: int = 0

    def __post_init__(self):
        check_choices(self)
        at_least(
            self, 1, "train_steps", "batch_size", "embedding_dim", "checkpoint_every",
            "keep_checkpoints", "log_every", "patience",
        )  # fmt: skip
        at_least(self, 0, "max_frames", "eval_every", "unfreeze_top_blocks")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(
                f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}"
            )


FINETUNE_MAY_CHANGE = (
    "train_steps", "data", "checkpoint_every", "keep_checkpoints", "eval_every", "log_every",
    "patience",
)  # fmt: skip
