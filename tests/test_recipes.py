"""The paper's experiments as scripts (recipes/), end to end on the example
corpus with the tiny config and a few steps each."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, extract_corpus, user_env

STEPS = "--train_steps=2 --eval_every=2 --checkpoint_every=2 --eval_batches=1 --log_every=1"
EVALUATE = "--seeds=1 --epochs=3 --probes=linear --baselines=mfcc --batch_size=64"


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    return root, extract_corpus(root, num_tracks=40, min_duration=6.0, max_duration=8.0)


def _run(script, *args, **env):
    res = subprocess.run(
        ["bash", os.path.join(ROOT, "recipes", script), *map(str, args)],
        env={**user_env(), "PYTHON": sys.executable, "FLAGFILE": "configs/tiny.flags", "EVALUATE_FLAGS": EVALUATE, **env},
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _rows(work):
    """The feature sets of a recipe's evaluation, its added-value rows apart
    (each of those is checked to join a model row to the baseline)."""
    with open(os.path.join(work, "evaluate", "results.json")) as f:
        results = json.load(f)
    rows = [row for task in results["tasks"].values() for row in task["rows"]]
    sets = {row["set"] for row in rows if row["kind"] != "added"}
    added = {row["set"] for row in rows if row["kind"] == "added"}
    models = {s for s in sets if s.startswith(("M2BERT", "M3BERT"))}
    assert added == {f"{m} + mfcc" for m in models}, added
    return sets


def test_table5_pretrains_each_masking_policy_then_evaluates_them(small_corpus):
    root, shards = small_corpus
    work = root / "table5"
    # Two of the four policies (the script's default runs all four): the suite's time.
    _run("table5_masking.sh", shards, shards, work, *STEPS.split(), POLICIES="pm cfm+ccm")
    assert _rows(work) == {"M2BERT pm", "M2BERT cfm+ccm", "mfcc"}
    for policy, directory in (("pm", "pretrain-pm"), ("cfm+ccm", "pretrain-cfm_ccm")):
        with open(work / directory / "config.json") as f:
            assert json.load(f)["masking"]["policy"] == policy


def test_tables6_10_pretrain_finetune_and_evaluate_m2bert_against_m3bert(small_corpus):
    root, shards = small_corpus
    work = root / "tables6_10"
    _run(
        "tables6_10_m2bert_m3bert.sh", shards, shards, work,
        PRETRAIN_FLAGS=STEPS,
        FINETUNE_FLAGS=f"--flagfile=configs/tiny_finetune.flags {STEPS.replace('--eval_batches=1 ', '')}",
    )  # fmt: skip
    assert _rows(work) == {"M2BERT m3bert", "M3BERT m3bert", "mfcc"}


def test_table11_pretrains_on_corpus_subsets_and_sizes(small_corpus):
    root, shards = small_corpus
    work = root / "table11"
    _run(
        "table11_data_and_size.sh", root / "corpus" / "manifest.csv", shards, work,
        PERCENTS="50", SIZES="configs/tiny.flags", PRETRAIN_FLAGS=STEPS,
        EXTRACT_FLAGS="--shard_size=8",
    )  # fmt: skip
    assert _rows(work) == {"M2BERT tiny 50%", "mfcc"}
    with open(work / "shards-50" / "manifest.json") as f:
        assert sum(s["num_examples"] for s in json.load(f)["shards"]) < 40


def test_a_recipe_without_arguments_prints_its_usage():
    res = subprocess.run(
        ["bash", os.path.join(ROOT, "recipes", "table5_masking.sh")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 2 and "Usage" not in res.stderr
    assert "recipes/table5_masking.sh <pretraining shards>" in res.stdout
