"""Ctrl-C while `python -m lth_helpers` starts (importing torch takes seconds): one line and exit 130, no traceback.

Imported first by the package, before torch, and only when the package is being run with `-m`; importing
lth_helpers from Python changes nothing.
"""

import os
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
        sys.stderr.write("\ninterrupted while starting; nothing was written\n")
        sys.stderr.flush()
        os._exit(INTERRUPTED)  # sys.exit cannot end the process from inside the hook

    sys.excepthook = hook


if sys.argv[:1] == ["-m"]:  # `python -m lth_helpers`: sys.argv[0] is "-m" while the package is imported
    quiet_interrupts()
