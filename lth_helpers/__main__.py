"""`python -m lth_helpers`: see cli.py."""

import signal
import sys

from .cli import main

status = main()
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command is over: a Ctrl-C while Python shuts down changes nothing
sys.exit(status)
