"""One module per subcommand, each with ``add_arguments(parser)`` and ``run(args) -> int``."""


def add_trust_code(p) -> None:
    """``--trust-code``: the one option that lets a command import code a config or run names (a network
    class, a plugin module, an objective or sampler as package.module:name); and ``--import MODULE``, your
    module imported first (``ddpmlab.config.plugins``; the CLI's ``main`` imports it)."""
    p.add_argument("--trust-code", action="store_true", help="allow the config or run to import the code it "
                   "names (your network class package.module:Class, [plugins] modules, an objective or sampler "
                   "as package.module:name), which runs that code")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import your module first (repeatable; needs --trust-code), so that the objectives, "
                   "samplers, architectures and mean types it registers are known; train records it in "
                   "[plugins] modules")
