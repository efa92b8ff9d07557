"""docs/api.md, executed: its Python blocks in order in one namespace, ``file=NAME`` blocks written to
disk first, bash blocks run in the same directory. The docs cannot rot."""
import csv
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ddpmlab.runs.checkpoint import METRICS_FILE, checkpoint_dirs

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks(text: str):
    for m in FENCE.finditer(text):
        lang, info, body = m.group(1), m.group(2).strip(), m.group(3)
        yield lang, dict(kv.split("=", 1) for kv in info.split() if "=" in kv), body


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every block of the doc run once, in order, in an empty directory: the blocks run, the namespace, the
    directory, and what the first plain Python block (the 15-line workflow) left behind."""
    tmp_path = tmp_path_factory.mktemp("api_doc")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1"}
    namespace: dict = {}
    ran, workflow = [], None
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        mp.syspath_prepend(str(tmp_path))
        for lang, info, body in blocks(DOC.read_text()):
            if lang == "python" and "file" in info:
                (tmp_path / info["file"]).write_text(body)
            elif lang == "python":
                exec(compile(body, f"{DOC.name}:block{len(ran)}", "exec"), namespace)
                if workflow is None:
                    workflow = workflow_state(namespace, tmp_path / "runs" / "mine")
            elif lang == "bash":
                r = subprocess.run(["bash", "-ec", body], capture_output=True, text=True, env=env, timeout=300)
                assert r.returncode == 0, r.stderr
            ran.append(lang)
    return SimpleNamespace(ran=ran, namespace=namespace, root=tmp_path, workflow=workflow)


def workflow_state(namespace: dict, run_dir: Path) -> dict:
    """What the workflow block claims to leave: the trainer's step, checkpoints, saved files, the logged
    steps, whether the sampling model is an EMA copy, and the three samplers' outputs."""
    trainer = namespace["trainer"]
    with open(run_dir / METRICS_FILE) as fh:
        logged = [int(row["step"]) for row in csv.DictReader(fh)]
    return {"step": trainer.step, "checkpoints": [step for step, _ in checkpoint_dirs(run_dir)],
            "files": sorted(f.name for f in run_dir.iterdir()), "logged": logged,
            "ema_differs": any(not torch.equal(p, q) for p, q in zip(trainer.model.parameters(),
                                                                      trainer.sampling_model.parameters())),
            "samples": [(tuple(v.shape), bool(torch.isfinite(v).all())) for v in (namespace[k] for k in "abc")]}


def test_api_doc_runs(executed):
    assert executed.ran.count("python") == len(re.findall(r"^```python", DOC.read_text(), re.M))  # none skipped
    assert "bash" in executed.ran
    assert (executed.root / "samples.npy").is_file()  # the CLI sampled the notebook-trained run


def test_the_workflow_fits_in_15_lines_and_does_what_it_says(executed):
    """The researcher's workflow (own module, own tensor: train with EMA and checkpoints, stop, resume,
    save, three samplers) is the doc's first plain Python block; it stays within 15 lines of code, and
    run, it did each of those things."""
    first = next(body for lang, info, body in blocks(DOC.read_text()) if lang == "python" and "file" not in info)
    code = [ln for ln in first.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(code) <= 15, len(code)
    w = executed.workflow
    assert w["step"] == 500 and w["checkpoints"][-1] == 500, w  # (the next block: bit for bit the straight run)
    assert w["logged"] == list(range(1, 501))  # the resumed run continued the stopped one's log: no step twice
    assert {"run.json", "model.safetensors", "config.toml", "metrics.json"} <= set(w["files"])
    assert w["ema_differs"]  # trainer.sampling_model is the EMA copy, not the trained weights
    assert w["samples"] == [((1000, 2), True)] * 3  # ancestral, DDIM and the ODE
