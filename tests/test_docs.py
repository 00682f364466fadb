"""The documentation's links and commands point at things that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "RESULTS.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name} links to {target}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_scripts_named_in_commands_exist(page):
    text = page.read_text(encoding="utf-8")
    for script in re.findall(r"(?:python|bash) ((?:examples|recipes|experiments|benchmarks|tests)/[\w/.-]+\.(?:py|sh))", text):
        assert (ROOT / script).is_file(), f"{page.name} runs {script}, which does not exist"


def test_readme_is_a_short_user_guide():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 250
    first_screen = "\n".join(lines[:60])
    assert "ImageTokenizer.from_pretrained" in first_screen and "python -m pytest" in first_screen


def test_ci_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = re.search(r"&& (python -m pytest[^\n`]*)", readme).group(1).strip()
    assert command in [line.strip() for line in ci.splitlines()], f"README's {command!r} is not what .ci/run runs"
