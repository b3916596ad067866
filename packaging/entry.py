"""The one-file executable's entry point (PyInstaller): the same `main` as the installed command.

`freeze_support` makes a frozen child started by multiprocessing's spawn or forkserver run the
child's code instead of the CLI again (granian's worker is forked by default; this keeps any
other start method working too).
"""

import multiprocessing
import sys

from nvcf_lite.__main__ import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
