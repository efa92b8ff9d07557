"""Start-up guard (issue 28): ``import ddpmlab`` imports neither torch nor scipy, plotly or matplotlib, and
the full API (``dl.Trainer``, ``dl.sample``, ``dl.evaluate``) still no scipy, plotly or matplotlib: those
are imported where they are used. ``benchmarks/startup.py`` measures the time this saves."""
import json
import subprocess
import sys

import pytest

from ddpmlab.cli import COMMANDS

HEAVY = ("torch", "scipy", "plotly", "matplotlib")

# Runs STATEMENT in a fresh interpreter and prints, for every heavy package imported, the ddpmlab module
# (and line) that imported it: an import hook notes the innermost ddpmlab frame on the package's first
# import, then lets the normal import go on.
CHILD = r"""
import json, sys
HEAVY = set(sys.argv[1].split(","))
importers = {}

class Spy:
    @staticmethod
    def find_spec(name, path=None, target=None):
        top = name.partition(".")[0]
        if top in HEAVY and top not in importers:
            frame = sys._getframe(1)
            while frame is not None and not frame.f_globals.get("__name__", "").startswith("ddpmlab"):
                frame = frame.f_back
            importers[top] = (f"{frame.f_globals['__name__']} line {frame.f_lineno}" if frame is not None
                              else "outside ddpmlab")
        return None

sys.meta_path.insert(0, Spy)
exec(sys.argv[2])
print(json.dumps({top: importers.get(top, "?") for top in sorted(HEAVY) if top in sys.modules}))
"""


def heavy_imports(statement: str, packages) -> dict:
    """Heavy package -> the ddpmlab module that imported it, after ``statement`` in a fresh interpreter."""
    r = subprocess.run([sys.executable, "-c", CHILD, ",".join(packages), statement], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("statement, packages", [
    ("import ddpmlab", HEAVY),
    ("import ddpmlab as dl; dl.Trainer; dl.sample; dl.evaluate", HEAVY[1:]),
], ids=["package", "full-api"])
def test_no_heavy_imports(statement, packages):
    found = heavy_imports(statement, packages)
    assert not found, f"`{statement}` imports " + "; ".join(f"{p} (from {m})" for p, m in found.items())


def _help(command: str) -> str:
    argv = ["--help"] if not command else [command, "--help"]
    return ("from ddpmlab.cli import main\n"
            "try:\n"
            f"    main({argv!r})\n"
            "except SystemExit:\n"
            "    pass")


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_parses_before_torch(command):
    """``ddpmlab [CMD] --help`` imports none of torch, scipy, plotly, matplotlib: the CLI parses first, so
    --help and a mistyped flag answer at once (issue 28: at most 1.0 s)."""
    found = heavy_imports(_help(command), HEAVY)
    assert not found, f"`ddpmlab {command} --help` imports " + "; ".join(f"{p} (from {m})" for p, m in found.items())


def test_the_guard_names_the_importer():
    """The check itself: a package imported under ddpmlab is reported with the ddpmlab module that imported
    it, one imported by the statement itself as outside ddpmlab."""
    found = heavy_imports("import ddpmlab.core.schedule, colorsys", ("torch", "colorsys"))
    assert set(found) == {"torch", "colorsys"}
    assert found["torch"].startswith("ddpmlab.core.") and found["colorsys"] == "outside ddpmlab"
