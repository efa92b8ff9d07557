"""``python -m ddpmlab`` (and ``torchrun -m ddpmlab``) runs the command line."""
from ddpmlab.cli import main

raise SystemExit(main())
