"""The package as released: one version everywhere, a repository that stands alone, and a
README whose links resolve inside it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

import pytest
from hubprocess import ROOT

import agentcom_skill

# Built from pieces, so this file does not match itself.
OUTSIDE = re.compile("(" + r"\.\./" + "shared" + "|/work/" + "shared" + r"|(?<![\w.])" + "shar" + "ed/" + ")")
SKIP_DIRS = {".git", ".venv", ".ci-venv", ".ci-build", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis"}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def repository_files() -> list[str]:
    try:
        git = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
        listed = git.stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but the build leftovers
        listed = [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(ROOT).parts) and ".egg-info" not in str(p)
        ]
    return listed


@pytest.mark.slow  # runs git ls-files
def test_one_version_everywhere():
    version = agentcom_skill.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "agentcom_skill.__version__"}
    assert json.loads((ROOT / "skill.json").read_text())["version"] == version
    out = subprocess.run(
        [sys.executable, "-m", "agentcom_skill", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"agentcom, version {version}"
    assert f"## {version} " in (ROOT / "CHANGELOG.md").read_text(), "the changelog has this release"


def test_requests_is_a_run_time_dependency_in_the_metadata_and_the_card():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(re.match(r"requests\b", d) for d in project["dependencies"])
    assert "requests" in json.loads((ROOT / "skill.json").read_text())["install"]["dependencies"]


@pytest.mark.slow  # runs git ls-files
def test_no_file_refers_to_anything_outside_the_repository():
    offenders = []
    for name in repository_files():
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        offenders += [f"{name}: {m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert offenders == []


def test_every_relative_link_in_the_readme_resolves_inside_the_repository():
    readme = (ROOT / "README.md").read_text()
    links = LINK.findall(readme)
    assert links and links[0] == "docs/protocol.md", "the first link is the hub contract"
    relative = [t for t in links if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]
    broken = []
    for target in relative:
        path = (ROOT / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(ROOT.resolve()) or not path.exists():
            broken.append(target)
    assert broken == []
