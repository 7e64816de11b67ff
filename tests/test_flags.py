"""The one flag edge: flags generated from the config dataclasses (a new
field is a flag, its help from the docstring, its values from the library's
table), library errors translated to flags, every binary's --help listing
its flags, and explicit seeds (no global seeding)."""

import dataclasses
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from absl import flags as absl_flags
from conftest import ROOT, user_env

from m3bert_tf.cli import flags
from m3bert_tf.evaluate.config import EvaluateConfig
from m3bert_tf.train.configs import FinetuneConfig, ModelConfig, PretrainConfig


@dataclasses.dataclass(frozen=True)
class _Inner:
    """Attributes:
    depth: how deep, in
      layers.
    """

    depth: int = 2


@dataclasses.dataclass(frozen=True)
class _Config:
    """A config as a library writes one.

    Attributes:
      path: where it goes.
      mode: one of the table's names.
      names: a list.
      ratio, scale: two numbers.
      inner: nested.
      hidden: not a flag.
    """

    path: str
    mode: str = dataclasses.field(default="b", metadata={"choices": ("a", "b")})
    names: tuple[str, ...] = ("x",)
    ratio: float = 0.5
    scale: float = 2.0
    inner: _Inner = _Inner()
    hidden: int = dataclasses.field(default=0, metadata={"flag": False})


@pytest.fixture
def fresh_flags(monkeypatch):
    """An empty absl FlagValues, and our registry emptied for one test."""
    monkeypatch.setattr(flags, "_DEFINED", set())
    return absl_flags.FlagValues()


def test_a_new_field_is_a_flag_with_its_docstring_help_and_table(fresh_flags):
    flags.define_config_flags(_Config, flag_values=fresh_flags)
    assert set(fresh_flags) == {"path", "mode", "names", "ratio", "scale", "depth"}
    assert fresh_flags["mode"].help == "<a|b>: one of the table's names."
    assert fresh_flags["depth"].help == "how deep, in layers."
    assert fresh_flags["scale"].help == "two numbers."
    assert fresh_flags["mode"].parser.enum_values == ["a", "b"]
    fresh_flags(["prog", "--path=p", "--mode=a", "--names=u,v", "--depth=5"])
    config = flags.config_from_flags(_Config, flag_values=fresh_flags)
    assert config == _Config("p", "a", ("u", "v"), 0.5, 2.0, _Inner(5), 0)
    with pytest.raises(absl_flags.IllegalFlagValueError):
        fresh_flags(["prog", "--path=p", "--mode=c"])


def test_a_required_field_is_a_required_flag(fresh_flags):
    flags.define_config_flags(_Config, flag_values=fresh_flags)
    with pytest.raises(absl_flags.IllegalFlagValueError, match="--path"):
        fresh_flags(["prog"])


def test_a_field_without_help_is_refused(fresh_flags):
    @dataclasses.dataclass
    class Undocumented:
        """Attributes:
        a: documented.
        """

        a: int = 0
        b: int = 0

    with pytest.raises(TypeError, match="Undocumented.b"):
        flags.define_config_flags(Undocumented, flag_values=fresh_flags)


@pytest.mark.parametrize(
    "cls", [PretrainConfig, ModelConfig, FinetuneConfig, EvaluateConfig]
)
def test_every_field_of_the_shipped_configs_has_help(cls):
    documented = flags.field_help(cls)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in documented
               and not dataclasses.is_dataclass(f.type)]  # fmt: skip
    assert not missing


def test_enum_values_come_from_the_library_tables():
    from m3bert_tf.data import masking
    from m3bert_tf.data.normalization import MODES

    fields = {f.name: f for f in dataclasses.fields(masking.MaskingConfig)}
    assert fields["policy"].metadata["choices"] == tuple(masking.POLICIES)
    fields = {f.name: f for f in dataclasses.fields(PretrainConfig)}
    assert fields["normalization"].metadata["choices"] == MODES


