"""`pip install .` (not editable) gives a console script that finds the built-in methods and suites,
installed inside the package namespace (never as top-level `methods` / `tasks` packages)."""
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_regular_install_ships_methods_tasks_and_weights(tmp_path: Path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    # the shared site-packages already hold the dependencies; build offline from this checkout
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(REPO)],
                   check=True, cwd=tmp_path, capture_output=True)
    probe = (
        "import importlib.util, peftbench, peftbench.suites as s, peftbench.registry as r, peftbench.backbone as b;"
        "assert 'site-packages' in peftbench.__file__, peftbench.__file__;"
        "assert importlib.util.find_spec('methods') is None and importlib.util.find_spec('tasks') is None;"
        "print(sorted(r.all_methods()), sorted(s.all_suites()), b.DEMO_WEIGHTS.is_file())"
    )
    shown = subprocess.run([python, "-I", "-c", probe], check=True, cwd=tmp_path, capture_output=True, text=True)
    assert shown.stdout.strip() == "['full', 'linear'] ['demo', 'fgvc', 'vtab1k'] True"
    listed = subprocess.run([env_dir / "bin" / "peftbench", "list", "suites"], cwd=tmp_path, capture_output=True, text=True)
    assert listed.returncode == 0 and "vtab1k" in listed.stdout
