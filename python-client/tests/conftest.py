"""Shared fixtures: short IPC directories, the real ``aft-sidecar`` process, a fake one."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from aft_client._wire import ENDPOINTS

CLIENT_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = CLIENT_ROOT.parent
SIDECAR_BIN = os.environ.get("AFT_SIDECAR_BIN", str(REPO_ROOT / "target" / "debug" / "aft-sidecar"))
# Extra flags for every sidecar the tests start (e.g. a peer port once there is one).
SIDECAR_EXTRA_ARGS = shlex.split(os.environ.get("AFT_SIDECAR_EXTRA_ARGS", ""))
STARTUP_TIMEOUT = 15.0


def short_tmpdir(prefix: str = "aft-") -> str:
    """A fresh directory with a short path (Unix socket paths are limited to 107 bytes)."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


@pytest.fixture
def ipc_dir() -> Iterator[str]:
    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Sidecar:
    """A running ``aft-sidecar`` on its own IPC directory and file store.

    ``extra_args`` are added to its command line; with ``--grpc-addr`` among them,
    :meth:`start` also waits for the gRPC front and sets :attr:`grpc_addr`.
    """

    def __init__(
        self, ipc_dir: str, node_address: str = "127.0.0.1", extra_args: Sequence[str] = ()
    ) -> None:
        self.ipc_dir = ipc_dir
        self.node_address = node_address
        self.extra_args = list(extra_args)
        self.log_path = os.path.join(ipc_dir, "sidecar.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.grpc_addr: str | None = None

    @property
    def args(self) -> list[str]:
        return [
            SIDECAR_BIN,
            "--ipc-dir",
            self.ipc_dir,
            "--storage",
            f"file://{self.ipc_dir}/store",
            "--node-address",
            self.node_address,
            "--metrics-addr",
            "127.0.0.1:0",
            *SIDECAR_EXTRA_ARGS,
            *self.extra_args,
        ]

    @property
    def wants_grpc(self) -> bool:
        return "--grpc-addr" in self.extra_args

    def start(self) -> Sidecar:
        if not os.access(SIDECAR_BIN, os.X_OK):
            pytest.fail(
                f"aft-sidecar binary not found at {SIDECAR_BIN}: build it with "
                "`cargo build -p aft-sidecar` or set AFT_SIDECAR_BIN"
            )
        for name in ENDPOINTS:  # stale files from an earlier run would fool the check
            try:
                os.unlink(os.path.join(self.ipc_dir, name))
            except FileNotFoundError:
                pass
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if all(os.path.exists(os.path.join(self.ipc_dir, n)) for n in ENDPOINTS):
                if not self.wants_grpc:
                    return self
                # Printed on stdout (into the log) once the port is bound: the port the
                # sidecar chose for --grpc-addr 127.0.0.1:0.
                found = _GRPC_LISTENING_RE.search(self.log())
                if found:
                    self.grpc_addr = found.group(1)
                    return self
            if self.proc.poll() is not None:
                pytest.fail(
                    f"aft-sidecar exited with {self.proc.returncode} at startup:\n{self.log()}"
                )
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"aft-sidecar did not create its sockets in {STARTUP_TIMEOUT}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-20000:]
        except FileNotFoundError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


_GRPC_LISTENING_RE = re.compile(r"^grpc listening on (\S+)$", re.MULTILINE)


def _start_or_clean_up(path: str) -> Sidecar:
    try:
        return Sidecar(path).start()
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


@pytest.fixture(scope="module")
def sidecar() -> Iterator[Sidecar]:
    """One real sidecar per test module (file storage in its IPC directory)."""
    path = short_tmpdir("aft-sc-")
    sc = _start_or_clean_up(path)
    yield sc
    alive = sc.alive()
    sc.stop()
    log = sc.log()
    shutil.rmtree(path, ignore_errors=True)
    if not alive:
        pytest.fail(f"aft-sidecar died during the tests:\n{log}")


@pytest.fixture
def own_sidecar() -> Iterator[Sidecar]:
    """A real sidecar for one test, which may stop it."""
    path = short_tmpdir("aft-sc-")
    sc = _start_or_clean_up(path)
    yield sc
    sc.stop()
    shutil.rmtree(path, ignore_errors=True)


_thread_ids = iter(range(1000, 1_000_000))


@pytest.fixture
def fresh_thread_id() -> int:
    """A thread id no other client in this test session uses."""
    return next(_thread_ids)


# The bearer token of the gRPC sidecars the tests start (a comment line first, as the
# sidecar's token files allow).
GRPC_TOKEN = "test-token-0123456789abcdef"


def write_token_file(directory: str, token: str = GRPC_TOKEN) -> str:
    path = os.path.join(directory, "grpc.token")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"# bearer token of this test sidecar\n{token}\n")
    return path


@pytest.fixture(scope="module")
def grpc_sidecar() -> Iterator[Sidecar]:
    """A real sidecar per test module serving IPC and a gRPC front with a bearer token.

    ``grpc_sidecar.grpc_addr`` is its gRPC address; the token is :data:`GRPC_TOKEN`, in the
    file ``<ipc_dir>/grpc.token``.
    """
    path = short_tmpdir("aft-gr-")
    token_file = write_token_file(path)
    try:
        sc = Sidecar(
            path, extra_args=["--grpc-addr", "127.0.0.1:0", "--grpc-token-file", token_file]
        ).start()
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    yield sc
    alive = sc.alive()
    sc.stop()
    log = sc.log()
    shutil.rmtree(path, ignore_errors=True)
    if not alive:
        pytest.fail(f"aft-sidecar died during the tests:\n{log}")
