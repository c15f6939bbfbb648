"""Per-thread ZeroMQ socket sets and reply-address allocation.

libzmq sockets must not be shared between threads, so each thread that uses a ``Client``
gets its own :class:`SocketSet`: one PUSH socket connected to each request endpoint the
thread uses, and one PULL socket bound at ``ipc://<ipc_dir>/<endpoint>_<suffix>`` for the
replies. The *suffix* is what Cloudburst calls the thread id. Suffixes are handed out by a
process-wide registry, so two threads (or two clients) of one process never bind the same
reply address; before binding, a probe refuses an address that a live socket of another
process holds (ZeroMQ would otherwise silently take the file over).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
import threading
import time
import weakref

import zmq

from aft_client.errors import AddressInUse, SidecarUnavailable

log = logging.getLogger("aft_client")

# Longest path a Unix socket address can hold on Linux (sun_path is 108 bytes, NUL included).
MAX_IPC_PATH = 107


class _SuffixRegistry:
    """Reply suffixes in use in this process, per IPC directory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: set[tuple[str, str]] = set()

    def reserve(self, ipc_dir: str, suffix: str) -> bool:
        with self._lock:
            if (ipc_dir, suffix) in self._taken:
                return False
            self._taken.add((ipc_dir, suffix))
            return True

    def release(self, ipc_dir: str, suffix: str) -> None:
        with self._lock:
            self._taken.discard((ipc_dir, suffix))

    def reset_after_fork(self) -> None:
        # The child inherits the parent's bookkeeping, but not its sockets.
        self._lock = threading.Lock()
        self._taken = set()


REGISTRY = _SuffixRegistry()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=REGISTRY.reset_after_fork)


def ipc_path(ipc_dir: str, name: str) -> str:
    """The filesystem path of endpoint ``name`` in ``ipc_dir``."""
    return os.path.join(ipc_dir, name)


def held_by_live_socket(path: str) -> bool:
    """Whether a process is listening on the Unix socket at ``path`` right now."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        # ENOENT (no file), ECONNREFUSED (stale file: nobody listens), ENOTSOCK...
        return False
    else:
        return True
    finally:
        probe.close()


def _close_all(
    sockets: list[zmq.Socket[bytes]],
    bound_files: dict[str, int],
    ipc_dir: str,
    suffix: str,
    pid: int,
) -> None:
    if os.getpid() != pid:
        return  # a forked child: these belong to the parent (pyzmq would not close them)
    for sock in sockets:
        try:
            sock.close(linger=0)
        except Exception:  # pragma: no cover - best effort at teardown
            pass
    # libzmq leaves the socket files of plain ipc binds behind; remove ours, unless
    # someone has bound the path again since (then it is a different inode).
    for path, inode in bound_files.items():
        try:
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        except OSError:
            pass
    REGISTRY.release(ipc_dir, suffix)


class SocketSet:
    """The sockets one thread uses to talk to the sidecar (created lazily per endpoint)."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], ipc_dir: str, suffix: str) -> None:
        self.context = context
        self.ipc_dir = ipc_dir
        self.suffix = suffix
        self.pid = os.getpid()
        self._push: dict[str, zmq.Socket[bytes]] = {}
        self._pull: dict[str, zmq.Socket[bytes]] = {}
        self._all: list[zmq.Socket[bytes]] = []
        self._bound_files: dict[str, int] = {}
        self._request_ids = itertools.count(1)
        self._finalizer = weakref.finalize(
            self, _close_all, self._all, self._bound_files, ipc_dir, suffix, self.pid
        )

    # addresses ---------------------------------------------------------------------------
    def request_address(self, name: str) -> str:
        return "ipc://" + ipc_path(self.ipc_dir, name)

    def reply_address(self, name: str) -> str:
        return "ipc://" + ipc_path(self.ipc_dir, f"{name}_{self.suffix}")

    def next_request_id(self) -> str:
        return f"{self.suffix}:{os.getpid()}:{next(self._request_ids)}"

    # lifecycle ---------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Close every socket (linger 0; ZeroMQ removes the bound socket files)."""
        self._finalizer()

    def _reply_socket(self, name: str) -> zmq.Socket[bytes]:
        existing = self._pull.get(name)
        if existing is not None:
            return existing
        path = ipc_path(self.ipc_dir, f"{name}_{self.suffix}")
        if len(os.fsencode(path)) > MAX_IPC_PATH:
            raise ValueError(
                f"IPC path {path!r} is longer than {MAX_IPC_PATH} bytes; use a shorter ipc_dir"
            )
        if os.path.exists(path) and held_by_live_socket(path):
            raise AddressInUse(
                f"reply address ipc://{path} is bound by another live socket; every process "
                "(and every client) sharing one sidecar needs its own thread_id "
                "(or pass thread_id=None to derive one from the process id)"
            )
        sock: zmq.Socket[bytes] = self.context.socket(zmq.PULL)
        self._all.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind("ipc://" + path)
        except zmq.ZMQError as exc:
            raise AddressInUse(f"cannot bind reply address ipc://{path}: {exc}") from exc
        try:
            self._bound_files[path] = os.stat(path).st_ino
        except OSError:  # pragma: no cover - abstract or vanished path
            pass
        self._pull[name] = sock
        return sock

    def _request_socket(self, name: str) -> zmq.Socket[bytes]:
        existing = self._push.get(name)
        if existing is not None:
            return existing
        sock: zmq.Socket[bytes] = self.context.socket(zmq.PUSH)
        self._all.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        # Queue messages only on completed connections: a request sent while no sidecar
        # listens fails (after the send timeout) instead of being delivered much later.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(self.request_address(name))
        self._push[name] = sock
        return sock

    # I/O ---------------------------------------------------------------------------------
    def send(self, name: str, body: bytes, deadline: float) -> None:
        """Send one request to endpoint ``name``, first dropping stale replies.

        Binds the reply socket for ``name`` if needed. Raises :class:`SidecarUnavailable`
        when no sidecar listens at the endpoint or it cannot take the message in time.
        """
        pull = self._reply_socket(name)
        while True:  # anything already waiting answers an earlier, abandoned request
            try:
                pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            log.debug("dropped a stale %s reply on %s", name, self.reply_address(name))
        path = ipc_path(self.ipc_dir, name)
        if not os.path.exists(path):
            raise SidecarUnavailable(
                f"no sidecar at {self.request_address(name)}: the socket file does not exist "
                "(is aft-sidecar running with this --ipc-dir?)"
            )
        push = self._request_socket(name)
        remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
        push.setsockopt(zmq.SNDTIMEO, remaining_ms)
        try:
            push.send(body, 0, copy=len(body) < 65536)
        except zmq.Again:
            raise SidecarUnavailable(
                f"could not deliver a request to {self.request_address(name)} within the "
                "timeout: no sidecar is accepting connections there"
            ) from None

    def recv(self, name: str, deadline: float, what: str | None = None) -> bytes:
        """Wait for one reply on endpoint ``name`` until ``deadline`` (``time.monotonic``)."""
        pull = self._reply_socket(name)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SidecarUnavailable(
                    f"no reply to {what or name} from the sidecar at "
                    f"{self.request_address(name)} in time (reply address "
                    f"{self.reply_address(name)})"
                )
            try:
                if pull.poll(timeout=max(1, int(remaining * 1000)), flags=zmq.POLLIN):
                    return pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                continue
            except zmq.ZMQError as exc:  # pragma: no cover - EINTR is retried by pyzmq
                if exc.errno == errno.EINTR:
                    continue
                raise
