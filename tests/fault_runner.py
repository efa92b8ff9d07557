"""``python tests/fault_runner.py ARGS``: the ``ddpmlab`` command with the tests' fault injection installed
(``faults.EnvFaults``); also a torchrun script."""
import sys

import faults

from ddpmlab.cli import main

if __name__ == "__main__":
    faults.install()
    sys.exit(main(sys.argv[1:]))
