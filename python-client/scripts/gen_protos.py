#!/usr/bin/env python3
"""Generate ``aft_client._proto`` from the shared ``proto/anna.proto``, ``proto/aft.proto`` and
``proto/aft_service.proto`` (the gRPC service, also as a ``*_pb2_grpc.py`` client stub).

Uses the protoc bundled with ``grpcio-tools`` (``python -m grpc_tools.protoc``), so no
system ``protoc`` is needed::

    pip install -e 'python-client[gen]'
    python python-client/scripts/gen_protos.py            # rewrite src/aft_client/_proto/
    python python-client/scripts/gen_protos.py --out DIR  # write somewhere else (used by tests)
    python python-client/scripts/gen_protos.py --check    # exit 1 if the committed files are stale

The generated modules are committed; never edit them by hand. protoc's output is
post-processed in three mechanical ways, all done here so that regenerating is reproducible:

* Messages are registered in a **private descriptor pool** (``aft_client._proto._pool``)
  instead of protobuf's process-wide default pool. ``anna.proto`` has no ``package`` line,
  so its messages are top-level names (``KeyTuple``, ``LWWValue``...); Cloudburst and the
  Anna client register the same names in the default pool, and two different files
  defining one name there fail at import. A private pool lets both live in one process.
  The wire format is unaffected.
* The module name handed to protobuf's builder is the real import path
  (``aft_client._proto.anna_pb2``), so message classes have a correct ``__module__`` and
  pickle.
* Imports of the sibling modules (protoc writes ``import aft_pb2 as aft__pb2``, which only
  works with ``_proto/`` on ``sys.path``) become ``from aft_client._proto import aft_pb2 as
  aft__pb2``; a well-known type a file imports (``google/protobuf/empty.proto``) is copied
  from protobuf's default pool into the private one before the file is added to it.

The gRPC stubs (``--grpc_python_out``, only for the files in ``GRPC_PROTOS``) get the same
import rewrite; they need ``grpcio`` at run time (the ``[grpc]`` extra), the other modules
do not.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIENT_ROOT = HERE.parent
REPO_ROOT = CLIENT_ROOT.parent
PROTO_DIR = REPO_ROOT / "proto"
OUT_DIR = CLIENT_ROOT / "src" / "aft_client" / "_proto"
PACKAGE = "aft_client._proto"

# The .proto files the client needs, by file name inside PROTO_DIR.
PROTOS = ("anna.proto", "aft.proto", "aft_service.proto")
# Those of them with a service: they also get a ``<stem>_pb2_grpc.py`` client stub.
GRPC_PROTOS = ("aft_service.proto",)

POOL_IMPORT = "from aft_client._proto._pool import POOL as _POOL\n"
WKT_IMPORT = "from aft_client._proto._pool import add_well_known as _add_well_known\n"
# protoc's import of a well-known type's module, e.g. google/protobuf/empty.proto.
WKT_IMPORT_RE = re.compile(r"^from google\.protobuf import (\w+_pb2) as (\w+)$", re.MULTILINE)
HEADER_NOTE = (
    "# Post-processed by python-client/scripts/gen_protos.py: private descriptor pool,\n"
    "# module path {module}. Regenerate with that script; do not edit.\n"
)

GRPC_HEADER_NOTE = (
    "# Post-processed by python-client/scripts/gen_protos.py: module path {module}.\n"
    "# Regenerate with that script; do not edit.\n"
)

# Files in OUT_DIR that are ours, not protoc's.
HAND_WRITTEN = ("__init__.py", "_pool.py")


def generated_names() -> list[str]:
    """File names (inside the output directory) that this script produces."""
    names = []
    for proto in PROTOS:
        stem = proto[: -len(".proto")]
        names += [f"{stem}_pb2.py", f"{stem}_pb2.pyi"]
        if proto in GRPC_PROTOS:
            names.append(f"{stem}_pb2_grpc.py")
    return names


def _run_protoc(proto_dir: Path, out: Path) -> None:
    try:
        from grpc_tools import protoc  # noqa: F401  (only checks it is installed)
    except ImportError:
        sys.exit("grpcio-tools is not installed: pip install -e 'python-client[gen]'")
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(proto_dir / p) for p in PROTOS],
    ]
    subprocess.run(cmd, check=True)


def _sibling_imports(text: str, alias_prefix: str = "") -> str:
    """``import aft_pb2 as x`` -> ``from aft_client._proto import aft_pb2 as x``."""
    for proto in PROTOS:
        stem = proto[: -len(".proto")]
        text = re.sub(
            rf"^import {stem}_pb2 as ({alias_prefix}\w+)$",
            rf"from {PACKAGE} import {stem}_pb2 as \1",
            text,
            flags=re.MULTILINE,
        )
    if re.search(r"^import \w+_pb2\b", text, flags=re.MULTILINE):
        raise SystemExit("gen_protos: an import of a .proto outside PROTOS; add it to PROTOS")
    return text


def _postprocess_py(text: str, stem: str) -> str:
    module = f"{PACKAGE}.{stem}_pb2"
    default_pool = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
    builder_import = "from google.protobuf.internal import builder as _builder\n"
    build_top = f"_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, '{stem}_pb2', _globals)"
    for needle in (default_pool, builder_import, build_top):
        if text.count(needle) != 1:
            raise SystemExit(
                f"gen_protos: protoc output for {stem}.proto changed shape "
                f"(expected exactly one {needle!r}); update scripts/gen_protos.py"
            )
    # The private pool must hold every file this one imports; ours are added by importing
    # their modules, well-known types are copied from the default pool first.
    well_known = [alias for _, alias in WKT_IMPORT_RE.findall(text)]
    copy_well_known = "".join(f"_add_well_known({alias})\n" for alias in well_known)
    text = text.replace(default_pool, copy_well_known + "DESCRIPTOR = _POOL.AddSerializedFile(")
    text = text.replace(
        builder_import, builder_import + POOL_IMPORT + (WKT_IMPORT if well_known else "")
    )
    text = _sibling_imports(text)
    text = text.replace(
        build_top, f"_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, '{module}', _globals)"
    )
    first_newline = text.index("\n") + 1  # keep the coding line first
    return text[:first_newline] + HEADER_NOTE.format(module=module) + text[first_newline:]


def _postprocess_grpc(text: str, stem: str) -> str:
    module = f"{PACKAGE}.{stem}_pb2_grpc"
    first_newline = text.index("\n") + 1  # keep "Generated by the gRPC ... plugin" first
    text = _sibling_imports(text)
    return text[:first_newline] + GRPC_HEADER_NOTE.format(module=module) + text[first_newline:]


def generate(out: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Generate the modules into ``out`` (created if needed); return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aft-gen-protos-") as tmp:
        tmp_path = Path(tmp)
        _run_protoc(proto_dir, tmp_path)
        written = []
        for proto in PROTOS:
            stem = proto[: -len(".proto")]
            py = (tmp_path / f"{stem}_pb2.py").read_text(encoding="utf-8")
            pyi = (tmp_path / f"{stem}_pb2.pyi").read_text(encoding="utf-8")
            outputs = [
                (f"{stem}_pb2.py", _postprocess_py(py, stem)),
                (f"{stem}_pb2.pyi", _sibling_imports(pyi, alias_prefix="_")),
            ]
            if proto in GRPC_PROTOS:
                grpc_py = (tmp_path / f"{stem}_pb2_grpc.py").read_text(encoding="utf-8")
                outputs.append((f"{stem}_pb2_grpc.py", _postprocess_grpc(grpc_py, stem)))
            for name, text in outputs:
                target = out / name
                target.write_text(text, encoding="utf-8")
                written.append(target)
    return written


def stale_files(committed: Path = OUT_DIR) -> list[str]:
    """Names of generated files in ``committed`` that differ from a fresh generation."""
    with tempfile.TemporaryDirectory(prefix="aft-gen-check-") as tmp:
        generate(Path(tmp))
        return [
            name
            for name in generated_names()
            if not (committed / name).exists()
            or not filecmp.cmp(committed / name, Path(tmp) / name, shallow=False)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the committed files are stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        if stale:
            print("stale generated protobuf modules: " + ", ".join(stale), file=sys.stderr)
            print("run: python python-client/scripts/gen_protos.py", file=sys.stderr)
            return 1
        print("generated protobuf modules are up to date")
        return 0
    for path in generate(args.out):
        print(f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
