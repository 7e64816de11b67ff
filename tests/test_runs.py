"""The run directory: config written once, resume checks, history, loaders."""

import json
import os
import subprocess

import pytest
from conftest import ROOT, run_bin, user_env

from m3bert_tf import runs

ENV = user_env()
CONFIG = {"model_dir": "x", "train_steps": 10, "model": {"num_layers": 2, "hidden_dim": 8}}


def test_first_start_writes_config_and_flags(tmp_path):
    run = runs.RunDir(str(tmp_path / "run"))
    assert run.start(CONFIG, "--train_steps=10\n", ("train_steps",)) == {}
    assert runs.read_config(run.path) == CONFIG
    assert (tmp_path / "run" / runs.FLAGS_NAME).read_text() == "--train_steps=10\n"


def test_resume_refuses_changed_fields_by_name_and_records_allowed_ones(tmp_path):
    run = runs.RunDir(str(tmp_path / "run"))
    run.start(CONFIG, "", ("train_steps",))
    bigger = {**CONFIG, "model": {"num_layers": 3, "hidden_dim": 16}}
    with pytest.raises(runs.ConfigMismatch) as e:
        run.start(bigger, "", ("train_steps",))
    assert "model.num_layers: 2 -> 3" in str(e.value)
    assert "model.hidden_dim: 8 -> 16" in str(e.value)
    # model_dir may be spelled differently; train_steps may grow.
    longer = {**CONFIG, "model_dir": "/elsewhere/x", "train_steps": 20}
    assert run.start(longer, "--train_steps=20", ("train_steps",)) == {
        "train_steps": [10, 20]
    }
    assert run.start(longer, "", ("train_steps",)) == {}  # compared with the latest
    # The first start's record is kept; each resume that changed something has its own.
    assert (
        json.loads((tmp_path / "run" / runs.CONFIG_NAME).read_text())["train_steps"] == 10
    )
    resume = json.loads((tmp_path / "run" / "config.resume-001.json").read_text())
    assert resume["changed"] == {"train_steps": [10, 20]}
    assert runs.read_config(run.path)["train_steps"] == 20


def test_an_export_is_told_apart_from_a_run_in_one_place(tmp_path):
    """`is_export`/`read_export_info` decide what the API, bin/embed and the
    digest read; a SavedModel without our export.json is refused by name."""
    run = runs.RunDir(str(tmp_path / "run"))
    run.start(CONFIG)
    export = tmp_path / "export" / "1"
    export.mkdir(parents=True)
    (export / runs.SAVED_MODEL_NAME).write_bytes(b"pb")
    assert runs.is_export(str(export)) and not runs.is_export(run.path)
    with pytest.raises(FileNotFoundError, match="export.json"):
        runs.read_export_info(str(export))
    (export / runs.EXPORT_INFO_NAME).write_text(json.dumps({"kind": "pretrained"}))
    assert runs.read_export_info(str(export)) == {"kind": "pretrained"}


def test_the_shard_index_has_one_writer_and_reader(tmp_path):
    from m3bert_tf.data import shard_writer, shards

    shard = str(tmp_path / "shard-00000.tfrecord")
    tracks = [{"track_id": "a", "num_chunks": 2}, {"track_id": "b", "num_chunks": 1}]
    info = shard_writer.write_index(shard, 3, 10, "ab", tracks, {})
    assert shards.read_index(shard) == info
    with pytest.raises(ValueError, match="3 chunks, the shard 4 records"):
        shard_writer.write_index(shard, 4, 10, "ab", tracks, {})
    # one that does not add up is not trusted: the reader counts the shard
    (tmp_path / "shard-00000.index.json").write_text(
        json.dumps({**info, "num_examples": 5})
    )
    assert shards.read_index(shard) is None
    (tmp_path / "shard-00000.index.json").write_text("{")
    assert shards.read_index(shard) is None


def test_a_run_stored_with_the_flat_masking_fields_resumes(tmp_path):
    """config.json of release 0.2.0 had "masking": policy and
    "per_clip_mask_choice"; read now, it is the nested MaskingConfig with the
    same numbers, so the same flags resume it and another policy is refused."""
    import dataclasses

    from m3bert_tf.train.configs import PretrainConfig

    config = dataclasses.asdict(PretrainConfig(data="d", model_dir="x"))
    old = {k: v for k, v in config.items() if k != "masking"}
    old |= {"masking": "cfm+ccm", "per_clip_mask_choice": False}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / runs.CONFIG_NAME).write_text(json.dumps(old))
    run = runs.RunDir(str(tmp_path / "run"))
    assert run.start(config) == {}
    assert runs.read_config(run.path)["masking"] == config["masking"]
    other = {**config, "masking": {**config["masking"], "policy": "pm"}}
    with pytest.raises(runs.ConfigMismatch, match="masking.policy: 'cfm\\+ccm' -> 'pm'"):
        run.start(other)


