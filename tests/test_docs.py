"""docs/api.md, executed: its Python blocks in order in one namespace, ``file=NAME`` blocks written to
disk first, bash blocks run in the same directory. The docs cannot rot."""
import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks(text: str):
    for m in FENCE.finditer(text):
        lang, info, body = m.group(1), m.group(2).strip(), m.group(3)
        yield lang, dict(kv.split("=", 1) for kv in info.split() if "=" in kv), body


def test_api_doc_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1"}
    namespace: dict = {}
    ran = []
    for lang, info, body in blocks(DOC.read_text()):
        if lang == "python" and "file" in info:
            (tmp_path / info["file"]).write_text(body)
        elif lang == "python":
            exec(compile(body, f"{DOC.name}:block{len(ran)}", "exec"), namespace)
        elif lang == "bash":
            r = subprocess.run(["bash", "-ec", body], capture_output=True, text=True, env=env, timeout=300)
            assert r.returncode == 0, r.stderr
        ran.append(lang)
    assert ran.count("python") >= 6 and "bash" in ran
    assert (tmp_path / "samples.npy").is_file()  # the CLI sampled the notebook-trained run


def test_the_workflow_fits_in_15_lines():
    """The researcher's workflow (own module, own tensor: train with EMA and checkpoints, stop, resume,
    save, three samplers) is the doc's first plain Python block; it stays within 15 lines of code."""
    first = next(body for lang, info, body in blocks(DOC.read_text()) if lang == "python" and "file" not in info)
    code = [ln for ln in first.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(code) <= 15, len(code)
