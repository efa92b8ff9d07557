"""One module per subcommand, each with ``add_arguments(parser)`` and ``run(args) -> int``."""


def add_trust_code(p) -> None:
    """``--trust-code``: the one option that lets a command import a run's own network class."""
    p.add_argument("--trust-code", action="store_true", help="allow a run whose network is your own class "
                   "(package.module:Class) to import that module, which runs its code")
