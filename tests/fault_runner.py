"""``python tests/fault_runner.py ARGS``: the ``ddpmlab`` command with the faults its environment names
(``faults.from_env``) passed to its trainer (``faults.injected``); also a torchrun script."""
import sys

import faults

from ddpmlab.cli import main

if __name__ == "__main__":
    with faults.injected(**faults.from_env()):
        code = main(sys.argv[1:])
    sys.exit(code)