def test_a_run_stored_before_fields_were_added_resumes(tmp_path):
    """A config.json written before the objective and the model's block
    existed resumes with the values such a run had (top-level and nested
    fields alike), and another value of an added field is refused."""
    import dataclasses

    from m3bert_tf.train.configs import PRETRAIN_ADDED, PretrainConfig

    config = dataclasses.asdict(PretrainConfig(data="d", model_dir="x"))
    old = {k: v for k, v in config.items() if k != "objective"}
    old["model"] = {
        k: v for k, v in config["model"].items() if k not in ("block", "conv_kernel")
    }
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / runs.CONFIG_NAME).write_text(json.dumps(old))
    run = runs.RunDir(str(tmp_path / "run"))
    assert run.start(config, added=PRETRAIN_ADDED) == {}
    conformer = {**config, "model": {**config["model"], "block": "conformer"}}
    with pytest.raises(
        runs.ConfigMismatch, match="model.block: 'transformer' -> 'conformer'"
    ):
        run.start(conformer, added=PRETRAIN_ADDED)


def test_non_chief_writes_nothing(tmp_path):
    run = runs.RunDir(str(tmp_path / "run"), is_chief=lambda: False)
    run.start(CONFIG)
    run.write_json(runs.RESULTS_NAME, {"a": 1})
    assert not (tmp_path / "run").exists()


def test_a_run_of_release_0_1_0_was_fed_per_track_features(tmp_path):
    assert runs.read_input_spec(str(tmp_path)) == {
        "feature_spec": None,
        "normalization": "track",
        "stats": None,
    }


def test_bin_pretrain_refuses_another_num_layers_and_resumes_more_steps(
    corpus_shards, tmp_path
):
    def pretrain(*extra):
        args = [
            f"--flagfile={os.path.join(ROOT, 'configs', 'tiny.flags')}", f"--data={corpus_shards}",
            f"--model_dir={tmp_path}", "--max_frames=32", "--eval_every=0", "--eval_batches=1",
            "--checkpoint_every=2", "--log_every=1", *extra,
        ]  # fmt: skip
        return subprocess.run(
            run_bin("pretrain", *args), env=ENV, capture_output=True, text=True
        )

    res = pretrain("--train_steps=2")
    assert res.returncode == 0, res.stderr[-3000:]
    # What a user sees: no framework start-up lines, only ours.
    for noise in ("Unable to register", "oneDNN", "cuda", "Sharding callback", "I0000"):
        assert noise not in res.stderr
    assert all(line.startswith("pretrain: ") for line in res.stderr.strip().splitlines())
    res = pretrain("--train_steps=2", "--num_layers=3")
    assert res.returncode == 2
    assert "model.num_layers: 2 -> 3" in res.stderr and "Traceback" not in res.stderr
    res = pretrain("--train_steps=4")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "step 2 of 4" in res.stderr and "train_steps 2 -> 4" in res.stderr
    assert json.loads((tmp_path / runs.RESULTS_NAME).read_text())["step"] == 4
    assert runs.load_encoder(str(tmp_path)).num_layers == 2


def test_start_up_lines_are_hidden_by_the_level_a_user_set():
    """TensorFlow 2.21 writes its import-time lines through absl before it reads
    TF_CPP_MIN_LOG_LEVEL; the binaries filter them by the same levels."""
    from m3bert_tf.io.logs import hidden

    info = "I0000 00:00:1796319248.236745   31021 port.cc:153] oneDNN custom operations are on."
    warning = "W0000 00:00:1796319248.2   31021 cpu_feature_guard.cc:1] slow"
    error = "E0000 00:00:1796319248.2   31021 cuda_dnn.cc:8579] Unable to register cuDNN factory"
    fatal = "F0000 00:00:1796319248.2   31021 x.cc:1] Check failed"
    notice = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
    lines = (info, warning, error, fatal, notice)
    shown = {0: lines, 1: (warning, error, fatal), 2: (error, fatal), 3: (fatal,)}
    for level, visible in shown.items():
        assert [line for line in lines if not hidden(line, level)] == list(visible), level
    assert not hidden("pretrain: step 2 of 4", 3)
    assert not hidden("Traceback (most recent call last):", 3)
