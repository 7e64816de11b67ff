"""Every command-line flag, generated from the config dataclasses.

A config field is a flag of the same name: its default is the field's, its
help the field's entry in the class docstring's `Attributes:` section, its
values (an enum) the library table in the field's `metadata["choices"]`. A
nested config (`PretrainConfig.model`, `.masking`, `ExtractConfig.features`)
adds its fields under their own names, or the name in `metadata["flag"]`.
So a new config field is a new flag with no second edit; a field with
`metadata={"flag": False}` or of a type with no flag form (a dict) is not one.

    define_config_flags(EvaluateConfig)       # in define_<tool>_flags()
    config = config_from_flags(EvaluateConfig)  # in <tool>_config_from_flags()

Library errors name the fields; `translate` writes them as flags
(`shard_size must be >= 1` -> `--shard_size must be >= 1`).
"""

import dataclasses
import functools
import os
import re
import types
import typing

from absl import flags

FLAGS = flags.FLAGS
_DEFINED: set[str] = set()  # the flags defined here, for `translate`


# --- the generator ---------------------------------------------------------


@functools.cache  # once per class, not once per field
def field_help(cls) -> dict[str, str]:
    """{field: its text} from `cls`'s Google-style `Attributes:` section; an
    entry `a, b: text` documents both fields."""
    lines = (cls.__doc__ or "").split("\n")
    out, names, started, indent = {}, [], False, None
    for line in lines:
        if line.strip() == "Attributes:":
            started = True
            continue
        if not started:
            continue
        if not line.strip():
            if out:
                break
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:
            break
        head, sep, text = line.strip().partition(": ")
        if depth == indent and sep and re.fullmatch(r"\w+(, \w+)*", head):
            names = head.split(", ")
            for name in names:
                out[name] = text.strip()
        else:
            for name in names:
                out[name] += " " + line.strip()
    return out