def test_library_errors_name_fields_and_binaries_write_flags(monkeypatch):
    monkeypatch.setattr(flags, "_DEFINED", {"shard_size", "input", "window_seconds",
                                            "hop_seconds"})  # fmt: skip
    assert (
        flags.translate("shard_size must be >= 1, got 0")
        == "--shard_size must be >= 1, got 0"
    )
    assert flags.translate("input=/a/input: no audio") == "--input=/a/input: no audio"
    assert (flags.translate("window_seconds and hop_seconds must be >= 0")
            == "--window_seconds and --hop_seconds must be >= 0")  # fmt: skip
    # prose, paths and flags already written stay as they are
    assert flags.translate("the input is gone") == "the input is gone"
    assert flags.translate("--shard_size must") == "--shard_size must"


@pytest.mark.parametrize("tool, expected", [
    ("export", {"--model_dir", "--export_dir", "--version", "--input_sample_rate"}),
    ("correlate", {"--model", "--input", "--output_dir", "--top", "--seed"}),
])  # fmt: skip
def test_help_lists_the_binarys_flags(tool, expected):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bin", tool), "--help"],
        capture_output=True, text=True, env=user_env(), timeout=120,
    )  # fmt: skip
    listed = {line.split(":")[0].strip() for line in out.stdout.splitlines()
              if line.startswith("  --")}  # fmt: skip
    assert expected <= listed, out.stdout


def test_a_nested_config_keeps_its_flag_names(fresh_flags):
    """PretrainConfig nests MaskingConfig as it nests ModelConfig; its policy
    is still --masking and its per-clip choice --per_clip_mask_choice."""
    flags.define_config_flags(PretrainConfig, flag_values=fresh_flags)
    assert "policy" not in fresh_flags and "per_clip_choice" not in fresh_flags
    fresh_flags(["prog", "--data=d", "--model_dir=m", "--masking=pm",
                 "--per_clip_mask_choice", "--patch_size=5"])  # fmt: skip
    config = flags.config_from_flags(PretrainConfig, flag_values=fresh_flags)
    assert (config.masking.policy, config.masking.per_clip_choice) == ("pm", True)
    assert config.masking.patch_size == 5
    from m3bert_tf.data.masking import POLICIES

    assert fresh_flags["masking"].parser.enum_values == list(POLICIES)


def test_flags_py_defines_no_flag_by_hand():
    """Every DEFINE_* call of cli/flags.py is inside the generator."""
    import ast

    tree = ast.parse(open(flags.__file__).read())
    by_hand = []
    for function in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(function):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr.startswith("DEFINE")
                    and function.name != "define_config_flags"):  # fmt: skip
                by_hand.append(f"{function.name}: {node.func.attr}")
    assert not by_hand


def test_a_loader_option_is_a_flag_with_its_help(fresh_flags, monkeypatch):
    from m3bert_tf.datasets import base, loaders

    option = base.Option("clip_list", "clip_list", "", "file of the clips to keep")
    row = loaders.LOADERS["deam"]
    monkeypatch.setitem(
        loaders.LOADERS, "deam", loaders.Loader(row.load, row.options + (option,))
    )
    options = loaders.options_class()
    flags.define_config_flags(options, flag_values=fresh_flags)
    assert fresh_flags["clip_list"].help == "file of the clips to keep (deam)."
    assert fresh_flags["split_seed"].help.startswith("seed of the 60/20/20 split by track")
    fresh_flags(["prog", "--clip_list=keep.txt", "--split_seed=3"])
    config = flags.config_from_flags(options, flag_values=fresh_flags)
    assert config.for_loader("deam") == {"seed": 3, "clip_list": "keep.txt"}
    assert config.for_loader("mtg_jamendo_moodtheme") == {"split_dir": ""}  # its own only


