"""Regenerate the Python code for our .proto files.

    python -m remote_apis_protos.generate           # rewrite the committed files
    python -m remote_apis_protos.generate --check   # exit 1 if they are stale

Why a script: protoc emits absolute imports such as ``from build.bazel.semver import
semver_pb2``; the top-level names ``build`` and ``google`` are not ours to own, so
every import of a module we generate is rewritten to ``remote_apis_protos.``. Imports
of google.protobuf and google.rpc (from googleapis-common-protos) stay as they are.
The descriptor-pool file names keep their upstream spelling, so the wire and text
formats are untouched.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import site
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
# Proto packages whose generated modules live inside remote_apis_protos.
OWN_MODULE_PREFIX = re.compile(
    r"^(?P<lead>\s*(?:from|import)\s+)(?P<mod>(?:build|google\.(?:bytestream|longrunning|devtools))\b)",
    re.MULTILINE,
)


def proto_files() -> list[str]:
    """All .proto files under the package, relative to it, sorted."""
    return sorted(str(p.relative_to(PACKAGE_DIR)) for p in PACKAGE_DIR.rglob("*.proto"))


def include_dirs() -> list[str]:
    """Our tree first, then site-packages (google/rpc), then protobuf's well-known types."""
    import grpc_tools

    dirs = [str(PACKAGE_DIR)]
    dirs += [p for p in site.getsitepackages() if os.path.isdir(p)]
    dirs.append(str(Path(grpc_tools.__file__).parent / "_proto"))
    return dirs


def rewrite_imports(text: str) -> str:
    return OWN_MODULE_PREFIX.sub(lambda m: f"{m['lead']}remote_apis_protos.{m['mod']}", text)


def generate_into(out_dir: Path) -> dict[str, str]:
    """Run protoc into out_dir and return {relative path: rewritten text}."""
    cmd = [sys.executable, "-m", "grpc_tools.protoc"]
    cmd += [f"-I{d}" for d in include_dirs()]
    cmd += [f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}"]
    cmd += proto_files()
    subprocess.run(cmd, check=True, cwd=PACKAGE_DIR)
    result: dict[str, str] = {}
    for path in sorted(out_dir.rglob("*")):
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES):
            result[str(path.relative_to(out_dir))] = rewrite_imports(path.read_text())
    return result


def package_dirs(files: dict[str, str]) -> set[Path]:
    """Every directory that holds generated code, up to the package root."""
    dirs: set[Path] = set()
    for rel in files:
        parent = Path(rel).parent
        while parent != Path("."):
            dirs.add(parent)
            parent = parent.parent
    return dirs


def committed_files() -> dict[str, str]:
    return {
        str(p.relative_to(PACKAGE_DIR)): p.read_text()
        for p in PACKAGE_DIR.rglob("*")
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale files, change nothing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate_into(Path(tmp))
    current = committed_files()
    if args.check:
        stale = sorted(set(fresh) ^ set(current)) + sorted(
            rel for rel in fresh.keys() & current.keys() if fresh[rel] != current[rel]
        )
        for rel in stale:
            print(f"stale: remote_apis_protos/{rel}")
            diff = difflib.unified_diff(
                current.get(rel, "").splitlines(), fresh.get(rel, "").splitlines(), lineterm="", n=1
            )
            print("\n".join(list(diff)[:20]))
        if stale:
            print("run: python -m remote_apis_protos.generate")
        return 1 if stale else 0
    for rel in set(current) - set(fresh):
        (PACKAGE_DIR / rel).unlink()
    for rel, text in fresh.items():
        (PACKAGE_DIR / rel).write_text(text)
    for rel_dir in package_dirs(fresh):
        init = PACKAGE_DIR / rel_dir / "__init__.py"
        if not init.exists():
            init.write_text("")
    print(f"generated {len(fresh)} files from {len(proto_files())} protos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
