"""Where a run says it comes from: the code version, in and outside a git checkout."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from orchestrator.tracking import SOURCE_DIGEST, code_version, code_version_as, source_digest, source_tags

REPO = Path(__file__).resolve().parents[2]
ASK = "from orchestrator.tracking import code_version; print(code_version())"


def version_of(tree: Path) -> str:
    return subprocess.run([sys.executable, "-c", ASK], cwd=tree, capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)}).stdout.strip()


def test_a_checkout_is_its_git_commit_and_a_copy_without_git_its_source_digest(tmp_path):
    assert len(code_version().removesuffix("+dirty")) == 40  # this checkout: a commit
    assert source_tags()["mlflow.source.git.commit"] == code_version().removesuffix("+dirty")
    # what a Ray job runs: the project's files uploaded without .git
    copy = tmp_path / "job"
    for folder in ("orchestrator", "trainables", "search_spaces"):
        shutil.copytree(REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    version = version_of(copy)
    assert version == SOURCE_DIGEST + source_digest(REPO)  # the same code reads as the same version
    assert code_version_as(version) == version  # ... which reproduce, here in git, compares in that form
    (copy / "trainables" / "metrics.py").write_text((copy / "trainables" / "metrics.py").read_text() + "\n# changed\n")
    assert version_of(copy) != version  # and different code as different
