"""`pip install .` (not editable) gives a console script that finds the built-in methods, suites and
shipped weights, installed inside the package namespace (never as top-level `methods` / `tasks`)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_regular_install_ships_methods_tasks_and_weights(tmp_path: Path):
    target = tmp_path / "site"
    # dependencies are already installed; build this checkout into a separate folder
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(REPO)],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = (
        "import importlib.util, sys, peftbench, peftbench.suites as s, peftbench.methods as r, peftbench.backbone as b;"
        f"assert peftbench.__file__.startswith({str(target)!r}), peftbench.__file__;"
        "assert importlib.util.find_spec('methods') is None and importlib.util.find_spec('tasks') is None;"
        "print(len(r.all_methods()), sorted(s.all_suites()), b.DEMO_WEIGHTS.is_file(), b.DEMO_WEIGHTS.with_suffix('.json').is_file())"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], check=True, cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert shown.stdout.strip() == "37 ['demo', 'domain_generalization', 'fewshot_fgvc', 'fgvc', 'vtab1k'] True True"
    listed = subprocess.run(
        [target / "bin" / "peftbench", "list", "methods"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0 and "rlrr" in listed.stdout and "vpt_deep" in listed.stdout
