"""Streaming calls as Python iterators.

* :class:`Stream` — a server stream (pull/push progress, logs, stats,
  events, ...): iterate it; ``cancel()`` (or leaving a ``with`` block) ends
  it early without an error.
* :class:`ByteStream` — a stream of archive bytes (save, export, copy_from)
  with ``write_to()`` and ``read()``.
* :class:`ProcessSession` — a two-way stream to a process (exec, interactive
  attach): ``write()`` stdin, ``close_stdin()``, ``resize()``; iterate the
  output; ``wait()`` for the result.
"""

from __future__ import annotations

import collections
import os
import queue
from typing import IO, Any, Callable, Deque, Generic, Iterator, List, Optional, Tuple, TypeVar, Union

import grpc

from .errors import BerthError
from .types import ExecResult, LogEntry, PathStat, from_pb

T = TypeVar("T")

PathOrFile = Union[str, "os.PathLike[str]", IO[bytes]]


def stream_name(value: int) -> str:
    """"stdout" or "stderr" for a berth.gateway.v1.Stream value."""
    return {1: "stdout", 2: "stderr"}.get(int(value), "unspecified")


def log_entry(e: Any) -> LogEntry:
    return LogEntry(stream_name(e.stream), bytes(e.data), e.time)


def wait_open(call: Any) -> None:
    """Blocks until the daemon accepted a streaming call (its response
    headers arrived); raises the call's error when it refused it."""
    try:
        call.initial_metadata()
    except grpc.RpcError as e:
        raise BerthError.from_rpc(e) from None
    if call.done() and call.code() != grpc.StatusCode.OK:
        raise BerthError.from_rpc(call)


class Stream(Generic[T]):
    """The responses of a server-streaming call, converted to ``T``.

    Iterating reads the stream to its end; errors are :class:`BerthError`.
    ``cancel()`` ends it from the client side: an iteration in progress then
    stops without an error. Usable as a context manager (cancels on exit).
    """

    def __init__(self, call: Any, convert: Callable[[Any], Optional[T]]):
        self._call = call
        self._convert = convert
        self._cancelled = False
        self._pending: Deque[Any] = collections.deque()

    def _raw(self) -> Iterator[Any]:
        while self._pending:
            yield self._pending.popleft()
        try:
            for msg in self._call:
                yield msg
        except grpc.RpcError as e:
            if self._cancelled and e.code() == grpc.StatusCode.CANCELLED:
                return
            raise BerthError.from_rpc(e) from None

    def _first_raw(self) -> Optional[Any]:
        """Reads one message ahead (kept for the iteration)."""
        for msg in self._raw():
            self._pending.append(msg)
            return msg
        return None

    def __iter__(self) -> Iterator[T]:
        for msg in self._raw():
            item = self._convert(msg)
            if item is not None:
                yield item

    def cancel(self) -> None:
        """Ends the stream (the daemon sees the client go away)."""
        self._cancelled = True
        self._call.cancel()

    close = cancel

    def __enter__(self) -> "Stream[T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()


class ByteStream(Stream[bytes]):
    """A stream of data chunks (a tar archive)."""

    def write_to(self, dest: PathOrFile) -> int:
        """Writes every chunk to a path or a binary file; returns the byte count."""
        if isinstance(dest, (str, os.PathLike)):
            with open(dest, "wb") as f:
                return self.write_to(f)
        n = 0
        for chunk in self:
            dest.write(chunk)
            n += len(chunk)
        return n

    def read(self) -> bytes:
        """All the bytes, in memory."""
        return b"".join(self)


class CopyFromStream(ByteStream):
    """A tar stream of a path in a container; ``stat`` is the stat of that
    path (read when the copy starts)."""

    def __init__(self, call: Any):
        super().__init__(call, _copy_data)
        first = self._first_raw()
        if first is None or first.WhichOneof("payload") != "stat":
            raise BerthError(grpc.StatusCode.UNKNOWN, "copy stream did not start with the path's stat")
        self._pending.popleft()
        self.stat: PathStat = from_pb(PathStat, first.stat)


def _copy_data(msg: Any) -> Optional[bytes]:
    return bytes(msg.data) if msg.WhichOneof("payload") == "data" else None


