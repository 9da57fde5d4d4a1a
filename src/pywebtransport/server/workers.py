"""Several worker processes serving one UDP port (``SO_REUSEPORT``).

Theory of operation: the supervisor (this process) spawns ``workers`` processes with
:mod:`multiprocessing`'s *spawn* start method. Each worker builds its application with
``app_factory(config)``, runs its own :class:`WebTransportServer` and binds the same address
with ``SO_REUSEPORT``. The kernel picks a socket for each datagram by a hash of the 4-tuple
(source and destination address and port), so all packets of one client address reach the
same worker, and that worker holds the connection's whole QUIC state; workers share nothing.
A client whose address changes (NAT rebinding, migration) hashes to another worker, which
does not know the connection and drops the packets (see ``docs/deploy.md``).

The first worker binds the requested port (0 picks one); the others bind the port it got.
Every worker reports ``ready`` over a pipe before the supervisor returns from :meth:`start`,
so the socket group is complete before the port is announced (the kernel's hash spreads over
the sockets present, and a socket joining later would move flows).

Workers are not restarted: a worker that exits on its own stops the whole group, so that a
service manager (systemd ``Restart=``, a container runtime) restarts the service as one unit.
Closing the supervisor's end of a worker's pipe (the supervisor died) stops that worker too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from ..config import ServerConfig
from ..exceptions import ServerError
from .app import ServerApp
from .server import WebTransportServer

__all__ = ["AppFactory", "WorkerGroup", "WorkerInfo", "serve_workers"]

logger = logging.getLogger(__name__)

#: Builds the application of one worker; must be a module-level function (it is pickled).
AppFactory = Callable[[ServerConfig], ServerApp]


@dataclass
class WorkerInfo:
    """One worker process as the supervisor sees it.

    Attributes:
        index: 0 .. workers-1.
        pid: the process id.
        port: the UDP port it listens on.
        exitcode: the process exit code once it exited, else None.
        stats: the worker's final ``server.stats`` (sent when it stops cleanly).
    """

    index: int
    pid: int
    port: int
    exitcode: int | None = None
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class _Worker:
    info: WorkerInfo
    process: BaseProcess
    conn: Connection
    replies: asyncio.Queue[tuple[Any, ...]]
    exited: asyncio.Event


class WorkerGroup:
    """Start, reconfigure and stop a group of worker processes sharing one UDP port.

    Args:
        app_factory: builds each worker's application from ``config``.
        config: the server configuration (``host`` and ``port`` say where to listen).
        workers: the number of worker processes, at least 1.
        start_timeout: seconds a worker may take to start listening.
    """

    def __init__(
        self,
        app_factory: AppFactory,
        *,
        config: ServerConfig,
        workers: int,
        start_timeout: float = 30.0,
    ) -> None:
        if workers < 1:
            raise ServerError(f"workers must be at least 1, got {workers}")
        if config.certificate is None and (config.certfile is None or config.keyfile is None):
            raise ServerError("a server needs certfile and keyfile, or certificate")
        self.app_factory = app_factory
        self.config = config
        self.count = workers
        self.start_timeout = start_timeout
        self._workers: list[_Worker] = []
        self._context = multiprocessing.get_context("spawn")
        self._stopping = False
        self._failed = asyncio.Event()

    def __repr__(self) -> str:
        alive = sum(1 for w in self._workers if not w.exited.is_set())
        return f"<WorkerGroup port={self.port} workers={self.count} alive={alive}>"

    @property
    def port(self) -> int | None:
        """The UDP port the workers listen on (None before :meth:`start`)."""
        return self._workers[0].info.port if self._workers else None

    @property
    def workers(self) -> list[WorkerInfo]:
        """The started workers."""
        return [w.info for w in self._workers]

    async def start(self) -> int:
        """Start every worker and wait until all listen; return the UDP port.

        Raises:
            ServerError: a worker could not start or listen (the others are stopped).
        """
        try:
            port = self.config.port
            for index in range(self.count):
                worker = await self._spawn(index, port)
                port = worker.info.port
        except BaseException:
            await self.stop()
            raise
        logger.info("%d workers listening on UDP port %d", self.count, port)
        return port

    async def _spawn(self, index: int, port: int) -> _Worker:
        ours, theirs = self._context.Pipe()
        config = self.config.update(port=port)
        process = self._context.Process(
            target=_worker_main,
            args=(self.app_factory, config, theirs, _LogSetup.of_this_process()),
            name=f"pywebtransport-worker-{index}",
            daemon=True,
        )
        process.start()
        theirs.close()
        assert process.pid is not None
        worker = _Worker(
            WorkerInfo(index=index, pid=process.pid, port=port),
            process,
            ours,
            asyncio.Queue(),
            asyncio.Event(),
        )
        self._workers.append(worker)
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable, worker)
        async with asyncio.timeout(self.start_timeout):
            reply = await worker.replies.get()
        if reply[0] != "ready":
            raise ServerError(f"worker {index} failed to start: {reply[1]}")
        worker.info.port = int(reply[1])
        return worker

    def _readable(self, worker: _Worker) -> None:
        try:
            message: tuple[Any, ...] = worker.conn.recv()
        except (EOFError, OSError):
            self._on_exit(worker)
            return
        if message[0] == "stats":
            worker.info.stats = dict(message[1])
        else:
            worker.replies.put_nowait(message)

    def _on_exit(self, worker: _Worker) -> None:
        # The pipe closed: the process is exiting; its sentinel turns readable once it has.
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.conn.fileno())
        worker.conn.close()
        loop.add_reader(worker.process.sentinel, self._on_reaped, worker)

    def _on_reaped(self, worker: _Worker) -> None:
        asyncio.get_running_loop().remove_reader(worker.process.sentinel)
        worker.process.join()
        worker.info.exitcode = worker.process.exitcode
        worker.exited.set()
        worker.replies.put_nowait(("exited", f"exit code {worker.info.exitcode}"))
        if not self._stopping:
            logger.warning("worker %d (pid %d) exited", worker.info.index, worker.info.pid)
            self._failed.set()

    async def reload_certificate(self, *, certfile: str, keyfile: str) -> None:
        """Make every worker use a new certificate for its new connections.

        Raises:
            ServerError: a worker refused the files (the workers that accepted them keep them).
        """
        for worker in self._workers:
            if worker.exited.is_set():
                continue
            worker.conn.send(("reload", certfile, keyfile))
            async with asyncio.timeout(self.start_timeout):
                reply = await worker.replies.get()
            if reply[0] != "reloaded":
                raise ServerError(f"worker {worker.info.index}: {reply[1]}")

    async def wait(self) -> bool:
        """Wait until a worker exits on its own (then stop the others) or :meth:`stop` ran.

        Returns:
            True when a worker exited on its own (a failure), False after a requested stop.
        """
        await self._failed.wait()
        failed = not self._stopping
        await self.stop()
        return failed

    async def stop(self) -> None:
        """Ask every worker to stop (SIGTERM) and wait until all exited. Idempotent."""
        self._stopping = True
        for worker in self._workers:
            if not worker.exited.is_set() and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGTERM)
        for worker in self._workers:
            await worker.exited.wait()
        self._failed.set()


async def serve_workers(
    app_factory: AppFactory,
    *,
    config: ServerConfig,
    workers: int,
    on_ready: Callable[[WorkerGroup], None] | None = None,
) -> bool:
    """Run ``workers`` processes serving ``config``'s port until SIGTERM or SIGINT.

    The signals are forwarded to the workers as SIGTERM; the call returns once all exited.

    Args:
        app_factory: builds each worker's application (a module-level function).
        config: the server configuration.
        workers: the number of worker processes.
        on_ready: called with the group once every worker listens (``group.port`` is known).

    Returns:
        True when a worker exited on its own (nothing restarts it), False after a signal.
    """
    group = WorkerGroup(app_factory, config=config, workers=workers)
    await group.start()
    if on_ready is not None:
        on_ready(group)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(group.stop()))
    try:
        return await group.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# ----------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class _LogSetup:
    """The supervisor's logging, as a spawned worker (which starts unconfigured) repeats it.

    Handlers cannot cross a process boundary; what does is the levels set on loggers and the
    format of the root logger's first handler. A worker given a configured root logs to its
    stderr (the supervisor's) in that format.
    """

    root_level: int
    levels: dict[str, int]
    configured: bool
    format: str | None
    datefmt: str | None

    @classmethod
    def of_this_process(cls) -> _LogSetup:
        root = logging.getLogger()
        levels = {
            name: each.level
            for name, each in list(logging.Logger.manager.loggerDict.items())
            if isinstance(each, logging.Logger) and each.level != logging.NOTSET
        }
        formatter = next((h.formatter for h in root.handlers if h.formatter is not None), None)
        return cls(
            root_level=root.level,
            levels=levels,
            configured=bool(root.handlers),
            format=None if formatter is None else formatter._fmt,
            datefmt=None if formatter is None else formatter.datefmt,
        )

    def apply(self) -> None:
        if self.configured:
            logging.basicConfig(format=self.format or logging.BASIC_FORMAT, datefmt=self.datefmt)
        logging.getLogger().setLevel(self.root_level)
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)


def _worker_main(
    app_factory: AppFactory, config: ServerConfig, conn: Connection, log_setup: _LogSetup
) -> None:
    """The worker process: serve until SIGTERM/SIGINT or until the supervisor is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor forwards a terminal's ^C
    log_setup.apply()
    try:
        asyncio.run(_worker(app_factory, config, conn))
    finally:
        conn.close()


async def _worker(app_factory: AppFactory, config: ServerConfig, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        server = WebTransportServer(config=config, app=app_factory(config))
        await server.listen(host=config.host, port=config.port, reuse_port=True)
    except (ServerError, OSError) as exc:
        conn.send(("error", str(exc)))
        return
    conn.send(("ready", int(server.local_address[1]), os.getpid()))
    loop.add_reader(conn.fileno(), _on_command, server, conn, stop)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(conn.fileno())
        await server.close()
        with contextlib.suppress(OSError):
            conn.send(("stats", server.stats))


def _on_command(server: WebTransportServer, conn: Connection, stop: asyncio.Event) -> None:
    try:
        command: tuple[Any, ...] = conn.recv()
    except (EOFError, OSError):  # the supervisor is gone
        stop.set()
        return
    if command[0] == "reload":
        try:
            server.reload_certificate(certfile=command[1], keyfile=command[2])
        except ServerError as exc:
            conn.send(("error", str(exc)))
        else:
            conn.send(("reloaded",))
