"""The documentation: every ```python block of the README and of every docs page runs as written,
in a temporary directory; the site builds strictly; its API reference has every public name.

Blocks fenced as ```py are signatures, not programs, and are skipped (so is ```python redis: it
needs a server, and tests/test_redis.py runs it against one). docs/notes/integrations.md is run by
tests/integrations/test_notes.py, next to the other framework tests.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RUN_ELSEWHERE = {DOCS / "notes" / "integrations.md"}
PAGES = [README, *(p for p in sorted(DOCS.rglob("*.md")) if p not in RUN_ELSEWHERE)]
# Tags a page's content may hold. Any other tag is text that Markdown took for HTML (a docstring's
# "<sink name>" outside backticks) and that the browser hides.
# fmt: off
CONTENT_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "details", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "i", "img", "input", "kbd", "label", "li", "mark", "ol", "p", "path", "pre", "s", "small",
    "span", "strong", "sub", "summary", "sup", "svg", "table", "tbody", "td", "th", "thead", "tr", "u", "ul",
}
# fmt: on
# public name -> the API reference page that documents it
API_PAGES = {
    "bus": "bus",
    "sinks": "sinks",
    "producers": "producers",
    "producers.wandb": "wandb",
    "producers.integrations": "integrations",
}


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


BLOCKS = [(page, i, code) for page in PAGES for i, code in enumerate(python_blocks(page))]


@pytest.mark.parametrize(
    ("page", "index", "code"),
    BLOCKS,
    ids=[f"{page.relative_to(ROOT)}:{i}" for page, i, _ in BLOCKS],
)
def test_example_runs(page: Path, index: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(code, f"{page.relative_to(ROOT)} block {index}", "exec"), namespace)
    main = namespace.get("main")
    if inspect.iscoroutinefunction(main) and "anyio.run(main)" not in code:
        anyio.run(main)  # a snippet that only defines its async entry point


def test_the_readme_is_a_front_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert text.index("make demo") < text.index("make test") < text.index("```python")  # the two commands first
    for link in re.findall(r"\]\((docs/[^)#]+)", text):  # relative links: they work on GitHub too
        assert (ROOT / link).is_file(), link


def test_the_site_builds_strictly_with_every_public_name_in_the_api_reference(tmp_path: Path) -> None:
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert build.returncode == 0, build.stdout[-3_000:] + build.stderr[-5_000:]
    for page in site.rglob("*.html"):
        content = page.read_text().partition('<article class="md-content__inner md-typeset">')[2]
        stray = set(re.findall(r"</?([A-Za-z][\w-]*)", content.partition("</article>")[0])) - CONTENT_TAGS
        assert not stray, f"{page.relative_to(site)}: text taken for HTML tags {sorted(stray)}"
    for module_name, page in API_PAGES.items():
        html = (site / "api" / page / "index.html").read_text()
        anchors = set(re.findall(r'id="([\w.]+)"', html))
        module = importlib.import_module(module_name)
        missing = [name for name in module.__all__ if f"{module_name}.{name}" not in anchors]
        assert not missing, f"{module_name}: not in the API reference: {missing}"