class Attachment(Stream[LogEntry]):
    """The output of a container from the moment of :meth:`Client.attach`
    until it stops. Iterate for :class:`LogEntry` items; afterwards
    ``exit_code`` (and ``error``) hold the exit status."""

    def __init__(self, call: Any):
        super().__init__(call, self._item)
        self.exit_code: Optional[int] = None
        self.error: str = ""

    def _item(self, msg: Any) -> Optional[LogEntry]:
        kind = msg.WhichOneof("payload")
        if kind == "output":
            return log_entry(msg.output)
        if kind == "exit":
            self.exit_code = int(msg.exit.status_code)
            self.error = msg.exit.error
        return None

    def wait(self) -> Tuple[int, List[Tuple[str, bytes]]]:
        """Reads to the end: (exit code, [(stream, data), ...])."""
        out = [(e.stream, e.data) for e in self]
        if self.exit_code is None:
            raise BerthError(grpc.StatusCode.UNKNOWN, "attach stream ended without an exit status")
        return self.exit_code, out


_END = object()


class ProcessSession:
    """A two-way stream to a process: an exec (ContainerProcesses.Exec) or
    an interactive attach (ContainerProcesses.Attach).

    ``write(data)`` sends stdin, ``close_stdin()`` ends it, ``resize()``
    changes the terminal. Iterating yields the output as :class:`LogEntry`
    items until the process exits (or the client detached); then
    ``exit_code``, ``error`` and ``detached`` tell how it ended. ``wait()``
    reads to the end and returns an :class:`ExecResult`.
    """

    def __init__(self, method: Callable[..., Any], request_type: Any, start: Any, metadata: Any):
        self._request_type = request_type
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._queue.put(start)
        self._cancelled = False
        self._ended = False
        self.exec_id: str = ""
        self.exit_code: Optional[int] = None
        self.error: str = ""
        self.detached: bool = False
        self._call = method(self._requests(), metadata=metadata)
        self._responses = iter(self._call)
        self._pending: Deque[Any] = collections.deque()

    def _requests(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            yield item

    def _end_requests(self) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put(_END)

    def _next(self) -> Optional[Any]:
        if self._pending:
            return self._pending.popleft()
        try:
            return next(self._responses)
        except StopIteration:
            self._end_requests()
            return None
        except grpc.RpcError as e:
            self._end_requests()
            if self._cancelled and e.code() == grpc.StatusCode.CANCELLED:
                return None
            raise BerthError.from_rpc(e) from None

    def _open_exec(self) -> None:
        """Reads the exec ID, the first response: raises when the exec was
        refused (container not running, unknown, ...)."""
        msg = self._next()
        if msg is None:
            raise BerthError(grpc.StatusCode.UNKNOWN, "exec stream ended before the exec ID")
        if msg.WhichOneof("payload") == "exec_id":
            self.exec_id = msg.exec_id
        else:
            self._pending.append(msg)

    def _open_attach(self) -> None:
        try:
            wait_open(self._call)
        except BerthError:
            self._end_requests()
            raise

    def _send(self, **payload: Any) -> None:
        if self._ended:
            raise BerthError(grpc.StatusCode.FAILED_PRECONDITION, "the session has ended")
        self._queue.put(self._request_type(**payload))

    def write(self, data: bytes) -> None:
        """Sends bytes to the process's stdin (needs ``stdin=True``)."""
        self._send(stdin=bytes(data))

    def close_stdin(self) -> None:
        """Ends the process's stdin (it reads EOF)."""
        self._send(close_stdin=True)

    def resize(self, rows: int, cols: int) -> None:
        """Resizes the process's terminal (with ``tty=True``)."""
        from ._gen.berth.gateway.v1 import gateway_pb2 as pb

        self._send(resize=pb.ResizeRequest(rows=rows, cols=cols))

    def __iter__(self) -> Iterator[LogEntry]:
        while True:
            msg = self._next()
            if msg is None:
                return
            kind = msg.WhichOneof("payload")
            if kind == "output":
                yield log_entry(msg.output)
            elif kind == "exit":
                self.exit_code = int(msg.exit.status_code)
                self.error = msg.exit.error
            elif kind == "exec_id":
                self.exec_id = msg.exec_id
            elif kind == "detached":
                self.detached = True

    def wait(self) -> ExecResult:
        """Reads the output to the end: exit code (None when detached or
        run with ``detach``), stdout and stderr."""
        out: List[bytes] = []
        err: List[bytes] = []
        for e in self:
            (err if e.stream == "stderr" else out).append(e.data)
        return ExecResult(self.exit_code, b"".join(out), b"".join(err), self.error, self.exec_id)

    def cancel(self) -> None:
        """Ends the session from the client side (the process runs on)."""
        self._cancelled = True
        self._end_requests()
        self._call.cancel()

    close = cancel

    def __enter__(self) -> "ProcessSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()

    def __del__(self) -> None:
        # Never leave grpc's request thread waiting on the queue.
        try:
            self._end_requests()
        except Exception:
            pass
