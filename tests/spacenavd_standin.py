"""A stand-in spacenavd for the tests: the daemon's side of its UNIX-socket protocol (see
fosp_teleop.spacemouse), v0 and v1, with device events; it sends the events a test scripts."""

from __future__ import annotations

import contextlib
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from fosp_teleop.spacemouse import (  # the protocol the client speaks
    EVENT_SIZE,
    FLOAT_STRUCT,
    MAX_PROTO_VER,
    WORD_STRUCT,
    Event,
    MotionEvent,
    _is_handshake_reply,
    handshake_word,
    pack_event,
)


@dataclass
class _StandInClient:
    sock: socket.socket
    protocol: int = 0
    sensitivity: float = 1.0
    inbox: bytearray = field(default_factory=bytearray)
    words: list[int] = field(default_factory=list)  # v0 words received, as raw int32
    requests: list[bytes] = field(default_factory=list)  # v1 request packets received
    lock: threading.Lock = field(default_factory=threading.Lock)


class SpacenavdStandIn:
    """A socket server that behaves like spacenavd towards its clients, for tests.

    It listens on ``path`` (use a temp dir), answers the protocol handshake like
    ``proto_unix.c`` (or, with ``protocol=0``, ignores it like a pre-v1 daemon), applies the
    client's v0 sensitivity, and sends scripted events in the daemon's wire format.
    """

    def __init__(self, path: str | os.PathLike[str], *, protocol: int = MAX_PROTO_VER) -> None:
        self.path = str(path)
        self.protocol = protocol
        self.clients: list[_StandInClient] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(8)
        self._wake_r, self._wake_w = os.pipe()
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="spacenavd-stand-in",
                                        daemon=True)
        self._thread.start()

    # -- server loop (daemon side of proto_unix.c) --

    def _serve(self) -> None:
        while self._running:
            with self._lock:
                socks = [c.sock for c in self.clients]
            readable, _, _ = select.select([self._listener, self._wake_r, *socks], [], [])
            if self._wake_r in readable:
                os.read(self._wake_r, 64)
            if self._listener in readable and self._running:
                conn, _ = self._listener.accept()
                with self._changed:
                    self.clients.append(_StandInClient(conn))
                    self._changed.notify_all()
            for client in [c for c in self._snapshot() if c.sock in readable]:
                self._read_client(client)

    def _snapshot(self) -> list[_StandInClient]:
        with self._lock:
            return list(self.clients)

    def _read_client(self, client: _StandInClient) -> None:
        try:
            data = client.sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.inbox += data
        while True:
            # v0 clients send 4-byte words; after the handshake, v1 requests are 32 bytes.
            size = WORD_STRUCT.size if client.protocol == 0 else EVENT_SIZE
            if len(client.inbox) < size:
                break
            chunk = bytes(client.inbox[:size])
            del client.inbox[:size]
            if client.protocol == 0:
                self._handle_v0_word(client, chunk)
            else:
                client.requests.append(chunk)
        with self._changed:
            self._changed.notify_all()

    def _handle_v0_word(self, client: _StandInClient, chunk: bytes) -> None:
        (word,) = WORD_STRUCT.unpack(chunk)
        client.words.append(word)
        if _is_handshake_reply(word) and self.protocol >= 1:
            client.protocol = min(word & 0xFF, MAX_PROTO_VER)
            with client.lock:
                client.sock.sendall(WORD_STRUCT.pack(handshake_word(client.protocol)))
            return
        # Protocol v0: the only thing a client sends is a float sensitivity. A pre-v1 daemon
        # takes the handshake word this way too (it is a NaN, which we refuse to store).
        (value,) = FLOAT_STRUCT.unpack(chunk)
        if math.isfinite(value):
            client.sensitivity = value

    def _drop(self, client: _StandInClient) -> None:
        with self._changed:
            if client in self.clients:
                self.clients.remove(client)
            self._changed.notify_all()
        client.sock.close()

    # -- test-facing API --

    def wait_for(self, predicate: Callable[[list[_StandInClient]], bool],
                 timeout: float = 5.0) -> list[_StandInClient]:
        """Block until ``predicate(clients)`` holds; re-checked whenever a client acts."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.clients), timeout):
                raise TimeoutError(f"stand-in: condition not met within {timeout} s "
                                   f"({len(self.clients)} clients)")
            return list(self.clients)

    def wait_for_clients(self, n: int = 1, timeout: float = 5.0) -> list[_StandInClient]:
        """Block until ``n`` clients are connected (accepted by the server thread)."""
        return self.wait_for(lambda cs: len(cs) >= n, timeout)

    def send_raw(self, data: bytes) -> None:
        """Send bytes verbatim to every client (for malformed or foreign packets)."""
        for client in self._snapshot():
            with client.lock, contextlib.suppress(BrokenPipeError, ConnectionResetError):
                client.sock.sendall(data)

    def send(self, event: Event) -> None:
        """Send one event to every client, scaled by its sensitivity like send_uevent()."""
        for client in self._snapshot():
            scaled = event
            if isinstance(event, MotionEvent) and client.sensitivity != 1.0:
                # (int)((float)axis * sens), truncating like the daemon's C cast.
                axes = [int(np.float32(v) * np.float32(client.sensitivity)) for v in event.raw]
                scaled = MotionEvent(*axes, period=event.period)
            # The daemon ignores write errors too; a vanished client is dropped on its EOF.
            with client.lock, contextlib.suppress(BrokenPipeError, ConnectionResetError):
                client.sock.sendall(pack_event(scaled))

    def play(self, events: Iterable[Event], interval: float = 0.0) -> None:
        """Send a scripted sequence, ``interval`` seconds apart."""
        for i, event in enumerate(events):
            if i and interval:
                time.sleep(interval)
            self.send(event)

    def disconnect_all(self) -> None:
        """End every connection, as a daemon that stops does."""
        for client in self._snapshot():
            # Only shutdown() here: the server thread sees EOF and closes the socket itself
            # (closing it under that thread's select() would race with it).
            with contextlib.suppress(OSError):
                client.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._running = False
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5.0)
        for client in self._snapshot():
            client.sock.close()
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> SpacenavdStandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


