"""bin/evaluate's cost per 1000 clips: embedding + probes, against probes on
cached embeddings (a rerun with another probe setting).

    .venv/bin/python benchmarks/evaluate_bench.py [--clips=96] [--config=tiny] \
        [--output=benchmarks/results/evaluate.json]

In one process, on `--clips` synthesized labeled 30 s clips (the example
corpus, one 1294-frame example each; its four tasks), with an encoder of
`--config` (tiny: L=2, H=64; small: L=4, H=768; trained one step from
another seed than the random twin's, so its weights are as good as random:
this measures speed only):

1. a first `run_evaluate` (reads the examples, embeds them with the model and
   its random twin, probes 5 feature sets x 4 tasks x 2 probes x `--seeds`);
2. the same again, every embedding from the cache: the probe stage alone;
3. the probe stage again without the intervals and paired comparisons
   (`evaluate.bootstrap`'s resampling replaced by a constant): the reference
   for their cost, which must not double the stage;
4. seconds per 1000 clips of each, and their ratios;
5. the probe stage under load (`--load_clips`, 0 = skip): a 12-class task
   of synthesized clip embeddings (a model row, mfcc- and features-wide
   rows, the added-value rows) probed alone and beside one CPU-bound
   process per core, with the job's BLAS threads (one) and with one per
   core (the library default) as the reference; the ratio beside/alone of
   each, and the intervals' share of the stage.
"""

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from m3bert_tf.io import logs  # noqa: E402

logs.quiet_tensorflow_import()  # TensorFlow 2.21 prints its import lines before reading the level

from finetune_bench import CONFIGS, cpu_name, labeled_clips  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output", default="")
    parser.add_argument("--load_clips", type=int, default=880)
    parser.add_argument("--skip_pipeline", action="store_true",
                        help="only the probe stage under load")  # fmt: skip
    args = parser.parse_args()
    results = {"cpu": cpu_name(), "cpus": os.cpu_count()}
    if not args.skip_pipeline:
        results |= pipeline_stage(args)
    if args.load_clips:
        results["under_load"] = probe_stage_under_load(args.load_clips, args.seeds)
    if args.output:
        from m3bert_tf.io.storage import write_json

        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        write_json(args.output, results)


def _busy(stop):
    """A CPU-bound process: spins until `stop` is set."""
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def probe_stage_under_load(clips: int, seeds: int) -> dict:
    """Seconds of one task's probe stage (`job._probe_task`) alone and beside
    one busy process per core, with one BLAS thread and with one per core."""
    import multiprocessing
    from unittest import mock

    import numpy as np
    from threadpoolctl import threadpool_limits

    from m3bert_tf.evaluate import bootstrap, feature_sets, job
    from m3bert_tf.tasks import TaskSpec

    rng = np.random.default_rng(0)
    classes = 12
    spec = TaskSpec(
        "soundtrack", "classification", classes=tuple(f"c{i}" for i in range(classes))
    )
    y = rng.integers(0, classes, clips)
    splits = np.array(["train", "train", "train", "valid", "test"])[np.arange(clips) % 5]
    examples = feature_sets.Examples(
        np.array([f"t{i}" for i in range(clips)]), splits,
        {"soundtrack": y[:, None].astype(np.float32)}, {"soundtrack": np.ones(clips, bool)}, {},
    )  # fmt: skip

    def signal(width, strength):
        x = rng.normal(size=(clips, width)).astype(np.float32)
        x[:, :classes] += strength * np.eye(classes, dtype=np.float32)[y]
        return x

    sets = [
        feature_sets.FeatureSet("M2BERT", signal(128, 0.5), pooling="mean+std"),
        feature_sets.FeatureSet("mfcc", signal(40, 0.3), pooling="mean+std", kind="baseline"),
        feature_sets.FeatureSet("features", signal(648, 0.5), pooling="mean+std", kind="baseline"),
    ]  # fmt: skip
    config = job.EvaluateConfig(data="-", output_dir="-", baselines=("mfcc", "features"),
                                seeds=seeds)  # fmt: skip

    def stage(threads):
        start = time.perf_counter()
        with threadpool_limits(limits=threads, user_api="blas"):
            job._probe_task(config, spec, examples, sets, lambda done: None)
        return time.perf_counter() - start

    cores = len(os.sched_getaffinity(0))
    out = {"clips": clips, "classes": classes, "seeds": seeds, "cores": cores}
    out["alone_1_thread"] = stage(1)
    out[f"alone_{cores}_threads"] = stage(cores)
    with mock.patch.object(
        bootstrap, "resampled_scores", lambda *a: np.zeros(bootstrap.RESAMPLES)
    ):
        out["alone_without_intervals"] = stage(1)
    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=_busy, args=(stop,)) for _ in range(cores)]
    for hog in hogs:
        hog.start()
    try:
        time.sleep(1.0)
        out["beside_load_1_thread"] = stage(1)
        out[f"beside_load_{cores}_threads"] = stage(cores)
    finally:
        stop.set()
        for hog in hogs:
            hog.join()
    out["ratio_1_thread"] = out["beside_load_1_thread"] / out["alone_1_thread"]
    out[f"ratio_{cores}_threads"] = (
        out[f"beside_load_{cores}_threads"] / out[f"alone_{cores}_threads"]
    )
    out["intervals_share"] = 1 - out["alone_without_intervals"] / out["alone_1_thread"]
    print(f"probe stage of a {classes}-class task, {clips} clips: a model row, mfcc, "
          f"features and the model's added-value row x 2 probes x {seeds} seeds, "
          f"{cores} cores:")  # fmt: skip
    for threads in (1, cores):
        suffix = f"{threads}_thread" + ("s" if threads > 1 else "")
        print(f"  {threads} BLAS thread(s): alone {out[f'alone_{suffix}']:.1f} s, beside "
              f"{cores} busy processes {out[f'beside_load_{suffix}']:.1f} s "
              f"(x{out[f'ratio_{suffix}']:.2f})")  # fmt: skip
    print(
        f"  intervals and paired comparisons: {100 * out['intervals_share']:.0f} % of the stage"
    )
    return out


