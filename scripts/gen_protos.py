"""Regenerate generated/ from protos/: the one way generated code changes.

Runs grpc_tools.protoc with the Python, mypy (.pyi) and gRPC plugins; writes the HTTP door's
OpenAPI document (generated/zerodb/openapi.json, from a descriptor set with the proto comments);
then copies the google/api and google/rpc protos from the installed googleapis-common-protos into
build/protodeps so that `buf lint` resolves imports without the network.
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import openapi

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "generated"
DEPS = ROOT / "build" / "protodeps"


def googleapis_root() -> Path:
    """The site-packages directory that holds googleapis-common-protos' google/api/*.proto."""
    import google.api.annotations_pb2 as annotations

    return Path(annotations.__file__).resolve().parent.parent.parent


def _copy_deps(googleapis: Path) -> None:
    shutil.rmtree(DEPS, ignore_errors=True)
    for sub in ("google/api", "google/rpc"):
        target = DEPS / sub
        target.mkdir(parents=True)
        for proto in (googleapis / sub).glob("*.proto"):
            shutil.copy(proto, target / proto.name)


def well_known_root() -> Path:
    """grpc_tools' copy of google/protobuf/*.proto."""
    return Path(str(importlib.resources.files("grpc_tools"))) / "_proto"


def _includes(googleapis: Path) -> list[str]:
    return [f"-I{PROTOS}", f"-I{googleapis}", f"-I{well_known_root()}"]


def _protoc(sources: list[Path], googleapis: Path) -> None:
    bindir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        *_includes(googleapis),
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--mypy_out={OUT}",
        f"--mypy_grpc_out={OUT}",
        *(str(s.relative_to(PROTOS)) for s in sources),
    ]
    subprocess.run(cmd, check=True, cwd=PROTOS)


def descriptor_set(sources: list[Path], googleapis: Path) -> bytes:
    """The protos and their imports as one FileDescriptorSet, comments included."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.binpb"
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", *_includes(googleapis),
             "--include_imports", "--include_source_info", f"--descriptor_set_out={out}",
             *(str(s.relative_to(PROTOS)) for s in sources)],
            check=True, cwd=PROTOS,
        )  # fmt: skip
        return out.read_bytes()


def _write_openapi(sources: list[Path], googleapis: Path) -> None:
    document = openapi.build(descriptor_set(sources, googleapis))
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    (OUT / "zerodb" / "openapi.json").write_text(text)


def main() -> None:
    googleapis = googleapis_root()
    _copy_deps(googleapis)
    shutil.rmtree(OUT / "zerodb", ignore_errors=True)
    sources = sorted(PROTOS.rglob("*.proto"))
    _protoc(sources, googleapis)
    # Packages for the generated modules; py.typed makes mypy read the .pyi stubs.
    for pkg in {p.parent for p in OUT.rglob("*_pb2.py")} | {OUT / "zerodb"}:
        (pkg / "__init__.py").touch()
        (pkg / "py.typed").touch()
    _write_openapi(sources, googleapis)
    print(f"generated {len(sources)} protos into {OUT.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
