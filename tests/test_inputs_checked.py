"""Every input checked where it enters (issue "Nothing lost when the disk
fills, nothing resumed on trust", items 3-6 and 11): labels, regression
targets whose R² is undefined, external embeddings, ids."""

import os
import types

import numpy as np
import pytest
from conftest import extract_labeled
from sklearn.metrics import r2_score

from m3bert_tf.evaluate import bootstrap, feature_sets, job, scores
from m3bert_tf.tasks import LabelError, TaskSpec, metrics

TEMPO = TaskSpec("tempo", "regression", outputs=("tempo",))
TWO = TaskSpec("va", "regression", outputs=("valence", "arousal"))


def test_r2_is_undefined_for_constant_targets_and_sklearns_elsewhere():
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=(20, 2)), rng.normal(size=(20, 2))
    np.testing.assert_allclose(
        metrics.r2_per_output(y, p), r2_score(y, p, multioutput="raw_values"), rtol=1e-12
    )
    constant = np.full((20, 1), 5.0)
    for guess in (constant, constant + 1):  # sklearn says 1.0, then 0.0
        assert np.isnan(metrics.score_task(TEMPO, constant, guess)["score"])
        assert np.isnan(scores.main_score(TEMPO, constant, guess))
    # One output constant: the score is the other's R², the constant one undefined.
    mixed = np.stack([y[:, 0], np.full(20, 3.0)], 1)
    result = metrics.score_task(TWO, mixed, p)
    assert np.isnan(result["r2_arousal"])
    assert result["score"] == pytest.approx(r2_score(y[:, 0], p[:, 0]))
    assert metrics.constant_outputs(TWO, mixed) == {"arousal": 3.0}
    resampled = bootstrap.resampled_scores(
        TEMPO, constant, [constant], np.zeros((3, 20), int)
    )
    assert np.isnan(resampled).all()
    table = metrics.format_table(
        {"tempo": {"valid": {"examples": 20, "r2_tempo": np.nan, "chance": np.nan}}},
        splits=("valid",),
    )
    assert "r2_tempo undefined" in table and "chance undefined" in table
    assert "nan" not in table


def test_a_task_of_constant_targets_is_not_scored_and_says_why(tmp_path):
    """Evaluation: the constant task is listed as not scored, its R²
    undefined, beside a task that is scored; no "0.000, best" row for it."""
    rows = [(f"g{i}", ("train", "valid", "test")[i % 3], "genre", "ab"[i % 2])
            for i in range(18)]  # fmt: skip
    rows += [(f"t{i}", ("train", "valid", "test")[i % 3], "tempo",
              str(100 + i) if i % 3 == 0 else "120") for i in range(18)]  # fmt: skip
    data = extract_labeled(tmp_path, rows)
    logged = []
    result = job.run_evaluate(
        job.EvaluateConfig(
            data=data, output_dir=str(tmp_path / "eval"), baselines=("mfcc",),
            probes=("linear",), seeds=1, epochs=3,
        ),
        log=logged.append,
    )  # fmt: skip
    assert "genre" in result["tasks"] and "tempo" not in result["tasks"]
    why = result["skipped"]["tempo"]
    assert "R² is undefined" in why and "valid targets are constant (tempo = 120)" in why
    assert any("task tempo: not probed, R² is undefined" in line for line in logged)


@pytest.mark.parametrize("label", ["nan", "inf", "-inf", "1e400"])
def test_non_finite_regression_labels_are_refused_naming_the_track(tmp_path, label):
    with pytest.raises(LabelError, match="not finite"):
        TEMPO.encode(label)
    rows = [
        (f"t{i}", "train", "tempo", label if i == 1 else str(100 + i)) for i in range(3)
    ]
    data = extract_labeled(tmp_path, rows)
    manifest = __import__("json").load(open(f"{data}/manifest.json"))
    (failure,) = manifest["failures"]
    assert failure["path"].endswith("t1.wav")
    assert "bad label" in failure["reason"] and "not finite" in failure["reason"]
    assert manifest["counts"]["tracks"] == 2


def test_external_embeddings_are_checked_where_they_enter(tmp_path):
    examples = types.SimpleNamespace(track_ids=np.array(["a", "b"]))
    d = tmp_path / "emb"
    d.mkdir()
    np.savez(d / "a.npz", frame_embeddings=np.ones((4, 8), np.float32))
    np.savez(d / "b.npz", frame_embeddings=np.ones((2, 3, 8), np.float32))
    with pytest.raises(ValueError, match=r"b.npz holds an array of shape \(2, 3, 8\)"):
        feature_sets.load_external(str(d), examples, "ext")
    np.savez(d / "b.npz", frame_embeddings=np.full((4, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        feature_sets.load_external(str(d), examples, "ext")
    np.savez(tmp_path / "outside.npz", frame_embeddings=np.ones((4, 8), np.float32))
    (d / "index.csv").write_text("track_id,file\na,a.npz\nb,../outside.npz\n")
    with pytest.raises(ValueError, match="'../outside.npz' for 'b', outside its directory"):
        feature_sets.load_external(str(d), examples, "ext")
    (d / "index.csv").write_text("track_id,file\na,a.npz\nb,a.npz\n")
    loaded = feature_sets.load_external(str(d), examples, "ext")
    assert loaded.x.shape == (2, 16) and np.isfinite(loaded.x).all()


def test_the_same_shards_named_twice_are_refused(tmp_path):
    from m3bert_tf.data import shards

    d = tmp_path / "shards"
    d.mkdir()
    for i in range(2):
        (d / shards.SHARD_PATTERN.format(i)).write_bytes(b"")
    assert len(shards.list_shards(f"{d},{d}")) == 2  # one entry twice: one set
    for twice in (f"{d},./{os.path.relpath(d)}", f"{d}/,{d}/shard-00001.tfrecord"):
        with pytest.raises(shards.DataError, match="shard-0000.\\.tfrecord is named by"):
            shards.list_shards(twice)


def test_a_second_data_service_server_on_a_port_in_use_is_refused():
    from m3bert_tf.data import service

    first = service.start_dispatcher()
    port = service.server_port(first)
    with pytest.raises(OSError, match=f"port {port} is in use"):
        service.start_dispatcher(port)
    with pytest.raises(OSError, match=f"port {port} is in use"):
        service.start_worker(f"localhost:{port}", port)


@pytest.mark.parametrize("damage", ["saved_model.pb cut", "export.json cut"])
def test_a_damaged_export_is_one_line_naming_it(exported, tmp_path, damage):
    import shutil

    import m3bert_tf

    path = tmp_path / "export"
    shutil.copytree(exported["pretrained"][1], path)
    name = damage.split()[0]
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[: len(data) // 3])
    with pytest.raises(
        ValueError, match=f"{path}: the export cannot be loaded .*export the run again"
    ):
        m3bert_tf.load(str(path))


def test_a_truncated_manifest_is_named_with_what_to_run(corpus_shards, tmp_path):
    import shutil

    from m3bert_tf.data import shards

    data = tmp_path / "shards"
    shutil.copytree(corpus_shards, data)
    manifest = data / shards.MANIFEST_NAME
    manifest.write_text(manifest.read_text()[:200])
    with pytest.raises(
        shards.DataError, match="manifest.json is not readable JSON .*rewrites"
    ):
        shards.read_manifests(str(data))
