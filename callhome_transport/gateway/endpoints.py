"""The gateway's local endpoints: Unix sockets in the run directory, bound at
a staging name and published by an atomic rename (so a reload binds every
new endpoint before it changes anything)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..errors import EndpointError

__all__ = ["UnixEndpoint"]

log = logging.getLogger(__name__)


class UnixEndpoint:
    """A listening Unix socket whose connections go to ``handler``.

    It is bound at a staging name in the run directory and appears at
    ``path`` only with :meth:`publish` (an atomic rename), so that a reload
    binds every new endpoint before it changes anything.  :meth:`close`
    removes ``path`` only while it is still this socket's file.
    """

    _staging = itertools.count(1)

    def __init__(
        self, path: Path, mode: int, handler: Callable[[socket.socket], Awaitable[None]], *, staging_dir: Path
    ) -> None:
        self.path = path
        self.handler = handler
        # short (".new<N>" beside control.sock, whose length is checked), so it fits
        # a Unix socket address whenever the final path does
        self._staged: Path | None = staging_dir / f".new{next(self._staging)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                self._staged.unlink()
            self.sock.bind(str(self._staged))
            os.chmod(self._staged, mode)
            self._identity = _file_identity(self._staged)
            self.sock.listen(128)
            self.sock.setblocking(False)
        except OSError as exc:
            self.sock.close()
            raise EndpointError(path=str(path), reason=exc.strerror or str(exc)) from exc
        self.tasks: set[asyncio.Task[None]] = set()
        self.accept_task = asyncio.get_running_loop().create_task(self._accept())

    def publish(self) -> None:
        """Make the endpoint reachable at ``path`` (replacing whatever file was there)."""
        if self._staged is not None:
            os.replace(self._staged, self.path)
            self._staged = None

    def intact(self) -> bool:
        """Whether ``path`` is still this endpoint's socket file."""
        return self._staged is None and _file_identity(self.path) == self._identity

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:
                log.warning("accept on %s failed: %s", self.path, exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._run(conn))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, conn: socket.socket) -> None:
        try:
            await self.handler(conn)
        except Exception:
            log.exception("local connection on %s failed", self.path)
            conn.close()

    async def close(self, *, keep_sessions: bool = False) -> None:
        """Stop accepting; end the local sessions too unless ``keep_sessions``."""
        self.accept_task.cancel()
        sessions = [] if keep_sessions else list(self.tasks)
        for task in sessions:
            task.cancel()
        await asyncio.gather(self.accept_task, *sessions, return_exceptions=True)
        self.sock.close()
        for path in (self._staged, self.path):
            if path is not None and _file_identity(path) == self._identity:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISSOCK(st.st_mode) else None
