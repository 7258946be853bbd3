"""`buf breaking` for protos/ against what main last shipped, offline.

Without `--against`, protos/ is compared with:
- the newest release tag (`v*`) reachable from HEAD, when there is one, and
- the protos main had before them: starting at the merge base of HEAD and `main` (HEAD itself
  on main), the first commit down main's first-parent line whose protos/ differ from the
  working tree's. On a branch that changed protos/ that is main as the branch left it; on main
  after a merge that changed protos/, main before that merge. (HEAD~1 is neither when the last
  commit did not touch protos/, or when a branch's change spans several commits.)

buf cannot fetch the googleapis module here, so both sides are compiled with grpc_tools.protoc
into self-contained descriptor sets (imports included), which buf accepts as images.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from gen_protos import PROTOS, ROOT, googleapis_root, well_known_root

MAIN = "main"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def release_tag() -> str | None:
    found = _git("describe", "--tags", "--abbrev=0", "--match", "v[0-9]*", "HEAD")
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else None


def previous_protos() -> str | None:
    """The newest commit on main's first-parent line, from the merge base of HEAD and main
    down, whose protos/ differ from the working tree's; None when none does."""
    base = _git("merge-base", "HEAD", MAIN)
    start = base.stdout.strip() if base.returncode == 0 else "HEAD"
    history = _git("rev-list", "--first-parent", start)
    for commit in history.stdout.split():
        if _git("diff", "--quiet", commit, "--", "protos").returncode != 0:
            return commit
    return None


def _image(protos: Path, out: Path) -> None:
    sources = [str(p.relative_to(protos)) for p in sorted(protos.rglob("*.proto"))]
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{protos}", f"-I{googleapis_root()}",
         f"-I{well_known_root()}", "--include_imports", "--include_source_info",
         f"--descriptor_set_out={out}", *sources],
        check=True, cwd=protos,
    )  # fmt: skip


def _checkout(ref: str, into: Path) -> Path | None:
    """protos/ as of `ref`, or None when the ref has none (the first commit of the API)."""
    listing = _git("ls-tree", "-r", "--name-only", ref, "protos")
    if listing.returncode != 0 or not listing.stdout.strip():
        return None
    for name in listing.stdout.split():
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(subprocess.run(["git", "show", f"{ref}:{name}"], cwd=ROOT,
                                          capture_output=True, check=True).stdout)  # fmt: skip
    return into / "protos"


def compatible_with(ref: str) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        old = _checkout(ref, Path(tmp) / "old")
        if old is None:
            print(f"buf breaking: {ref} has no protos/; nothing to compare")
            return True
        _image(old, Path(tmp) / "old.binpb")
        _image(PROTOS, Path(tmp) / "new.binpb")
        done = subprocess.run(["buf", "breaking", str(Path(tmp) / "new.binpb"), "--against",
                               str(Path(tmp) / "old.binpb"), "--config",
                               '{"version":"v2","breaking":{"use":["FILE"]}}'])  # fmt: skip
    print(f"buf breaking: {'compatible' if done.returncode == 0 else 'INCOMPATIBLE'} with {ref}")
    return done.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--against", help="a git ref to compare with (default: see above)")
    against = parser.parse_args().against
    refs = [against] if against else [r for r in (release_tag(), previous_protos()) if r]
    if not refs:
        print("buf breaking: protos/ never changed on main; nothing to compare")
    if not all([compatible_with(ref) for ref in refs]):
        sys.exit("buf breaking: protos/ breaks compatibility")


if __name__ == "__main__":
    main()
