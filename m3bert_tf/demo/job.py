"""The `make demo` job: the whole pipeline on the built-in example corpus.

    run_demo("demo_output")

Stages (each resumes if its output is already there):
1. write the synthesized example corpus (`corpus.py`) to <workdir>/corpus;
2. extract it to TFRecord shards in <workdir>/shards (`extract/`);
3. pre-train the tiny config (configs/tiny.flags) on them in <workdir>/pretrain
   and report the held-out masked loss against predicting zeros (the mean);
4. fine-tune it on the corpus labels, each track labeled for one task only
   (genre and instrument classification, valence and arousal regression), in
   <workdir>/finetune, and print the per-task table against chance;
5. export the fine-tuned model as a SavedModel for TensorFlow Serving in
   <workdir>/export/<version> (a new version each run);
6. embed one example file with it (`bin/embed`'s job) into <workdir>/embeddings/<version>
   and print the shapes and the serving command;
7. judge both models the paper's way (`bin/evaluate`'s job: probes on frozen
   clip embeddings against the baselines, 5 folds grouped by track so that
   every track is tested once) in <workdir>/evaluate, and print
   the tables.
"""

import dataclasses
import os
import shutil
import time

from m3bert_tf import extract, runs
from m3bert_tf.demo import corpus
from m3bert_tf.extract import manifest as extract_manifest


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The demo's own settings (bin/demo; the pretraining ones are a
    PretrainConfig's, the fine-tuning ones a flag file's).

    Attributes:
      workdir: where the demo writes everything.
      finetune_flagfile: fine-tuning settings of the demo (a relative path not
        found here is looked up in the repository).
      num_tracks: tracks in the synthesized example corpus.
      num_workers: extraction worker processes; 0 = all cores.
    """

    workdir: str = "demo_output"
    finetune_flagfile: str = "configs/tiny_finetune.flags"
    num_tracks: int = 160
    num_workers: int = 0


def run_demo(
    workdir: str,
    pretrain_config,
    finetune_config,
    num_tracks: int = 160,
    num_workers: int = 0,
) -> dict:
    """Runs the demo stages; prints what each did and where its results are.

    Args:
      pretrain_config: a PretrainConfig (configs/tiny.flags) on <workdir>/shards.
      finetune_config: a FinetuneConfig (configs/tiny_finetune.flags); its
        tasks are set to the corpus's.
    """
    t0 = time.monotonic()
    corpus_dir = os.path.join(workdir, "corpus")
    if not os.path.exists(os.path.join(corpus_dir, "manifest.csv")):
        print(f"[1/7] writing {num_tracks} synthesized tracks to {corpus_dir}", flush=True)
        corpus.write_example_corpus(corpus_dir, num_tracks=num_tracks)
    else:
        print(f"[1/7] example corpus already in {corpus_dir}", flush=True)

    shard_dir = os.path.join(workdir, "shards")
    print(f"[2/7] extracting features to {shard_dir}", flush=True)
    manifest = extract.run_extract(
        extract.ExtractConfig(
            input=os.path.join(corpus_dir, "manifest.csv"),
            output_dir=shard_dir,
            num_workers=num_workers,
            shard_size=16,
        )
    )
    print(extract_manifest.summarize(manifest))
    print(f"      manifest: {os.path.join(shard_dir, 'manifest.json')}")

    from m3bert_tf.train import pretrain

    model_dir = pretrain_config.model_dir
    print(
        f"[3/7] pre-training the tiny encoder for {pretrain_config.train_steps} steps in "
        f"{model_dir}",
        flush=True,
    )
    results = _afresh_if_changed(pretrain.run_pretrain, pretrain_config)
    ev = results["eval"]
    print(
        f"      held-out masked Huber loss {ev['loss_total']:.4f} vs {ev['zero_loss_total']:.4f} "
        f"for predicting zeros (the per-channel mean): ratio {ev['loss_vs_zero']:.2f}\n"
        f"      (frames {ev['loss_frame']:.4f} vs {ev['zero_loss_frame']:.4f}, "
        f"channels {ev['loss_channel']:.4f} vs {ev['zero_loss_channel']:.4f})"
    )
    print(f"      encoder: {os.path.join(model_dir, runs.ENCODER_NAME)}")
    print(f"      TensorBoard: .venv/bin/tensorboard --logdir {model_dir}")

    from m3bert_tf.tasks import metrics
    from m3bert_tf.train import finetune

    finetune_config = dataclasses.replace(finetune_config, tasks=corpus.TASKS)
    print(
        f"[4/7] fine-tuning on {', '.join(corpus.TASKS)} for up to "
        f"{finetune_config.train_steps} steps in {finetune_config.model_dir}",
        flush=True,
    )
    tuned = _afresh_if_changed(finetune.run_finetune, finetune_config)
    how = "stopped early by patience" if tuned["stopped_early"] else "ran to its ceiling"
    print(f"      {how} at step {tuned['step']}")
    print(metrics.format_table(tuned["tasks"], scope=tuned["scope"]))
    print(f"      model: {os.path.join(finetune_config.model_dir, runs.MULTITASK_NAME)}")
    from m3bert_tf.serving import embed_job, export

    export_base = os.path.join(workdir, "export")
    print(f"[5/7] exporting {finetune_config.model_dir} for TensorFlow Serving and LiteRT",
          flush=True)  # fmt: skip
    version_dir = export.export_run(
        finetune_config.model_dir,
        export_base,
        log=lambda m: print(f"      {m}"),
        litert=True,
    )
    example = sorted(os.listdir(os.path.join(corpus_dir, "audio")))[0]
    example_path = os.path.join(corpus_dir, "audio", example)
    # One directory per export version: a directory never mixes two models.
    embeddings_dir = os.path.join(workdir, "embeddings", os.path.basename(version_dir))
    print(f"[6/7] embedding {example_path} with {version_dir}", flush=True)
    embedded = embed_job.run_embed(
        embed_job.EmbedConfig(
            model=version_dir, input=example_path, output_dir=embeddings_dir,
            num_workers=0, progress_interval=1e9,
        )
    )  # fmt: skip
    npz = os.path.join(embeddings_dir, os.path.splitext(example)[0] + ".npz")
    import numpy as np

    with np.load(npz) as data:
        shapes = ", ".join(f"{k} {list(data[k].shape)}" for k in data.files if data[k].ndim)
    print(f"      {npz}: {shapes}")
    print(f"      index: {embedded['index']}")
    _compare_litert(version_dir, example_path)
    print(
        "      serve it: tensorflow_model_server --port=8500 --rest_api_port=8501 "
        f"--model_name={export.MODEL_NAME} --model_base_path={os.path.abspath(export_base)}"
    )
    from m3bert_tf.evaluate import job as evaluate_job

    evaluate_dir = os.path.join(workdir, "evaluate")
    print(
        f"[7/7] probing the pretrained (M2BERT) and fine-tuned (M3BERT) models against the "
        f"baselines in {evaluate_dir}",
        flush=True,
    )
    judged = evaluate_job.run_evaluate(
        evaluate_job.EvaluateConfig(
            data=shard_dir, output_dir=evaluate_dir, seeds=2, epochs=60, folds=5,
            models=(f"pretrained={model_dir}", f"fine-tuned={finetune_config.model_dir}"),
        ),
        log=lambda m: print(f"      {m}"),
    )  # fmt: skip
    print(judged["markdown"])
    print(
        "      How to read it: stage 5's table scores the fine-tuned heads on whole test "
        "clips; these tables score new probes on frozen clip embeddings, per test track. "
        "Different models and protocols give different numbers; a difference is more "
        "than noise only where it is marked resolved (its 95 % interval excludes 0)."
    )
    print(f"      tables: {evaluate_dir}/results.md, plots: {evaluate_dir}/plot_<task>.png")
    from m3bert_tf.evaluate.report import sentences

    print(
        "What the probe tables show (95 % intervals, every track tested once over 5 folds):"
    )
    for line in sentences(judged):
        print(f"  - {line}")
    print(f"demo finished in {time.monotonic() - t0:.0f} s; results under {workdir}/")
    return {
        "manifest": manifest,
        "pretrain": results,
        "finetune": tuned,
        "evaluate": judged,
    }


def _compare_litert(version_dir: str, example_path: str) -> None:
    """Prints the LiteRT file's size and how far its clip embedding of the
    example is from the SavedModel's (both through their own front end)."""
    import numpy as np

    from m3bert_tf.serving import litert
    from m3bert_tf.serving.api import load

    path = os.path.join(version_dir, litert.LITERT_NAME)
    lite, saved = (
        load(path).embed_file(example_path),
        load(version_dir).embed_file(example_path),
    )
    gap = float(np.abs(lite["clip_embedding"] - saved["clip_embedding"]).max())
    print(f"      LiteRT: {path} ({os.path.getsize(path) / 1e6:.2f} MB, builtin operators); "
          f"its clip embedding of the example is within {gap:.1e} of the SavedModel's")  # fmt: skip


def _afresh_if_changed(job, config):
    """Runs (or resumes) a demo stage; a run directory left by another release
    or settings (its config refused on resume) is the demo's own: it is
    removed, with a message, and the stage starts afresh."""
    try:
        return job(config)
    except runs.ConfigMismatch as e:
        print(
            f"      {config.model_dir} holds a demo run of other settings "
            f"({str(e).split('(', 1)[-1].split(')')[0]}): starting it afresh",
            flush=True,
        )
        shutil.rmtree(config.model_dir)
        return job(config)
