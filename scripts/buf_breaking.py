"""`buf breaking` for protos/ against a git ref (default HEAD~1), offline.

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
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", ref, "protos"],
                             cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    if listing.returncode != 0 or not listing.stdout.strip():
        return None
    for name in listing.stdout.split():
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(subprocess.run(["git", "show", f"{ref}:{name}"], cwd=ROOT,
                                          capture_output=True, check=True).stdout)  # fmt: skip
    return into / "protos"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--against", default="HEAD~1", help="git ref to compare with")
    ref = parser.parse_args().against
    with tempfile.TemporaryDirectory() as tmp:
        old = _checkout(ref, Path(tmp) / "old")
        if old is None:
            print(f"buf breaking: {ref} has no protos/; nothing to compare")
            return
        _image(old, Path(tmp) / "old.binpb")
        _image(PROTOS, Path(tmp) / "new.binpb")
        done = subprocess.run(["buf", "breaking", str(Path(tmp) / "new.binpb"), "--against",
                               str(Path(tmp) / "old.binpb"), "--config",
                               '{"version":"v2","breaking":{"use":["FILE"]}}'])  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"buf breaking: protos/ breaks compatibility with {ref}")
    print(f"buf breaking: compatible with {ref}")


if __name__ == "__main__":
    main()
