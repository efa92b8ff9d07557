"""The recommended recipe in a second process, beside the seed's recipe.

Both recipes train single-threaded (``ddpmlab.core.threads``: their networks are small), so where a core
is free (the usable cores less the 1-minute load average, this process included, leave at least one) the
tutorial runs them at once: a ``spawn``-ed child process trains, samples and writes the recommended
recipe while this process does the seed's. On a busy machine a second process only adds its start-up and
contention (measured: the whole tutorial 15 - 30% slower at a load of 7 on 2 cores), so there it does not
start. The child's results come back through a pipe, pickled by value (not as shared-memory tensors); an
error in the child is raised here as the same one-line error. Where no core is free or no second process
can be started, the recipe runs in this process after the seed's, with the same result: every random
draw comes from its own seeded generator.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
from pathlib import Path

from ddpmlab.core.threads import usable_cores
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.workflows.tutorial_recipes import recommended_recipe


def _send(conn, message) -> None:
    conn.send_bytes(pickle.dumps(message))  # plain pickle: tensors by value


def _child(conn, out: str, overrides: list) -> None:
    try:
        _send(conn, ("ok", recommended_recipe(Path(out), overrides, progress=False)))
    except DDPMLabError as exc:
        _send(conn, ("error", str(exc)))
    except BaseException as exc:  # noqa: BLE001 - reported in the parent as one line
        _send(conn, ("error", f"the recommended recipe failed: {type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def free_cores() -> float:
    """Usable cores (``ddpmlab.core.threads.usable_cores``) less the 1-minute load average."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform: assume an idle machine
        load = 0.0
    return usable_cores() - load


@contextlib.contextmanager
def recommended_beside(out: Path, overrides=(), progress: bool = False):
    """Start ``recommended_recipe(out, overrides)`` in a child process; yields a function that waits for
    its result (the same dict). The child is stopped if the block fails. In this process (with a progress
    bar if ``progress``), when the result is asked for, where no core is free or no child can be started."""
    proc = conn = None
    if free_cores() >= 1.0:
        try:
            ctx = multiprocessing.get_context("spawn")
            conn, child_conn = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(child_conn, str(out), list(overrides)), daemon=True)
            proc.start()
            child_conn.close()
        except (OSError, ImportError, NotImplementedError, RuntimeError):
            proc = None

    def result() -> dict:
        if proc is None:
            return recommended_recipe(out, overrides, progress=progress)
        try:
            status, payload = pickle.loads(conn.recv_bytes())
        except EOFError:
            proc.join()
            raise DDPMLabError(f"the recommended recipe's process ended without a result (exit code "
                               f"{proc.exitcode}); run ddpmlab tutorial --recipe recommended to see why") from None
        if status == "error":
            raise DDPMLabError(payload)
        return payload

    try:
        yield result
    except BaseException:
        if proc is not None and proc.is_alive():  # the block failed before the child finished
            proc.terminate()
        raise
    finally:
        if proc is not None:
            proc.join()
            conn.close()