def pipeline_stage(args) -> dict:
    from unittest import mock

    import numpy as np

    from m3bert_tf.evaluate import bootstrap, job
    from m3bert_tf.train import configs, pretrain

    with tempfile.TemporaryDirectory() as directory:
        data = labeled_clips(directory, args.clips)
        model_dir = os.path.join(directory, "model")
        pretrain.run_pretrain(
            configs.PretrainConfig(
                data=data, model_dir=model_dir, model=configs.ModelConfig(**CONFIGS[args.config]),
                train_steps=1, global_batch_size=2, max_frames=1294, eval_every=0,
                eval_batches=1, checkpoint_every=1, log_every=1, holdout_percent=0, seed=1,
            ),
            log=lambda m: None,
        )  # fmt: skip
        config = job.EvaluateConfig(
            data=data, output_dir=os.path.join(directory, "eval"), models=(model_dir,),
            seeds=args.seeds,
        )  # fmt: skip
        timings = {}
        for name in ("embed_and_probe", "probe_only_cached", "probe_without_intervals"):
            start = time.perf_counter()
            if name == "probe_without_intervals":
                with mock.patch.object(
                    bootstrap, "resampled_scores", lambda *a: np.zeros(bootstrap.RESAMPLES)
                ):
                    job.run_evaluate(config, log=lambda m: None)
            else:
                result = job.run_evaluate(config, log=lambda m: None)
            timings[name] = time.perf_counter() - start
    per_1000 = {k: v * 1000 / args.clips for k, v in timings.items()}
    results = {
        "config": args.config, "clips": args.clips,
        "seeds": args.seeds, "feature_sets": len(result["feature_sets"]),
        "tasks": len(result["tasks"]), "seconds": timings,
        "seconds_per_1000_clips": per_1000,
        "embedding_share": 1 - timings["probe_only_cached"] / timings["embed_and_probe"],
        "intervals_ratio": timings["probe_only_cached"] / timings["probe_without_intervals"],
    }  # fmt: skip
    print(f"{cpu_name()} ({os.cpu_count()} CPUs), {args.config} encoder, {args.clips} clips "
          f"of 30 s, {results['feature_sets']} feature sets x {results['tasks']} tasks x 2 probes "
          f"x {args.seeds} seeds")  # fmt: skip
    for name, value in per_1000.items():
        print(f"  {name:18s} {value:8.0f} s per 1000 clips")
    print(f"  the cache saves {100 * results['embedding_share']:.0f} % of a rerun")
    print(
        f"  intervals and paired comparisons: the probe stage x{results['intervals_ratio']:.2f}"
    )
    return results


if __name__ == "__main__":
    main()
