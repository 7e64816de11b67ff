"""What every binary does around its one library call: quiet framework logs,
flags parsed by absl, and usage errors as one line with exit status 2.

    cli.run(flags.define_pretrain_flags, main)

TensorFlow's C++ start-up lines (CUDA factory registration, oneDNN notices)
and absl's INFO lines tell a user nothing they can act on; set
TF_CPP_MIN_LOG_LEVEL=0 to see them again.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class UsageError(ValueError):
    """A flag value the job cannot use; its message names the flag."""


def run(define_flags, main) -> None:
    """Defines the flags, parses them and runs `main(argv)`.

    A ValueError raised while the job's config is built (raised as or
    wrapped in `UsageError` by the binary), or an unknown/invalid flag, ends
    the process with one line on stderr and status 2, creating nothing.
    """
    from absl import app, flags
    from absl import logging as absl_logging

    define_flags()
    prog = os.path.basename(sys.argv[0])

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            print(f"{prog}: {e} (--help lists the flags)", file=sys.stderr)
            sys.exit(2)

    def wrapped(argv):
        absl_logging.set_verbosity(absl_logging.WARNING)
        try:
            main(argv)
        except UsageError as e:
            print(f"{prog}: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(wrapped, flags_parser=parse)


def config_or_usage_error(build):
    """`build()`, with its ValueError turned into a UsageError."""
    try:
        return build()
    except ValueError as e:
        raise UsageError(str(e)) from None
