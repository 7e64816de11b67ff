"""The `make demo` job: the whole pipeline on the built-in example corpus.

    run_demo("demo_output")

Stages (each resumes if its output is already there):
1. write the synthesized example corpus (`corpus.py`) to <workdir>/corpus;
2. extract it to TFRecord shards in <workdir>/shards (`extract.py`);
3. pre-train the tiny config (configs/tiny.flags) on them in <workdir>/pretrain
   and report the held-out masked loss against predicting zeros (the mean);
4. fine-tune it on the corpus labels, each track labeled for one task only
   (genre and instrument classification, valence and arousal regression), in
   <workdir>/finetune, and print the per-task table against chance.
"""

import dataclasses
import os
import time

from m3bert_tf import corpus, extract, extract_manifest, runs


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
        print(f"[1/4] writing {num_tracks} synthesized tracks to {corpus_dir}", flush=True)
        corpus.write_example_corpus(corpus_dir, num_tracks=num_tracks)
    else:
        print(f"[1/4] example corpus already in {corpus_dir}", flush=True)

    shard_dir = os.path.join(workdir, "shards")
    print(f"[2/4] extracting features to {shard_dir}", flush=True)
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
        f"[3/4] pre-training the tiny encoder for {pretrain_config.train_steps} steps in "
        f"{model_dir}",
        flush=True,
    )
    results = pretrain.run_pretrain(pretrain_config)
    ev = results["eval"]
    print(
        f"      held-out masked Huber loss {ev['loss_total']:.4f} vs {ev['zero_loss_total']:.4f} "
        f"for predicting zeros (the per-channel mean): ratio {ev['loss_vs_zero']:.2f}\n"
        f"      (frames {ev['loss_frame']:.4f} vs {ev['zero_loss_frame']:.4f}, "
        f"channels {ev['loss_channel']:.4f} vs {ev['zero_loss_channel']:.4f})"
    )
    print(f"      encoder: {os.path.join(model_dir, runs.ENCODER_NAME)}")
    print(f"      TensorBoard: .venv/bin/tensorboard --logdir {model_dir}")

    from m3bert_tf import metrics
    from m3bert_tf.train import finetune

    finetune_config = dataclasses.replace(finetune_config, tasks=corpus.TASKS)
    print(
        f"[4/4] fine-tuning on {', '.join(corpus.TASKS)} for up to "
        f"{finetune_config.train_steps} steps in {finetune_config.model_dir}",
        flush=True,
    )
    tuned = finetune.run_finetune(finetune_config)
    print(metrics.format_table(tuned["tasks"], scope=tuned["scope"]))
    print(f"      model: {os.path.join(finetune_config.model_dir, runs.MULTITASK_NAME)}")
    print(f"demo finished in {time.monotonic() - t0:.0f} s; results under {workdir}/")
    return {"manifest": manifest, "pretrain": results, "finetune": tuned}
