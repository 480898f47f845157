"""A thin, typed Python client for berth's public API (berth.gateway.v1).

Every call is one RPC of the gateway (see proto/berth/gateway/v1/gateway.proto);
nothing is orchestrated here beyond what the RPCs do::

    from berth_client import Client

    with Client("unix:///run/berth/berth.sock") as c:
        image_id = c.import_image("rootfs.tar", "busybox:latest")
        cid = c.create("busybox", ["echo", "hi"])
        c.start(cid)
        assert c.wait(cid) == 0
        print(c.logs(cid))          # [("stdout", b"hi\\n")]
        c.remove(cid)

The generated gRPC modules live in ``berth_client._gen`` and are made by
``clients/python/generate.sh``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import IO, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

try:
    from berth_client._gen.berth.gateway.v1 import gateway_pb2 as pb
    from berth_client._gen.berth.gateway.v1 import gateway_pb2_grpc as pb_grpc
except ImportError as e:  # pragma: no cover - only without generated code
    raise ImportError(
        "berth_client's generated gRPC code is missing: run clients/python/generate.sh"
    ) from e

__all__ = [
    "Client",
    "BerthError",
    "NotFound",
    "AlreadyExists",
    "InvalidArgument",
    "Conflict",
    "Unavailable",
    "Image",
    "Container",
    "LogEntry",
    "Attachment",
    "DEFAULT_ADDRESS",
    "DEFAULT_NAMESPACE",
    "CHUNK_SIZE",
]

DEFAULT_ADDRESS = "unix:///run/berth/berth.sock"
DEFAULT_NAMESPACE = "default"
NAMESPACE_KEY = "berth-namespace"
EXIT_CODE_KEY = "berth-exit-code"
#: Size of the data messages of an image import.
CHUNK_SIZE = 256 * 1024

PathOrFile = Union[str, "os.PathLike[str]", IO[bytes]]


class BerthError(Exception):
    """An RPC failed. ``code`` is the grpc.StatusCode; ``exit_code`` is set
    when Start could not execute the command (127 not found, 126 not
    executable), like docker run's exit code."""

    def __init__(self, code: grpc.StatusCode, message: str, exit_code: Optional[int] = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @staticmethod
    def from_rpc(err: grpc.RpcError) -> "BerthError":
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        message = err.details() if hasattr(err, "details") else str(err)
        exit_code = None
        trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
        for key, value in trailers or ():
            if key == EXIT_CODE_KEY:
                try:
                    exit_code = int(value)
                except ValueError:
                    pass
        cls = _ERRORS.get(code, BerthError)
        return cls(code, message or "", exit_code)


class NotFound(BerthError):
    """No such container or image."""


class AlreadyExists(BerthError):
    """A name is already in use."""


class InvalidArgument(BerthError):
    """The request is malformed."""


class Conflict(BerthError):
    """The state forbids it (FailedPrecondition), e.g. an image in use."""


class Unavailable(BerthError):
    """The daemon (or a service behind it) cannot be reached."""


_ERRORS = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


@dataclass(frozen=True)
class Image:
    """One entry of :meth:`Client.images`."""

    id: str
    repo_tags: List[str]
    created: int
    size: int
    labels: Dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Container:
    """One entry of :meth:`Client.containers`."""

    id: str
    names: List[str]
    image: str
    image_id: str
    command: str
    created: int
    state: str
    exit_code: int
    started_at: str
    finished_at: str
    labels: Dict[str, str]
    ports: str


@dataclass(frozen=True)
class LogEntry:
    """A chunk of output: ``stream`` is "stdout" or "stderr"; ``time`` is
    RFC 3339 with nanoseconds."""

    stream: str
    data: bytes
    time: str


def _stream_name(value: int) -> str:
    if value == pb.STREAM_STDERR:
        return "stderr"
    if value == pb.STREAM_STDOUT:
        return "stdout"
    return "unspecified"


def _entry(e: "pb.LogEntry") -> LogEntry:
    return LogEntry(_stream_name(e.stream), bytes(e.data), e.time)


class Attachment:
    """The output of a container from the moment of :meth:`Client.attach`
    until it stops. Iterate for :class:`LogEntry` items; afterwards
    ``exit_code`` (and ``error``) hold the ExitStatus."""

    def __init__(self, call):
        self._call = call
        self.exit_code: Optional[int] = None
        self.error: str = ""

    def __iter__(self) -> Iterator[LogEntry]:
        try:
            for msg in self._call:
                kind = msg.WhichOneof("payload")
                if kind == "output":
                    yield _entry(msg.output)
                elif kind == "exit":
                    self.exit_code = int(msg.exit.status_code)
                    self.error = msg.exit.error
        except grpc.RpcError as e:
            raise BerthError.from_rpc(e) from None

    def wait(self) -> Tuple[int, List[Tuple[str, bytes]]]:
        """Reads to the end: (exit code, [(stream, data), ...])."""
        out = [(e.stream, e.data) for e in self]
        if self.exit_code is None:
            raise BerthError(grpc.StatusCode.UNKNOWN, "attach stream ended without an exit status")
        return self.exit_code, out

    def cancel(self) -> None:
        self._call.cancel()


def _channel_target(address: str) -> str:
    if address.startswith("unix:"):
        return address
    if address.startswith("/"):
        return "unix://" + address
    return address


class Client:
    """A connection to berthd's gateway.

    ``address``: ``unix:///path/to/berth.sock`` (or a plain path);
    ``namespace``: sent as ``berth-namespace`` metadata with every call;
    ``timeout``: default deadline in seconds for unary calls (None: none).
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        namespace: str = DEFAULT_NAMESPACE,
        timeout: Optional[float] = None,
    ):
        self.address = address
        self.namespace = namespace
        self.timeout = timeout
        self._channel = grpc.insecure_channel(_channel_target(address))
        self._images = pb_grpc.ImagesStub(self._channel)
        self._containers = pb_grpc.ContainersStub(self._channel)
        self._system = pb_grpc.SystemStub(self._channel)

    # -- plumbing ---------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _md(self) -> List[Tuple[str, str]]:
        return [(NAMESPACE_KEY, self.namespace)]

    def _unary(self, method, request, timeout: Optional[float] = None):
        try:
            return method(request, metadata=self._md(), timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise BerthError.from_rpc(e) from None

    # -- system -----------------------------------------------------------

    def ping(self) -> None:
        """Cheap liveness check; raises :class:`Unavailable` when down."""
        self._unary(self._system.Ping, pb.Empty())

    def version(self) -> Dict[str, str]:
        v = self._unary(self._system.Version, pb.Empty())
        return {
            "version": v.version,
            "api_version": v.api_version,
            "git_commit": v.git_commit,
            "os": v.os,
            "arch": v.arch,
            "kernel_version": v.kernel_version,
        }

    # -- images -----------------------------------------------------------

    def import_image(
        self,
        path_or_fileobj: PathOrFile,
        reference: str = "",
        changes: Sequence[str] = (),
        message: str = "",
        source: Optional[str] = None,
    ) -> str:
        """Imports a root filesystem tarball (plain or gzip), like
        ``docker import``; returns the image ID ("sha256:...")."""
        if isinstance(path_or_fileobj, (str, os.PathLike)):
            src = source if source is not None else os.fspath(path_or_fileobj)
            with open(path_or_fileobj, "rb") as f:
                return self._import(f, reference, changes, message, src)
        src = source if source is not None else "-"
        return self._import(path_or_fileobj, reference, changes, message, src)

    def _import(self, f: IO[bytes], reference, changes, message, source) -> str:
        header = pb.ImportHeader(
            reference=reference or "",
            changes=list(changes),
            message=message or "",
            source=source or "",
        )

        def requests() -> Iterator["pb.ImportRequest"]:
            yield pb.ImportRequest(header=header)
            while True:
                chunk = f.read(CHUNK_SIZE)
                if not chunk:
                    return
                yield pb.ImportRequest(data=bytes(chunk))

        resp = self._unary(self._images.Import, requests())
        return resp.id

    def images(self, all: bool = False) -> List[Image]:
        resp = self._unary(self._images.List, pb.ListImagesRequest(all=all))
        return [
            Image(i.id, list(i.repo_tags), i.created, i.size, dict(i.labels))
            for i in resp.images
        ]

    def inspect_image(self, ref: str) -> dict:
        """Docker-style inspect document (Id, RepoTags, Config, RootFS, ...)."""
        resp = self._unary(self._images.Inspect, pb.InspectImageRequest(reference=ref))
        return json.loads(resp.json)

    def tag(self, source: str, target: str) -> None:
        self._unary(self._images.Tag, pb.TagRequest(source=source, target=target))

    def remove_image(self, ref: str, force: bool = False) -> Dict[str, List[str]]:
        """Removes a name (or the image); returns {"untagged": [...], "deleted": [...]}."""
        resp = self._unary(self._images.Remove, pb.RemoveImageRequest(reference=ref, force=force))
        return {"untagged": list(resp.untagged), "deleted": list(resp.deleted)}

    # -- containers -------------------------------------------------------

    def create(
        self,
        image: str,
        cmd: Optional[Sequence[str]] = None,
        name: Optional[str] = None,
        env: Iterable[str] = (),
        entrypoint: Optional[Sequence[str]] = None,
        working_dir: str = "",
        user: str = "",
        hostname: str = "",
        auto_remove: bool = False,
        network_mode: str = "",
        labels: Optional[Dict[str, str]] = None,
        stop_signal: str = "",
        stop_timeout: Optional[int] = None,
    ) -> str:
        """Creates a container; returns its full ID. ``cmd``/``entrypoint``
        None use the image's; an empty ``entrypoint`` clears it."""
        req = pb.CreateContainerRequest(
            name=name or "",
            image=image,
            env=list(env),
            working_dir=working_dir,
            user=user,
            hostname=hostname,
            auto_remove=auto_remove,
            network_mode=network_mode,
            labels=dict(labels or {}),
            stop_signal=stop_signal,
        )
        if isinstance(cmd, str):
            raise TypeError("cmd must be a list of strings, not a string")
        if cmd is not None:
            req.cmd.values.extend(cmd)
            req.cmd.SetInParent()
        if entrypoint is not None:
            req.entrypoint.values.extend(entrypoint)
            req.entrypoint.SetInParent()
        if stop_timeout is not None:
            req.stop_timeout = stop_timeout
        resp = self._unary(self._containers.Create, req)
        return resp.id

    def start(self, id: str) -> None:
        """Starts a container. A command that cannot be run raises
        :class:`Conflict` with ``exit_code`` 127 or 126."""
        self._unary(self._containers.Start, pb.ContainerRef(id=id))

    def stop(self, id: str, timeout: Optional[int] = None) -> None:
        req = pb.StopContainerRequest(id=id)
        if timeout is not None:
            req.timeout = timeout
        self._unary(self._containers.Stop, req)

    def kill(self, id: str, signal: str = "") -> None:
        """Sends ``signal`` (name or number; default SIGKILL)."""
        self._unary(self._containers.Kill, pb.KillContainerRequest(id=id, signal=signal))

    def wait(self, id: str, condition: str = "not-running", timeout: Optional[float] = None) -> int:
        """Blocks until the container meets ``condition`` ("not-running",
        "next-exit" or "removed"); returns its exit code."""
        resp = self._unary(
            self._containers.Wait, pb.WaitContainerRequest(id=id, condition=condition), timeout
        )
        if resp.error:
            raise BerthError(grpc.StatusCode.UNKNOWN, resp.error)
        return int(resp.status_code)

    def remove(self, id: str, force: bool = False, volumes: bool = False) -> None:
        self._unary(
            self._containers.Remove,
            pb.RemoveContainerRequest(id=id, force=force, volumes=volumes),
        )

    def containers(self, all: bool = False) -> List[Container]:
        resp = self._unary(self._containers.List, pb.ListContainersRequest(all=all))
        return [
            Container(
                c.id,
                list(c.names),
                c.image,
                c.image_id,
                c.command,
                c.created,
                c.state,
                int(c.exit_code),
                c.started_at,
                c.finished_at,
                dict(c.labels),
                c.ports,
            )
            for c in resp.containers
        ]

    def inspect(self, id: str) -> dict:
        """Docker-style inspect document (Id, Name, State, Config, ...)."""
        resp = self._unary(self._containers.Inspect, pb.ContainerRef(id=id))
        return json.loads(resp.json)

    def logs_iter(
        self,
        id: str,
        follow: bool = False,
        tail: int = -1,
        stdout: bool = True,
        stderr: bool = True,
    ) -> Iterator[LogEntry]:
        """Stored output (``tail`` lines from the end, -1 all); with
        ``follow`` keeps streaming until the container stops."""
        req = pb.LogsRequest(id=id, follow=follow, stdout=stdout, stderr=stderr, tail=tail)
        try:
            for e in self._containers.Logs(req, metadata=self._md()):
                yield _entry(e)
        except grpc.RpcError as e:
            raise BerthError.from_rpc(e) from None

    def logs(self, id: str, tail: int = -1, stdout: bool = True, stderr: bool = True) -> List[Tuple[str, bytes]]:
        """The stored output as [(stream, data), ...], stream "stdout" or "stderr"."""
        return [(e.stream, e.data) for e in self.logs_iter(id, False, tail, stdout, stderr)]

    def attach(self, id: str, stdout: bool = True, stderr: bool = True) -> Attachment:
        """Opens the container's output stream and returns once the daemon
        has accepted it, so a following :meth:`start` loses no output."""
        call = self._containers.Attach(
            pb.AttachRequest(id=id, stdout=stdout, stderr=stderr), metadata=self._md()
        )
        try:
            call.initial_metadata()  # blocks until the response headers arrive
        except grpc.RpcError as e:
            raise BerthError.from_rpc(e) from None
        # A call that failed at once reports it through its code.
        if call.done() and call.code() != grpc.StatusCode.OK:
            raise BerthError.from_rpc(call)
        return Attachment(call)