def _base_type(kind):
    """The type a flag parses for a field's type (`int | None` -> int)."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return next(a for a in typing.get_args(kind) if a is not type(None))
    return kind


def _flag_fields(cls, exclude=()):
    """(field, the config class declaring it) of the fields of `cls` that are
    flags, nested configs expanded, in order."""
    for field in dataclasses.fields(cls):
        if field.name in exclude or not field.metadata.get("flag", True):
            continue
        kind = _base_type(field.type)
        if dataclasses.is_dataclass(kind):
            yield from _flag_fields(kind, exclude)
        elif kind is dict:
            continue
        else:
            yield field, cls


def flag_name(field) -> str:
    """A field's flag: its name, or `metadata["flag"]` when that is a string
    (a nested config's field keeping the flag name it had before it nested)."""
    name = field.metadata.get("flag", True)
    return name if isinstance(name, str) else field.name


def _default(field):
    """The field's default, or MISSING when it has none (a required flag)."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def define_config_flags(cls, exclude=(), optional=(), flag_values=None) -> None:
    """A flag for every field of `cls` (nested configs expanded) but `exclude`.

    A field with no default is a required flag unless named in `optional`
    (then its default is ""); `flag_values`: absl's FlagValues to define them
    in (default: FLAGS).

    Raises:
      TypeError: a field without help in its class docstring, or of a type
        that has no flag form.
    """
    where = {"flag_values": flag_values if flag_values is not None else FLAGS}
    for field, owner in _flag_fields(cls, exclude):
        help_text = field_help(owner).get(field.name)
        if not help_text:
            raise TypeError(
                f"{owner.__name__}.{field.name}: no entry in its docstring's Attributes"
            )
        kind = _base_type(field.type)
        default = _default(field)
        required = default is dataclasses.MISSING
        if field.name in optional:
            default, required = "", False
        elif required:
            default = None  # absl's "not given"
        choices = field.metadata.get("choices")
        name = flag_name(field)
        if kind is bool:
            flags.DEFINE_bool(name, default, help_text, **where)
        elif kind is int:
            flags.DEFINE_integer(name, default, help_text, **where)
        elif kind is float:
            flags.DEFINE_float(name, default, help_text, **where)
        elif kind is str and choices is not None:
            flags.DEFINE_enum(name, default, list(choices), help_text, **where)
        elif kind is str:
            flags.DEFINE_string(name, default, help_text, **where)
        elif typing.get_origin(kind) is tuple:
            listed = list(default) if default is not None else None
            flags.DEFINE_list(name, listed, help_text, **where)
        else:
            raise TypeError(f"{owner.__name__}.{name}: no flag form for {kind}")
        if required:
            flags.mark_flag_as_required(name, **where)
        _DEFINED.add(name)


def config_from_flags(cls, exclude=(), flag_values=None, **fields):
    """A `cls` from the parsed flags (nested configs too), `fields` overriding."""
    parsed = flag_values if flag_values is not None else FLAGS
    values = {}
    for field in dataclasses.fields(cls):
        kind = _base_type(field.type)
        if field.name in fields:
            values[field.name] = fields[field.name]
        elif field.name in exclude or not field.metadata.get("flag", True):
            continue
        elif dataclasses.is_dataclass(kind):
            values[field.name] = config_from_flags(kind, exclude, flag_values, **fields)
        elif flag_name(field) in parsed and flag_name(field) in _DEFINED:
            value = parsed[flag_name(field)].value
            values[field.name] = tuple(value) if typing.get_origin(kind) is tuple else value
    return cls(**values)


def check_flagfiles(argv: list[str]) -> None:
    """Refuses a flag file line that absl would skip without a word: absl
    reads only lines starting with "-" (and "#" or "//" comments), so a line
    such as `train_steps=10` (the dashes forgotten) left a run on its
    default. Nested --flagfile lines are checked too.

    Raises:
      ValueError: naming the file, the line number and the line.
    """
    from m3bert_tf.io import storage

    pending = [a.split("=", 1)[1] for a in argv if a.startswith("--flagfile=")]
    pending += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--flagfile"]
    seen = set()
    while pending:
        path = pending.pop()
        if path in seen or not storage.isfile(path):
            continue  # absl names a missing file itself
        seen.add(path)
        with storage.open(path) as f:
            for number, line in enumerate(f, 1):
                text = line.strip()
                if not text or text.startswith(("#", "//")):
                    continue
                if not text.startswith("-"):
                    raise ValueError(
                        f"{path}:{number}: {text!r} is not a flag (a flag file holds "
                        "--name=value lines; absl would skip this one without a word)"
                    )
                if text.startswith("--flagfile="):
                    pending.append(text.split("=", 1)[1])


def show_in_help() -> None:
    """The flags defined here, as the binary's own: `--help` lists them."""
    import sys

    for name in sorted(_DEFINED):
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def translate(message: str) -> str:
    """A library message with the config fields it names written as flags:
    a defined flag's name followed by `=`, `:`, ` must`, ` needs` or ` is required`."""
    if not _DEFINED:
        return message
    names = "|".join(sorted(_DEFINED, key=len, reverse=True))
    pattern = (
        rf"(?<![\w\-/.`])({names})(?=[=:]| must\b| needs\b| is required\b| and \w+ must\b)"
    )
    return re.sub(pattern, r"--\1", message)


# --- the binaries ----------------------------------------------------------
# Each binary calls its define_<tool>_flags(), then <tool>_config_from_flags().


def define_extract_flags() -> None:
    from m3bert_tf.extract import ExtractConfig

    define_config_flags(ExtractConfig)


def extract_config_from_flags():
    from m3bert_tf.extract import ExtractConfig

    return config_from_flags(ExtractConfig)


def define_pretrain_flags(with_paths: bool = True) -> None:
    """Pretraining flags; `with_paths=False` when a caller sets data/model_dir itself."""
    from m3bert_tf.train.configs import PretrainConfig

    define_config_flags(PretrainConfig, exclude=() if with_paths else ("data", "model_dir"))


def pretrain_config_from_flags(**paths):
    """The PretrainConfig of the flags; `paths` gives data/model_dir when they are not flags."""
    from m3bert_tf.train.configs import PretrainConfig

    return config_from_flags(PretrainConfig, **paths)


def define_finetune_flags() -> None:
    from m3bert_tf.train.configs import FinetuneConfig

    define_config_flags(FinetuneConfig)


def finetune_config_from_flags():
    from m3bert_tf.train.configs import FinetuneConfig

    return config_from_flags(FinetuneConfig)


def finetune_config_from_flagfile(path: str, **fields):
    """A FinetuneConfig from a flag file plus `fields` (which the file may
    not set), read by absl's own flag-file parser into flags of their own
    (a relative path not found here is looked up in the repository).

    Raises:
      ValueError: no such file, or a line absl would skip or refuse (a flag
        that is not bin/finetune's, a bad value), naming the file.
    """
    from m3bert_tf.io import storage
    from m3bert_tf.train.configs import FinetuneConfig

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not storage.exists(path) and os.path.exists(os.path.join(repo, path)):
        path = os.path.join(repo, path)
    if not storage.exists(path):
        raise ValueError(f"--finetune_flagfile={path}: no such file")
    values = flags.FlagValues()
    define_config_flags(FinetuneConfig, exclude=tuple(fields), flag_values=values)
    check_flagfiles([f"--flagfile={path}"])
    try:
        values(["finetune", f"--flagfile={path}"])
    except flags.Error as e:
        raise ValueError(f"--finetune_flagfile={path}: {e}") from None
    return config_from_flags(FinetuneConfig, flag_values=values, **fields)


def define_demo_flags() -> None:
    """The demo's own flags, and the pretrain flags but data and model_dir
    (configs/tiny.flags sets them; they live under --workdir)."""
    from m3bert_tf.demo.job import DemoConfig

    define_pretrain_flags(with_paths=False)
    define_config_flags(DemoConfig)


def demo_config_from_flags() -> dict:
    """run_demo's arguments."""
    from m3bert_tf.demo.job import DemoConfig

    demo = config_from_flags(DemoConfig)
    shards, pretrained = (os.path.join(demo.workdir, d) for d in ("shards", "pretrain"))
    return {
        "workdir": demo.workdir,
        "pretrain_config": pretrain_config_from_flags(data=shards, model_dir=pretrained),
        "finetune_config": finetune_config_from_flagfile(
            demo.finetune_flagfile,
            pretrained=pretrained,
            data=shards,
            model_dir=os.path.join(demo.workdir, "finetune"),
        ),  # fmt: skip
        "num_tracks": demo.num_tracks,
        "num_workers": demo.num_workers,
    }


def _job_flags(config_class):
    """define_<tool>_flags and <tool>_config_from_flags of a job whose flags
    are exactly its config's fields; `config_class()` imports the class (the
    job's module is imported when its binary runs, not when flags are read)."""

    def define() -> None:
        define_config_flags(config_class())

    def build():
        return config_from_flags(config_class())

    return define, build


def _export():
    from m3bert_tf.serving.export import ExportConfig

    return ExportConfig


def _embed():
    from m3bert_tf.serving.embed_job import EmbedConfig

    return EmbedConfig


def _evaluate():
    from m3bert_tf.evaluate.config import EvaluateConfig

    return EvaluateConfig


def _correlate():
    from m3bert_tf.evaluate.correlate import CorrelateConfig

    return CorrelateConfig


def _data_service():
    from m3bert_tf.data.service import ServiceConfig

    return ServiceConfig


define_export_flags, export_config_from_flags = _job_flags(_export)
define_embed_flags, embed_config_from_flags = _job_flags(_embed)
define_evaluate_flags, evaluate_config_from_flags = _job_flags(_evaluate)
define_correlate_flags, correlate_config_from_flags = _job_flags(_correlate)
define_data_service_flags, data_service_config_from_flags = _job_flags(_data_service)
