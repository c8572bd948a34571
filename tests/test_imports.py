"""The packages stay light and their public surface is curated."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HEAVY = [
    "wandb",
    "tensorboardX",
    "tensorboard",
    "torch",
    "numpy",
    "rich",
    "psutil",
    "pyarrow",
    "duckdb",
    "prometheus_client",
]


def test_importing_bus_sinks_and_producers_pulls_in_no_heavy_library() -> None:
    code = f"import sys, bus, sinks, producers; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("package", ["bus", "sinks", "producers", "producers.integrations"])
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    missing = []
    for name in module.__all__:
        try:
            getattr(module, name)
        except (AttributeError, ImportError):
            missing.append(name)
    assert missing == []


PACKAGES = ("bus", "sinks", "producers")


def _imported_modules(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of every module a source file imports, relative imports
    resolved, and `from pkg import _private` counted as the module `pkg._private`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names if _private(alias.name))


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def test_no_package_imports_another_packages_private_modules() -> None:
    """bus, sinks and producers reach each other only through public names (`bus.wire`,
    `sinks.redis_bridge`, what each `__init__` exports): a private module may change freely."""
    root = Path(__file__).resolve().parent.parent
    found = []
    for top in PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            for line, name in _imported_modules(path, module):
                parts = name.split(".")
                if parts[0] in PACKAGES and parts[0] != top and any(_private(p) for p in parts[1:]):
                    found.append(f"{path.relative_to(root)}:{line} imports {name}")
    assert found == []


def test_the_private_import_check_sees_each_form_of_import(tmp_path: Path) -> None:
    """The check above, on a file with every way of naming another package's private module."""
    source = tmp_path / "__init__.py"
    source.write_text(
        "import bus._wire\nfrom bus._validate import as_step\nfrom bus import _spool, wire\n"
        "from .._tensorboard import encode_record\nfrom ._own import x\n"
    )
    names = [name for _, name in _imported_modules(source, "sinks.sub")]
    assert names == ["bus._wire", "bus._validate", "bus", "bus._spool", "sinks._tensorboard", "sinks.sub._own"]