def test_extract_flags_are_config_fields(fresh_flags):
    """Runner, Beam options and each loader's options reach ExtractConfig
    through the generator; the config refuses what does not go together."""
    from m3bert_tf.datasets.rwc import DEFAULT_PATTERN
    from m3bert_tf.extract import ExtractConfig

    flags.define_config_flags(ExtractConfig, flag_values=fresh_flags)
    fresh_flags(["prog", "--dataset=rwc_instrument", "--dataset_root=/d", "--output_dir=o",
                 "--runner=beam", "--beam_options=--runner=DirectRunner"])  # fmt: skip
    config = flags.config_from_flags(ExtractConfig, flag_values=fresh_flags)
    assert (config.runner, config.beam_options, config.source) == (
        "beam", "--runner=DirectRunner", "/d")  # fmt: skip
    assert config.dataset_options.for_loader("rwc_instrument") == {
        "pattern": DEFAULT_PATTERN, "seed": 0}  # fmt: skip
    for wrong, match in [
        (dict(input="a", dataset="gtzan", dataset_root="/d"), "either input"),
        (dict(input="a", dataset_root="/d"), "dataset_root"),
        (dict(input="a", strict=True, runner="beam"), "strict"),
        (dict(input="a", beam_options="--x"), "beam_options needs runner=beam"),
    ]:
        with pytest.raises(ValueError, match=match):
            ExtractConfig(output_dir="o", **wrong)


def test_the_finetune_flagfile_is_read_by_absl(tmp_path):
    path = tmp_path / "f.flags"
    path.write_text("# a comment\n--train_steps=7\n--learning_rate=0.5\n")
    config = flags.finetune_config_from_flagfile(
        str(path), pretrained="p", data="d", model_dir="m"
    )
    assert (config.train_steps, config.learning_rate, config.data) == (7, 0.5, "d")
    path.write_text("--train_steps=7\n--not_a_flag=1\n")
    with pytest.raises(ValueError, match="not_a_flag"):
        flags.finetune_config_from_flagfile(
            str(path), pretrained="p", data="d", model_dir="m"
        )


def test_a_binary_error_names_the_flag():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bin", "correlate"), "--model=m", "--input=i",
         "--output_dir=o", "--top=0"],
        capture_output=True, text=True, env=user_env(), timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert "correlate: --top must be >= 1, got 0" in out.stderr


def test_seeded_weights_are_explicit_and_leave_no_global_state():
    import keras

    from m3bert_tf.models.encoder import M3BertEncoder, encoder_inputs
    from m3bert_tf.models.seeding import seed_weights

    states = []

    def build(seed):
        model = M3BertEncoder(num_layers=1, hidden_dim=16, num_heads=2, ffn_dim=32)
        model(encoder_inputs(model))
        before = random.getstate(), np.random.get_state()[1].copy()
        seed_weights(model, seed)
        states.append((before, (random.getstate(), np.random.get_state()[1].copy())))
        return [v.numpy() for v in model.variables]

    a, b = build(7), build(7)
    keras.random.uniform((3,))  # whatever ran in between
    c = build(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert sum(not np.array_equal(x, z) for x, z in zip(a, c, strict=True)) >= 5
    for before, after in states:  # no global generator drawn from or seeded
        assert before[0] == after[0] and np.array_equal(before[1], after[1])


def test_a_flag_file_line_absl_would_skip_is_refused(tmp_path):
    """absl reads only lines starting with "-": `train_steps=10` left a run on
    its default (it was killed for memory). Ours name the file and line,
    nested flag files too; comments and blank lines pass."""
    inner = tmp_path / "inner.flags"
    inner.write_text("# sizes\n--num_layers=2\n\nnum_heads=2\n")
    outer = tmp_path / "outer.flags"
    outer.write_text(f"// run\n--flagfile={inner}\n--train_steps=3\n")
    with pytest.raises(ValueError, match=rf"{inner}:4: 'num_heads=2' is not a flag"):
        flags.check_flagfiles(["prog", f"--flagfile={outer}"])
    inner.write_text("# sizes\n--num_layers=2\n")
    flags.check_flagfiles(["prog", "--flagfile", str(outer)])  # passes
    res = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bin", "correlate"), f"--flagfile={outer}"],
        capture_output=True, text=True, env=user_env(), timeout=120,
    )  # fmt: skip
    assert (
        res.returncode == 2 and "--help lists" in res.stderr
    )  # absl's own error: not ours
    bad = tmp_path / "bad.flags"
    bad.write_text("top=3\n")
    res = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bin", "correlate"), f"--flagfile={bad}"],
        capture_output=True, text=True, env=user_env(), timeout=120,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"correlate: {bad}:1: 'top=3' is not a flag (a flag file holds --name=value lines; "
        "absl would skip this one without a word)"
    )
