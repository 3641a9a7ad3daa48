"""Ctrl-C while `python -m lth_helpers` starts (importing torch takes seconds): one line and exit 130, no traceback.

Imported first by the package, before torch, and only when the package is being run with `-m`; importing
lth_helpers from Python changes nothing. Two phases, because of where a Ctrl-C can land:
- while the imports run, the process ends at once from the signal handler: torch's C++ code calls back into Python
  as it loads, and a KeyboardInterrupt raised inside such a callback cannot unwind through C++ (the process aborts
  with "terminate called after throwing an instance of 'pybind11::error_already_set'");
- once __main__ has imported the command line, Ctrl-C is a KeyboardInterrupt again (`allow_interrupts`), which each
  command catches to say what it kept; one that escapes before a command catches it still prints one line.
"""

import os
import signal
import sys

INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C (128 + SIGINT)


def quiet_interrupts() -> None:
    """Make an uncaught KeyboardInterrupt print one line and end the process with exit status 130."""
    previous = sys.excepthook

    def hook(kind, error, traceback) -> None:
        if not issubclass(kind, KeyboardInterrupt):
            previous(kind, error, traceback)
            return
        sys.stdout.flush()
        _exit_at_once()

    sys.excepthook = hook


def _exit_at_once(*signal_handler_args: object) -> None:
    """Say so in one line and end the process with 130, from a signal handler or the excepthook alike (sys.exit could
    end neither: it raises, and from the signal handler that is the exception that cannot unwind through C++)."""
    sys.stderr.write("\ninterrupted while starting; nothing was written\n")
    sys.stderr.flush()
    os._exit(INTERRUPTED)


def allow_interrupts() -> None:
    """The imports are done: Ctrl-C raises KeyboardInterrupt again."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


if sys.argv[:1] == ["-m"]:  # `python -m lth_helpers`: sys.argv[0] is "-m" while the package is imported
    quiet_interrupts()
    signal.signal(signal.SIGINT, _exit_at_once)
