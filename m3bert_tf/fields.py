"""What the config dataclasses of every room share (a leaf, like `schema`):
a field whose values are the names of a library table (`choice`), and the
checks every config runs (`check_choices`, `at_least`). `cli/flags.py` reads
the same metadata to make each field's flag an enum of that table.

    masking: str = choice("cfm+ccm", masking.POLICIES)
    def __post_init__(self):
        check_choices(self)
        at_least(self, 1, "train_steps", "batch_size")
"""

import dataclasses


def choice(default: str, table):
    """A field whose values are the names in `table` (a tuple or a dict)."""
    return dataclasses.field(default=default, metadata={"choices": tuple(table)})


def check_choices(config) -> None:
    """Every `choice` field of `config` holds one of its table's names.

    Raises:
      ValueError: naming the field, its values and what it got.
    """
    for field in dataclasses.fields(config):
        choices = field.metadata.get("choices")
        value = getattr(config, field.name)
        if choices is not None and value not in choices:
            raise ValueError(f"{field.name} must be one of {choices}, got {value!r}")


def at_least(config, minimum, *names: str) -> None:
    """Each named field of `config` is >= `minimum`.

    Raises:
      ValueError: naming the first field that is not.
    """
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
