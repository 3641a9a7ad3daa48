"""`python -m lth_helpers`: see cli.py."""

import signal
import sys

from ._startup import allow_interrupts
from .cli import main

allow_interrupts()  # every module is imported: a Ctrl-C from here on is caught by the command, which says what it kept
status = main()
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command is over: a Ctrl-C while Python shuts down changes nothing
sys.exit(status)
