"""What every binary does around its one library call: quiet framework logs,
flags parsed by absl, usage errors as one line with exit status 2, and
Ctrl-C as one line with status 130 (its workers ignore it and are stopped).

    cli.run(flags.define_pretrain_flags, main)   # flags: `cli/flags.py`

TensorFlow's C++ start-up lines and absl's INFO lines are hidden
(`io.logs`); set TF_CPP_MIN_LOG_LEVEL=0 to see them again.
"""

import os
import sys

from m3bert_tf.io import logs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class UsageError(ValueError):
    """A flag value the job cannot use; its message names the config field,
    printed as the flag (`flags.translate`)."""


def run(define_flags, main) -> None:
    """Defines the flags, parses them and runs `main(argv)`.

    A ValueError raised while the job's config is built (raised as or
    wrapped in `UsageError` by the binary), or an unknown/invalid flag, ends
    the process with one line on stderr and status 2, creating nothing; an
    OSError (a full disk, a read-only or missing directory) with one line
    naming the path and status 1.
    """
    from absl import app, flags
    from absl import logging as absl_logging

    logs.quiet_tensorflow_import()
    define_flags()
    from m3bert_tf.cli.flags import show_in_help

    show_in_help()
    prog = os.path.basename(sys.argv[0])

    def parse(argv):
        from m3bert_tf.cli.flags import check_flagfiles

        try:
            check_flagfiles(argv)
            return flags.FLAGS(argv)
        except ValueError as e:
            print(f"{prog}: {e}", file=sys.stderr)
            sys.exit(2)
        except flags.Error as e:
            print(f"{prog}: {e} (--help lists the flags)", file=sys.stderr)
            sys.exit(2)

    def wrapped(argv):
        absl_logging.set_verbosity(absl_logging.WARNING)
        try:
            main(argv)
        except UsageError as e:
            from m3bert_tf.cli.flags import translate

            print(f"{prog}: {translate(str(e))}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:  # a file system's refusal (full, read-only, missing): one line
            print(f"{prog}: {_os_error_line(e)}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:  # Ctrl-C: the job's clean-up has run
            print(f"{prog}: interrupted", file=sys.stderr)
            sys.exit(130)

    try:
        app.run(wrapped, flags_parser=parse)
    except SystemExit as e:
        _exit_past_tfio(e)
        raise


def _os_error_line(e: OSError) -> str:
    """An OSError in one line, the path first: "out/x: Permission denied"."""
    from m3bert_tf.io import storage

    if isinstance(e, storage.OutputError) or not e.strerror:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"{e.filename}: {e.strerror}" if e.filename else e.strerror


def _exit_past_tfio(e: SystemExit) -> None:
    """Ends the process without C++ static destructors once tensorflow-io's
    file systems were loaded: tensorflow-io 0.37.1's S3 client aborts in them
    ("pure virtual method called", exit 134) after a job that succeeded
    (tensorflow/io#2039; the fix is unreleased). Python's own exit handlers
    run first; the status is the job's."""
    from m3bert_tf.io import storage

    if not storage.tfio_loaded():
        return
    import atexit

    code = e.code  # as Python treats it: None is success, a message is printed, status 1
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def config_or_usage_error(build):
    """`build()`, with its ValueError turned into a UsageError."""
    try:
        return build()
    except ValueError as e:
        raise UsageError(str(e)) from None
