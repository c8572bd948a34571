"""The built wheel holds every package: installed into a fresh venv, outside the checkout, each
package and subpackage imports from the wheel's own files and the README quick start runs.

`make test` installs the checkout editable, which hides a wheel that lacks a subpackage (the
wheel once had no `producers.integrations`). Here the wheel is built from a copy of the source,
installed with pip into a venv of its own, and imported with the checkout nowhere on sys.path.
The fresh venv reuses the test venv's dependencies through a path entry, not a site directory,
so the editable install's `.pth` hook is not run there and cannot shadow the wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: Not part of the source: venvs, caches, outputs of runs and builds.
_SKIP = shutil.ignore_patterns(".venv", ".git", "build", "runs", "wandb", "*.egg-info", "*cache*", ".hypothesis")


def _build_wheel(out: Path, source: Path) -> Path:
    """The wheel of a copy of the checkout (a build writes `build/` next to the sources)."""
    shutil.copytree(ROOT, source, ignore=_SKIP)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "-q", "-w", str(out), str(source)]
    try:
        import setuptools

        isolated = int(setuptools.__version__.split(".")[0]) < 77  # pyproject's build requirement
    except ImportError:
        isolated = True
    if not isolated:
        command.insert(4, "--no-build-isolation")  # reuse the venv's setuptools: no download, ~1 s
    else:
        command.remove("--no-index")  # fetch the build backend from the package index
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("metricbus-*.whl")
    return wheel


def _fresh_venv(path: Path) -> tuple[Path, Path]:
    """A venv without pip whose site-packages comes first, then this venv's dependencies."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "_metricbus_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, site


def _packages(wheel: Path) -> list[str]:
    """Every package in the wheel, by its `__init__.py`."""
    names = zipfile.ZipFile(wheel).namelist()
    return sorted(n.removesuffix("/__init__.py").replace("/", ".") for n in names if n.endswith("/__init__.py"))


def test_the_wheel_installs_every_package_and_runs_the_quick_start(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path / "dist", tmp_path / "source")
    names = zipfile.ZipFile(wheel).namelist()
    packages = _packages(wheel)
    assert {"bus", "sinks", "producers", "producers.integrations"} <= set(packages)
    for package in ("bus", "sinks", "producers"):
        assert f"{package}/py.typed" in names
    on_disk = sorted(
        str(p.parent.relative_to(ROOT)).replace("/", ".")
        for top in ("bus", "sinks", "producers")
        for p in (ROOT / top).rglob("__init__.py")
    )
    assert packages == on_disk  # every package of the checkout, none left behind

    python, site = _fresh_venv(tmp_path / "venv")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    quick_start = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[0]
    script = tmp_path / "outside" / "check.py"
    script.parent.mkdir()
    script.write_text(
        "import importlib, sys\n"
        f"site = {str(site)!r}\n"
        f"for name in {packages!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(site), (name, module.__file__)\n"
        "    print(name, module.__file__)\n"
        f"exec(compile({quick_start!r}, 'README quick start', 'exec'), {{'__name__': 'quick_start'}})\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    done = subprocess.run(
        [str(python), str(script)],
        cwd=script.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in packages:
        assert f"{name} {site}" in done.stdout
    assert (script.parent / "runs" / "exp1" / "metrics.csv").read_text().count("\n") == 2001  # header + 2 x 1000
    cli = subprocess.run([str(python.parent / "metricbus"), "--help"], env=env, capture_output=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
