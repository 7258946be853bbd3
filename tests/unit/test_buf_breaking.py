"""scripts/buf_breaking.py picks what main last shipped, not HEAD~1, in a scratch clone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MEMORY = Path("protos/zerodb/v1/memory.proto")


AUTHOR = ("-c", "user.name=t", "-c", "user.email=t@t")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A clone whose `main` is this checkout's HEAD, with the working tree's scripts."""
    clone = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    git(clone, "checkout", "-q", "-B", "main", git(ROOT, "rev-parse", "HEAD"))
    for script in ("buf_breaking.py", "gen_protos.py", "openapi.py"):
        (clone / "scripts" / script).write_text((ROOT / "scripts" / script).read_text())
    git(clone, *AUTHOR, "commit", "-qam", "scripts", "--allow-empty")
    return clone


def commit(repo: Path, message: str, edit: tuple[str, str] | None = None) -> None:
    if edit:
        path = repo / MEMORY
        path.write_text(path.read_text().replace(*edit))
    git(repo, *AUTHOR, "commit", "-qam", message, "--allow-empty")


def check(repo: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "scripts/buf_breaking.py"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


NEXT = "  // When the memory was first"
DROP_FIELD = ("  string entity_id = 9;\n" + NEXT, NEXT)


def test_a_branch_is_compared_with_main_where_it_left(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, "breaking", DROP_FIELD)
    commit(repo, "later work, protos untouched")  # HEAD~1 alone would miss the break
    done = check(repo)
    assert done.returncode != 0, done.stdout
    assert git(repo, "rev-parse", "main") in done.stdout


def test_main_after_a_merge_is_compared_with_main_before_it(repo: Path) -> None:
    before = git(repo, "rev-parse", "main")
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, "breaking", DROP_FIELD)
    commit(repo, "more")
    git(repo, "checkout", "-q", "main")
    git(repo, *AUTHOR, "merge", "-q", "--no-ff", "feature", "-m", "merge")
    done = check(repo)
    assert done.returncode != 0 and before in done.stdout, done.stdout


def test_compatible_changes_pass(repo: Path) -> None:
    commit(repo, "a comment", ("// A memory of an agent.", "// A memory of an agent, kept."))
    done = check(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "compatible with" in done.stdout
