"""The client: one method (at least) per RPC of berth.gateway.v1.

Each wrapper is marked with :func:`rpc`, naming the RPC it calls; the test
``tests/test_api_coverage.py`` checks against the generated service
descriptors that every RPC has a wrapper and that the wrapper takes every
field of the request.
"""

from __future__ import annotations

import json
import os
from typing import (
    IO,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import grpc

from ._gen.berth.gateway.v1 import gateway_pb2 as pb
from ._gen.berth.gateway.v1 import gateway_pb2_grpc as pb_grpc
from .errors import BerthError
from .streams import (
    Attachment,
    ByteStream,
    CopyFromStream,
    ProcessSession,
    Stream,
    log_entry,
    wait_open,
)
from .types import (
    Change,
    Container,
    ContainerId,
    ContainerStats,
    DiskUsage,
    Event,
    ExecResult,
    HistoryEntry,
    Image,
    ImageId,
    ImagePruneReport,
    Info,
    LoadedImage,
    LogEntry,
    LoginResult,
    MountSpec,
    Network,
    Progress,
    PruneReport,
    RegistryAuth,
    RemovedImage,
    Resources,
    SearchResult,
    TopResult,
    VersionInfo,
    Volume,
    fill_pb,
    from_pb,
)

DEFAULT_ADDRESS = "unix:///run/berth/berth.sock"
DEFAULT_NAMESPACE = "default"
#: Metadata key that scopes every request to a namespace.
NAMESPACE_KEY = "berth-namespace"
#: Size of the data messages the client sends (import, load, copy_to).
CHUNK_SIZE = 256 * 1024
#: The proto package of the public API.
PACKAGE = "berth.gateway.v1"

F = TypeVar("F", bound=Callable[..., Any])

#: Data to send: a path, a binary file, bytes, or an iterable of byte chunks.
DataSource = Union[str, "os.PathLike[str]", IO[bytes], bytes, bytearray, memoryview, Iterable[bytes]]
#: docker-style filters: {"label": ["a=b", "c"], "dangling": "true"}.
Filters = Optional[Mapping[str, Union[str, Sequence[str]]]]


def rpc(service: str, method: str) -> Callable[[F], F]:
    """Marks a Client method as the wrapper of ``service/method``."""

    def mark(fn: F) -> F:
        fn.__berth_rpc__ = f"{PACKAGE}.{service}/{method}"  # type: ignore[attr-defined]
        return fn

    return mark


def parse_address(address: str) -> Tuple[str, str]:
    """("unix", "unix:///path") or ("tcp", "host:port") for a berth address:
    ``unix:///path``, a plain absolute path, or ``tcp://host:port``."""
    if address.startswith("unix://"):
        if not address[len("unix://") :].startswith("/"):
            raise ValueError(f"{address!r}: a unix address needs an absolute path (unix:///path)")
        return "unix", address
    if address.startswith("/"):
        return "unix", "unix://" + address
    if address.startswith("tcp://"):
        hostport = address[len("tcp://") :].rstrip("/")
        host, sep, port = hostport.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{address!r}: a tcp address needs a host and a port (tcp://HOST:PORT)")
        return "tcp", hostport
    raise ValueError(f"{address!r}: berth addresses are unix:///path or tcp://HOST:PORT")


def _read(path: Union[str, "os.PathLike[str]"], what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read {what} {os.fspath(path)}: {e.strerror}") from None


def _chunks(source: DataSource) -> Iterator[bytes]:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            yield from _chunks(f)
        return
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        for i in range(0, len(data), CHUNK_SIZE):
            yield data[i : i + CHUNK_SIZE]
        return
    read = getattr(source, "read", None)
    if read is not None:
        while True:
            chunk = read(CHUNK_SIZE)
            if not chunk:
                return
            yield bytes(chunk)
    for chunk in source:  # type: ignore[union-attr]
        if chunk:
            yield bytes(chunk)


def _filters(target: Any, filters: Filters) -> None:
    for key, values in (filters or {}).items():
        if isinstance(values, str):
            values = [values]
        target[key].values.extend(values)


def _auth(auth: Union[RegistryAuth, Mapping[str, str], None]) -> Optional[pb.RegistryAuth]:
    return None if auth is None else fill_pb(pb.RegistryAuth(), auth)  # type: ignore[return-value]


def _prune(resp: Any) -> PruneReport:
    return PruneReport(list(resp.deleted), int(getattr(resp, "space_reclaimed", 0)))


def _env_true(name: str) -> bool:
    """An environment flag as the berth CLI reads it (unset, "", 0, false,
    no, off, n and f are false)."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off", "n", "f")


class Client:
    """A connection to berthd's gateway.

    ``address``: ``unix:///path/to/berth.sock`` (or a plain path), or
    ``tcp://HOST:PORT``; None takes ``$BERTH_HOST``, then
    ``unix:///run/berth/berth.sock``.

    Over TCP the connection is mutual TLS when any TLS file is given:
    ``tls_ca_cert`` (PEM of the CA that signed the daemon's certificate;
    None uses the system's roots), ``tls_cert`` and ``tls_key`` (the
    client's certificate and key, PEM, required by a daemon started with
    ``--tlscacert``). ``tls=True`` asks for TLS without files;
    ``tls_server_name`` overrides the name checked in the daemon's
    certificate. Without TLS a tcp address is plain TCP (the daemon must
    run with ``--insecure-tcp``). With no TLS argument and
    ``$BERTH_TLS_VERIFY`` set, the files are ``ca.pem``, ``cert.pem`` and
    ``key.pem`` in ``$BERTH_CERT_PATH`` (default ``~/.berth``), as for the
    berth CLI.

    ``namespace``: sent as ``berth-namespace`` with every call (None:
    ``$BERTH_NAMESPACE`` or "default"); ``timeout``: default deadline in
    seconds of unary calls (None: none); ``metadata``: extra metadata for
    every call, e.g. ``[("traceparent", "00-...-01")]``.
    """

    def __init__(
        self,
        address: Optional[str] = None,
        namespace: Optional[str] = None,
        timeout: Optional[float] = None,
        *,
        tls: Optional[bool] = None,
        tls_ca_cert: Optional[Union[str, "os.PathLike[str]"]] = None,
        tls_cert: Optional[Union[str, "os.PathLike[str]"]] = None,
        tls_key: Optional[Union[str, "os.PathLike[str]"]] = None,
        tls_server_name: Optional[str] = None,
        metadata: Sequence[Tuple[str, str]] = (),
        options: Sequence[Tuple[str, Any]] = (),
    ):
        if address is None:
            address = os.environ.get("BERTH_HOST") or DEFAULT_ADDRESS
        if namespace is None:
            namespace = os.environ.get("BERTH_NAMESPACE") or DEFAULT_NAMESPACE
        self.address = address
        self.namespace = namespace
        self.timeout = timeout
        self._metadata = list(metadata)
        kind, target = parse_address(address)
        if tls is None and tls_ca_cert is None and tls_cert is None and tls_key is None \
                and _env_true("BERTH_TLS_VERIFY"):
            # As the berth CLI: ca.pem, cert.pem and key.pem from
            # $BERTH_CERT_PATH (default ~/.berth).
            cert_dir = os.environ.get("BERTH_CERT_PATH") or os.path.join(os.path.expanduser("~"), ".berth")
            tls_ca_cert, tls_cert, tls_key = (os.path.join(cert_dir, n) for n in ("ca.pem", "cert.pem", "key.pem"))
        files = (tls_ca_cert, tls_cert, tls_key)
        use_tls = tls if tls is not None else any(f is not None for f in files)
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together (the client's certificate and its key)")
        opts = list(options)
        if tls_server_name:
            opts.append(("grpc.ssl_target_name_override", tls_server_name))
        if use_tls:
            if kind != "tcp":
                raise ValueError(f"TLS applies to tcp:// addresses, not {address!r}")
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca_cert, "tls_ca_cert") if tls_ca_cert is not None else None,
                private_key=_read(tls_key, "tls_key") if tls_key is not None else None,
                certificate_chain=_read(tls_cert, "tls_cert") if tls_cert is not None else None,
            )
            self._channel = grpc.secure_channel(target, creds, options=opts)
        else:
            self._channel = grpc.insecure_channel(target, options=opts)
        self._init_stubs()

    def _init_stubs(self) -> None:
        self._images = pb_grpc.ImagesStub(self._channel)
        self._containers = pb_grpc.ContainersStub(self._channel)
        self._system = pb_grpc.SystemStub(self._channel)
        self._processes = pb_grpc.ContainerProcessesStub(self._channel)
        self._files = pb_grpc.ContainerFilesStub(self._channel)
        self._events = pb_grpc.EventsStub(self._channel)
        self._volumes = pb_grpc.VolumesStub(self._channel)
        self._networks = pb_grpc.NetworksStub(self._channel)

    # -- plumbing -------------------------------------------------------------

    def with_namespace(self, namespace: str) -> "Client":
        """A client for another namespace on the same connection (closing
        either closes the connection)."""
        other = object.__new__(Client)
        other.__dict__.update(self.__dict__)
        other.namespace = namespace
        return other

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _md(self) -> List[Tuple[str, str]]:
        return [(NAMESPACE_KEY, self.namespace), *self._metadata]

    def _unary(self, method: Any, request: Any, timeout: Optional[float] = None) -> Any:
        try:
            return method(request, metadata=self._md(), timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise BerthError.from_rpc(e) from None

    def _stream(self, method: Any, request: Any, convert: Callable[[Any], Any], open: bool = False) -> "Stream[Any]":
        call = method(request, metadata=self._md())
        if open:
            wait_open(call)
        return Stream(call, convert)

    # -- System ---------------------------------------------------------------

    @rpc("System", "Ping")
    def ping(self) -> None:
        """Cheap liveness check; raises :class:`Unavailable` when down."""
        self._unary(self._system.Ping, pb.Empty())

    @rpc("System", "Version")
    def version(self) -> VersionInfo:
        return from_pb(VersionInfo, self._unary(self._system.Version, pb.Empty()))

    @rpc("System", "Info")
    def info(self) -> Info:
        """What the engine runs and on what (docker info)."""
        return from_pb(Info, self._unary(self._system.Info, pb.Empty()))

    @rpc("System", "DiskUsage")
    def disk_usage(self) -> DiskUsage:
        """Disk usage of images, containers and volumes (docker system df)."""
        return from_pb(DiskUsage, self._unary(self._system.DiskUsage, pb.Empty()))

    # -- Images ---------------------------------------------------------------

    @rpc("Images", "Import")
    def import_image(
        self,
        path_or_fileobj: Optional[DataSource] = None,
        reference: str = "",
        changes: Sequence[str] = (),
        message: str = "",
        source: Optional[str] = None,
        url: str = "",
    ) -> ImageId:
        """Imports a root filesystem tarball (plain or gzip), like ``docker
        import``, from a path, file, bytes or chunks, or (``url``) fetched
        by the daemon. Returns the image ID ("sha256:...") with the
        normalised ``.reference``."""
        if url:
            if path_or_fileobj is not None:
                raise ValueError("give either data or a url to import, not both")
            data: Iterable[bytes] = ()
            src = source if source is not None else url
        elif path_or_fileobj is None:
            raise ValueError("import_image needs a tarball (path, file, bytes) or a url")
        else:
            data = _chunks(path_or_fileobj)
            if source is not None:
                src = source
            elif isinstance(path_or_fileobj, (str, os.PathLike)):
                src = os.fspath(path_or_fileobj)
            else:
                src = "-"
        header = pb.ImportHeader(
            reference=reference or "", changes=list(changes), message=message or "", source=src, url=url
        )

        def requests() -> Iterator[pb.ImportRequest]:
            yield pb.ImportRequest(header=header)
            for chunk in data:
                yield pb.ImportRequest(data=chunk)

        resp = self._unary(self._images.Import, requests())
        return ImageId(resp.id, resp.reference)

    @rpc("Images", "List")
    def images(self, all: bool = False) -> List[Image]:
        resp = self._unary(self._images.List, pb.ListImagesRequest(all=all))
        return [from_pb(Image, i) for i in resp.images]

    @rpc("Images", "Inspect")
    def inspect_image(self, reference: str) -> Dict[str, Any]:
        """Docker-style inspect document (Id, RepoTags, Config, RootFS, ...)."""
        resp = self._unary(self._images.Inspect, pb.InspectImageRequest(reference=reference))
        return json.loads(resp.json)

    @rpc("Images", "Tag")
    def tag(self, source: str, target: str) -> None:
        self._unary(self._images.Tag, pb.TagRequest(source=source, target=target))

    @rpc("Images", "Remove")
    def remove_image(self, reference: str, force: bool = False) -> RemovedImage:
        """Removes a name (or the image, by ID or with its last name)."""
        resp = self._unary(self._images.Remove, pb.RemoveImageRequest(reference=reference, force=force))
        return RemovedImage(list(resp.untagged), list(resp.deleted))

    @rpc("Images", "Pull")
    def pull(
        self,
        reference: str,
        platform: str = "",
        auth: Union[RegistryAuth, Mapping[str, str], None] = None,
        all_tags: bool = False,
    ) -> Stream[Progress]:
        """Pulls an image; iterate for the progress, the last item carries
        the manifest ``digest``."""
        req = pb.PullRequest(reference=reference, platform=platform, auth=_auth(auth), all_tags=all_tags)
        return self._stream(self._images.Pull, req, lambda m: from_pb(Progress, m))

    @rpc("Images", "Push")
    def push(self, reference: str, auth: Union[RegistryAuth, Mapping[str, str], None] = None) -> Stream[Progress]:
        """Pushes an image (its name names the registry); iterate for the
        progress, the last item carries the manifest ``digest`` and ``size``."""
        req = pb.PushRequest(reference=reference, auth=_auth(auth))
        return self._stream(self._images.Push, req, lambda m: from_pb(Progress, m))

    @rpc("Images", "Login")
    def login(self, server: str = "", auth: Union[RegistryAuth, Mapping[str, str], None] = None) -> LoginResult:
        """Checks credentials against a registry; nothing is stored."""
        resp = self._unary(self._images.Login, pb.LoginRequest(server=server, auth=_auth(auth)))
        return from_pb(LoginResult, resp)

    @rpc("Images", "Search")
    def search(
        self, term: str, limit: int = 0, auth: Union[RegistryAuth, Mapping[str, str], None] = None
    ) -> List[SearchResult]:
        resp = self._unary(self._images.Search, pb.SearchRequest(term=term, limit=limit, auth=_auth(auth)))
        return [from_pb(SearchResult, r) for r in resp.results]

    @rpc("Images", "Save")
    def save(self, references: Union[str, Sequence[str]]) -> ByteStream:
        """A tar archive of images (docker save): iterate the chunks, or
        ``.write_to(path)``."""
        refs = [references] if isinstance(references, str) else list(references)
        call = self._images.Save(pb.SaveRequest(references=refs), metadata=self._md())
        return ByteStream(call, lambda m: bytes(m.data))

    @rpc("Images", "Load")
    def load(self, source: DataSource) -> List[LoadedImage]:
        """Reads images from a tar archive (docker load): a path, a file,
        bytes or chunks."""
        reqs = (pb.LoadRequest(data=c) for c in _chunks(source))
        resp = self._unary(self._images.Load, reqs)
        return [from_pb(LoadedImage, i) for i in resp.images]

    @rpc("Images", "History")
    def history(self, reference: str) -> List[HistoryEntry]:
        resp = self._unary(self._images.History, pb.HistoryRequest(reference=reference))
        return [from_pb(HistoryEntry, e) for e in resp.entries]

    @rpc("Images", "Prune")
    def prune_images(self, filters: Filters = None) -> ImagePruneReport:
        """Removes dangling images (with ``{"dangling": "false"}`` every
        unused one)."""
        req = pb.PruneImagesRequest()
        _filters(req.filters, filters)
        return from_pb(ImagePruneReport, self._unary(self._images.Prune, req))

    # -- Containers -----------------------------------------------------------

    @rpc("Containers", "Create")
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
        labels: Optional[Mapping[str, str]] = None,
        stop_signal: str = "",
        stop_timeout: Optional[int] = None,
        *,
        tty: bool = False,
        open_stdin: bool = False,
        stdin_once: bool = False,
        restart_policy: str = "",
        init: bool = False,
        read_only: bool = False,
        log_opts: Optional[Mapping[str, str]] = None,
        resources: Union[Resources, Mapping[str, Any], None] = None,
        oom_score_adj: int = 0,
        binds: Sequence[str] = (),
        mounts: Sequence[Union[MountSpec, Mapping[str, Any]]] = (),
        tmpfs: Optional[Mapping[str, str]] = None,
        volumes_from: Sequence[str] = (),
        publish: Sequence[str] = (),
        publish_all: bool = False,
        expose: Sequence[str] = (),
        ipv4_address: str = "",
        network_aliases: Sequence[str] = (),
        dns: Sequence[str] = (),
        dns_search: Sequence[str] = (),
        dns_options: Sequence[str] = (),
        extra_hosts: Sequence[str] = (),
        links: Sequence[str] = (),
    ) -> ContainerId:
        """Creates a container; returns its full ID (with ``.warnings``).
        ``cmd``/``entrypoint`` None use the image's; an empty
        ``entrypoint`` clears it. The other arguments are the fields of
        CreateContainerRequest (docs/api.md)."""
        for what, value in (("cmd", cmd), ("entrypoint", entrypoint)):
            if isinstance(value, str):
                raise TypeError(f"{what} must be a list of strings, not a string")
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
            tty=tty,
            open_stdin=open_stdin,
            stdin_once=stdin_once,
            restart_policy=restart_policy,
            init=init,
            read_only=read_only,
            log_opts=dict(log_opts or {}),
            oom_score_adj=oom_score_adj,
            binds=list(binds),
            tmpfs=dict(tmpfs or {}),
            volumes_from=list(volumes_from),
            publish=list(publish),
            publish_all=publish_all,
            expose=list(expose),
            ipv4_address=ipv4_address,
            network_aliases=list(network_aliases),
            dns=list(dns),
            dns_search=list(dns_search),
            dns_options=list(dns_options),
            extra_hosts=list(extra_hosts),
            links=list(links),
        )
        if cmd is not None:
            req.cmd.values.extend(cmd)
            req.cmd.SetInParent()
        if entrypoint is not None:
            req.entrypoint.values.extend(entrypoint)
            req.entrypoint.SetInParent()
        if stop_timeout is not None:
            req.stop_timeout = stop_timeout
        if resources is not None:
            req.resources.SetInParent()
            fill_pb(req.resources, resources)
        for m in mounts:
            fill_pb(req.mounts.add(), m)
        resp = self._unary(self._containers.Create, req)
        return ContainerId(resp.id, list(resp.warnings))

    @rpc("Containers", "Start")
    def start(self, id: str) -> None:
        """Starts a container. A command that cannot be run raises
        :class:`Conflict` with ``exit_code`` 127 or 126."""
        self._unary(self._containers.Start, pb.ContainerRef(id=id))

    @rpc("Containers", "Stop")
    def stop(self, id: str, timeout: Optional[int] = None) -> None:
        """SIGTERM (or the stop signal), SIGKILL after ``timeout`` seconds."""
        req = pb.StopContainerRequest(id=id)
        if timeout is not None:
            req.timeout = timeout
        self._unary(self._containers.Stop, req)

    @rpc("Containers", "Restart")
    def restart(self, id: str, timeout: Optional[int] = None) -> None:
        req = pb.StopContainerRequest(id=id)
        if timeout is not None:
            req.timeout = timeout
        self._unary(self._containers.Restart, req)

    @rpc("Containers", "Kill")
    def kill(self, id: str, signal: str = "") -> None:
        """Sends ``signal`` (name or number; default SIGKILL)."""
        self._unary(self._containers.Kill, pb.KillContainerRequest(id=id, signal=str(signal)))

    @rpc("Containers", "Wait")
    def wait(self, id: str, condition: str = "not-running", timeout: Optional[float] = None) -> int:
        """Blocks until the container meets ``condition`` ("not-running",
        "next-exit" or "removed"); returns its exit code. ``timeout`` is
        the call's deadline in seconds."""
        resp = self._unary(self._containers.Wait, pb.WaitContainerRequest(id=id, condition=condition), timeout)
        if resp.error:
            raise BerthError(grpc.StatusCode.UNKNOWN, resp.error)
        return int(resp.status_code)

    @rpc("Containers", "Remove")
    def remove(self, id: str, force: bool = False, volumes: bool = False) -> None:
        self._unary(self._containers.Remove, pb.RemoveContainerRequest(id=id, force=force, volumes=volumes))

    @rpc("Containers", "List")
    def containers(self, all: bool = False) -> List[Container]:
        resp = self._unary(self._containers.List, pb.ListContainersRequest(all=all))
        return [from_pb(Container, c) for c in resp.containers]

    @rpc("Containers", "Inspect")
    def inspect(self, id: str) -> Dict[str, Any]:
        """Docker-style inspect document (Id, Name, State, Config, ...)."""
        resp = self._unary(self._containers.Inspect, pb.ContainerRef(id=id))
        return json.loads(resp.json)

    @rpc("Containers", "Logs")
    def logs_iter(
        self,
        id: str,
        follow: bool = False,
        tail: int = -1,
        stdout: bool = True,
        stderr: bool = True,
        since: str = "",
        until: str = "",
    ) -> Stream[LogEntry]:
        """Stored output (``tail`` lines from the end, -1 all; ``since`` /
        ``until``: RFC 3339, Unix seconds or a duration like "10m"); with
        ``follow``, streams on until the container stops."""
        req = pb.LogsRequest(
            id=id, follow=follow, stdout=stdout, stderr=stderr, tail=tail, since=since, until=until
        )
        return self._stream(self._containers.Logs, req, log_entry)

    @rpc("Containers", "Logs")
    def logs(
        self, id: str, tail: int = -1, stdout: bool = True, stderr: bool = True, since: str = "", until: str = ""
    ) -> List[Tuple[str, bytes]]:
        """The stored output as [(stream, data), ...], stream "stdout" or "stderr"."""
        return [(e.stream, e.data) for e in self.logs_iter(id, False, tail, stdout, stderr, since, until)]

    @rpc("Containers", "Attach")
    def attach(self, id: str, stdout: bool = True, stderr: bool = True) -> Attachment:
        """Opens the container's output stream and returns once the daemon
        has accepted it, so a following :meth:`start` loses no output."""
        call = self._containers.Attach(pb.AttachRequest(id=id, stdout=stdout, stderr=stderr), metadata=self._md())
        wait_open(call)
        return Attachment(call)

    @rpc("Containers", "Rename")
    def rename(self, id: str, new_name: str) -> None:
        self._unary(self._containers.Rename, pb.RenameContainerRequest(id=id, new_name=new_name))

    @rpc("Containers", "Prune")
    def prune_containers(self, filters: Filters = None) -> PruneReport:
        """Removes stopped containers (filters until=, label=, label!=)."""
        req = pb.PruneContainersRequest()
        _filters(req.filters, filters)
        return _prune(self._unary(self._containers.Prune, req))

    @rpc("Containers", "Update")
    def update(
        self, id: str, resources: Union[Resources, Mapping[str, Any], None] = None, restart_policy: str = ""
    ) -> List[str]:
        """Changes a container's limits (and restart policy) live; returns
        the daemon's warnings."""
        req = pb.UpdateContainerRequest(id=id, restart_policy=restart_policy)
        if resources is not None:
            req.resources.SetInParent()
            fill_pb(req.resources, resources)
        return list(self._unary(self._containers.Update, req).warnings)

    # -- ContainerProcesses ---------------------------------------------------

    @rpc("ContainerProcesses", "Exec")
    def exec(
        self,
        id: str,
        cmd: Sequence[str],
        env: Sequence[str] = (),
        working_dir: str = "",
        user: str = "",
        tty: bool = False,
        stdin: bool = False,
        detach: bool = False,
        privileged: bool = False,
        rows: int = 0,
        cols: int = 0,
        detach_keys: str = "",
    ) -> ProcessSession:
        """Runs a process in a running container and returns once it was
        accepted (``.exec_id`` is set). Write stdin with ``.write()`` (with
        ``stdin=True``), iterate its output or ``.wait()`` for an
        :class:`ExecResult`. With ``detach`` it runs in the background."""
        if isinstance(cmd, str):
            raise TypeError("cmd must be a list of strings, not a string")
        start = pb.ExecStart(
            id=id,
            cmd=list(cmd),
            env=list(env),
            working_dir=working_dir,
            user=user,
            tty=tty,
            stdin=stdin,
            detach=detach,
            privileged=privileged,
            rows=rows,
            cols=cols,
            detach_keys=detach_keys,
        )
        session = ProcessSession(self._processes.Exec, pb.ExecRequest, pb.ExecRequest(start=start), self._md())
        session._open_exec()
        return session

    @rpc("ContainerProcesses", "Exec")
    def exec_run(
        self, id: str, cmd: Sequence[str], input: Optional[bytes] = None, **kwargs: Any
    ) -> ExecResult:
        """Runs a process to its end: ``input`` (if given) is its whole
        stdin; returns exit code, stdout and stderr. Other arguments as
        :meth:`exec`."""
        if input is not None:
            kwargs["stdin"] = True
        session = self.exec(id, cmd, **kwargs)
        if input is not None:
            if input:
                session.write(input)
            session.close_stdin()
        return session.wait()

    @rpc("ContainerProcesses", "Attach")
    def attach_io(
        self, id: str, stdin: bool = False, stdout: bool = True, stderr: bool = True, detach_keys: str = ""
    ) -> ProcessSession:
        """Interactive attach (docker attach): ``.write()`` to the
        container's stdin (it must have ``open_stdin``), iterate its output;
        it ends with the exit status or, after the detach keys, with
        ``.detached``."""
        start = pb.AttachIOStart(id=id, stdin=stdin, stdout=stdout, stderr=stderr, detach_keys=detach_keys)
        session = ProcessSession(
            self._processes.Attach, pb.AttachIORequest, pb.AttachIORequest(start=start), self._md()
        )
        session._open_attach()
        return session

    @rpc("ContainerProcesses", "Resize")
    def resize(self, id: str, rows: int, cols: int, exec_id: str = "") -> None:
        """Resizes a container's (or, with ``exec_id``, an exec's) terminal."""
        self._unary(self._processes.Resize, pb.ResizeRequest(id=id, exec_id=exec_id, rows=rows, cols=cols))

    @rpc("ContainerProcesses", "Pause")
    def pause(self, id: str) -> None:
        self._unary(self._processes.Pause, pb.ContainerRef(id=id))

    @rpc("ContainerProcesses", "Unpause")
    def unpause(self, id: str) -> None:
        self._unary(self._processes.Unpause, pb.ContainerRef(id=id))

    @rpc("ContainerProcesses", "Top")
    def top(self, id: str, ps_args: str = "") -> TopResult:
        resp = self._unary(self._processes.Top, pb.TopRequest(id=id, ps_args=ps_args))
        return TopResult(list(resp.titles), [list(r.values) for r in resp.processes])

    @rpc("ContainerProcesses", "Stats")
    def stats(self, id: str, stream: bool = False) -> Stream[ContainerStats]:
        """Resource usage: one sample, or with ``stream`` one per second
        until cancelled."""
        req = pb.StatsRequest(id=id, stream=stream)
        return self._stream(self._processes.Stats, req, lambda m: from_pb(ContainerStats, m))

    # -- ContainerFiles -------------------------------------------------------

    @rpc("ContainerFiles", "CopyFrom")
    def copy_from(self, id: str, path: str) -> CopyFromStream:
        """A tar stream of ``path`` in the container; ``.stat`` is its stat."""
        call = self._files.CopyFrom(pb.CopyFromRequest(id=id, path=path), metadata=self._md())
        return CopyFromStream(call)

    @rpc("ContainerFiles", "CopyTo")
    def copy_to(
        self,
        id: str,
        path: str,
        source: DataSource,
        no_overwrite_dir_non_dir: bool = False,
        copy_uid_gid: bool = False,
    ) -> None:
        """Extracts a tar archive (path, file, bytes or chunks) into the
        directory ``path`` in the container."""
        header = pb.CopyToHeader(
            id=id, path=path, no_overwrite_dir_non_dir=no_overwrite_dir_non_dir, copy_uid_gid=copy_uid_gid
        )

        def requests() -> Iterator[pb.CopyToRequest]:
            yield pb.CopyToRequest(header=header)
            for chunk in _chunks(source):
                yield pb.CopyToRequest(data=chunk)

        self._unary(self._files.CopyTo, requests())

    @rpc("ContainerFiles", "Diff")
    def diff(self, id: str) -> List[Change]:
        resp = self._unary(self._files.Diff, pb.ContainerRef(id=id))
        return [from_pb(Change, c) for c in resp.changes]

    @rpc("ContainerFiles", "Export")
    def export(self, id: str) -> ByteStream:
        """The container's whole filesystem as a tar stream."""
        call = self._files.Export(pb.ContainerRef(id=id), metadata=self._md())
        return ByteStream(call, lambda m: bytes(m.data))

    @rpc("ContainerFiles", "Commit")
    def commit(
        self,
        id: str,
        reference: str = "",
        comment: str = "",
        author: str = "",
        changes: Sequence[str] = (),
        pause: bool = True,
    ) -> ImageId:
        """Makes an image of the container's changes; returns its ID."""
        req = pb.CommitRequest(
            id=id, reference=reference, comment=comment, author=author, changes=list(changes), pause=pause
        )
        return ImageId(self._unary(self._files.Commit, req).id, reference)

    # -- Events ---------------------------------------------------------------

    @rpc("Events", "Subscribe")
    def events(self, since: str = "", until: str = "", filters: Filters = None) -> Stream[Event]:
        """Engine events from ``since`` (empty: now) until ``until`` (empty:
        forever): returns once the subscription is in place, so nothing that
        happens afterwards is missed. ``filters``: type=, event=,
        container=, image=, label=."""
        req = pb.EventsRequest(since=since, until=until)
        _filters(req.filters, filters)
        return self._stream(self._events.Subscribe, req, lambda m: from_pb(Event, m), open=True)

    # -- Volumes --------------------------------------------------------------

    @rpc("Volumes", "Create")
    def create_volume(
        self,
        name: str = "",
        driver: str = "",
        labels: Optional[Mapping[str, str]] = None,
        options: Optional[Mapping[str, str]] = None,
    ) -> Volume:
        """Creates a volume (a random name when empty); options type=,
        device=, o= (mount(8)) or size= (a loop-mounted ext4 image)."""
        req = pb.CreateVolumeRequest(name=name, driver=driver, labels=dict(labels or {}), options=dict(options or {}))
        return from_pb(Volume, self._unary(self._volumes.Create, req))

    @rpc("Volumes", "Inspect")
    def inspect_volume(self, name: str) -> Volume:
        return from_pb(Volume, self._unary(self._volumes.Inspect, pb.VolumeRef(name=name)))

    @rpc("Volumes", "List")
    def volumes(self, filters: Filters = None) -> List[Volume]:
        req = pb.ListVolumesRequest()
        _filters(req.filters, filters)
        return [from_pb(Volume, v) for v in self._unary(self._volumes.List, req).volumes]

    @rpc("Volumes", "Remove")
    def remove_volume(self, name: str, force: bool = False) -> None:
        self._unary(self._volumes.Remove, pb.RemoveVolumeRequest(name=name, force=force))

    @rpc("Volumes", "Prune")
    def prune_volumes(self, all: bool = False, filters: Filters = None) -> PruneReport:
        req = pb.PruneVolumesRequest(all=all)
        _filters(req.filters, filters)
        return _prune(self._unary(self._volumes.Prune, req))

    # -- Networks -------------------------------------------------------------

    @rpc("Networks", "Create")
    def create_network(
        self,
        name: str,
        driver: str = "",
        subnet: str = "",
        ip_range: str = "",
        gateway: str = "",
        internal: bool = False,
        labels: Optional[Mapping[str, str]] = None,
        options: Optional[Mapping[str, str]] = None,
    ) -> Network:
        """Creates a bridge network (a free subnet when none is given)."""
        req = pb.CreateNetworkRequest(
            name=name,
            driver=driver,
            subnet=subnet,
            ip_range=ip_range,
            gateway=gateway,
            internal=internal,
            labels=dict(labels or {}),
            options=dict(options or {}),
        )
        return from_pb(Network, self._unary(self._networks.Create, req))

    @rpc("Networks", "Inspect")
    def inspect_network(self, name: str) -> Dict[str, Any]:
        """docker's network inspect document (Name, Id, IPAM, Containers, ...)."""
        return json.loads(self._unary(self._networks.Inspect, pb.NetworkRef(name=name)).json)

    @rpc("Networks", "List")
    def networks(self, filters: Filters = None) -> List[Network]:
        req = pb.ListNetworksRequest()
        _filters(req.filters, filters)
        return [from_pb(Network, n) for n in self._unary(self._networks.List, req).networks]

    @rpc("Networks", "Remove")
    def remove_network(self, name: str) -> None:
        self._unary(self._networks.Remove, pb.NetworkRef(name=name))

    @rpc("Networks", "Prune")
    def prune_networks(self, filters: Filters = None) -> PruneReport:
        req = pb.PruneNetworksRequest()
        _filters(req.filters, filters)
        return _prune(self._unary(self._networks.Prune, req))

    @rpc("Networks", "ConnectContainer")
    def connect_network(
        self, network: str, container: str, ipv4_address: str = "", aliases: Sequence[str] = ()
    ) -> None:
        """Connects a container (live when it runs)."""
        req = pb.ConnectNetworkRequest(
            network=network, container=container, ipv4_address=ipv4_address, aliases=list(aliases)
        )
        self._unary(self._networks.ConnectContainer, req)

    @rpc("Networks", "DisconnectContainer")
    def disconnect_network(self, network: str, container: str, force: bool = False) -> None:
        req = pb.DisconnectNetworkRequest(network=network, container=container, force=force)
        self._unary(self._networks.DisconnectContainer, req)


def rpc_wrappers() -> Dict[str, List[str]]:
    """{"berth.gateway.v1.Service/Method": [Client method names]}."""
    out: Dict[str, List[str]] = {}
    for name in dir(Client):
        target = getattr(getattr(Client, name), "__berth_rpc__", None)
        if target:
            out.setdefault(target, []).append(name)
    return out
