"""The committed generated protobuf modules are fresh, private-pooled, and wire-compatible."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import CLIENT_ROOT, REPO_ROOT

SCRIPT = CLIENT_ROOT / "scripts" / "gen_protos.py"
COMMITTED = CLIENT_ROOT / "src" / "aft_client" / "_proto"


def _load_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_protos", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_modules_are_not_stale(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is in the [test] extra")
    gen = _load_script()
    written = gen.generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(gen.generated_names())
    stale = [
        name
        for name in gen.generated_names()
        if (tmp_path / name).read_bytes() != (COMMITTED / name).read_bytes()
    ]
    assert not stale, (
        f"generated modules differ from a fresh generation from {REPO_ROOT / 'proto'}: "
        f"{stale}; run `python python-client/scripts/gen_protos.py`"
    )


def test_staleness_check_notices_a_changed_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    gen = _load_script()
    protos = tmp_path / "proto"
    protos.mkdir()
    for name in gen.PROTOS:
        text = (REPO_ROOT / "proto" / name).read_text()
        if name == "aft.proto":
            text = text.replace(
                "string address = 3;\n}", "string address = 3;\n  int64 extra = 4;\n}", 1
            )
        (protos / name).write_text(text)
    out = tmp_path / "out"
    gen.generate(out, proto_dir=protos)
    assert (out / "aft_pb2.py").read_bytes() != (COMMITTED / "aft_pb2.py").read_bytes()
    assert (out / "anna_pb2.py").read_bytes() == (COMMITTED / "anna_pb2.py").read_bytes()


def test_check_mode_of_the_script() -> None:
    pytest.importorskip("grpc_tools")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_private_pool_coexists_with_default_pool_copies(tmp_path: Path) -> None:
    """Cloudburst's own anna_pb2 (default pool, same top-level names) imports alongside."""
    pytest.importorskip("grpc_tools")
    # A differing anna.proto in the default pool, as another project would ship it.
    (tmp_path / "anna.proto").write_text(
        'syntax = "proto3";\nmessage KeyTuple { string key = 1; bytes payload = 4; '
        "uint32 extra = 9; }\nmessage LWWValue { uint64 timestamp = 1; bytes value = 2; }\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{tmp_path}",
            f"--python_out={tmp_path}",
            str(tmp_path / "anna.proto"),
        ],
        check=True,
    )
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import anna_pb2 as theirs            # default pool
        from aft_client._proto import anna_pb2 as ours
        import aft_client
        v = ours.LWWValue(timestamp=3, value=b"x").SerializeToString()
        t = theirs.LWWValue.FromString(v)
        assert (t.timestamp, t.value) == (3, b"x")
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_generated_messages_have_their_real_module() -> None:
    import pickle

    from aft_client._proto import aft_pb2, anna_pb2

    assert anna_pb2.KeyTuple.__module__ == "aft_client._proto.anna_pb2"
    tag = aft_pb2.TransactionTag(id="t", status=aft_pb2.COMMITTED, address="1.2.3.4")
    assert pickle.loads(pickle.dumps(tag)) == tag
    assert aft_pb2.DESCRIPTOR.package == "aft"
    assert anna_pb2.DESCRIPTOR.package == ""


def test_grpc_service_has_afts_paths_and_messages() -> None:
    """``service Aft`` without a package: the stub calls ``/Aft/<method>`` as AFT's does."""
    pytest.importorskip("grpc", reason="the stub needs grpcio (the [grpc] extra)")
    from aft_client._proto import aft_service_pb2, aft_service_pb2_grpc

    service = aft_service_pb2.DESCRIPTOR.services_by_name["Aft"]
    assert service.full_name == "Aft"
    expected = {
        "StartTransaction": ("google.protobuf.Empty", "aft.TransactionTag"),
        "Write": ("aft.AftKeyRequest", "aft.AftKeyRequest"),
        "Read": ("aft.AftKeyRequest", "aft.AftKeyRequest"),
        "CommitTransaction": ("aft.TransactionTag", "aft.TransactionTag"),
        "AbortTransaction": ("aft.TransactionTag", "aft.TransactionTag"),
    }
    assert {
        m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods
    } == expected

    class RecordingChannel:
        def __init__(self) -> None:
            self.paths: list[str] = []

        def unary_unary(self, path: str, **kwargs: object) -> None:
            self.paths.append(path)

    channel = RecordingChannel()
    aft_service_pb2_grpc.AftStub(channel)
    assert channel.paths == [f"/Aft/{name}" for name in expected]
