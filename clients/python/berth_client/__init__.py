"""A thin, typed Python client for berth's public API (berth.gateway.v1).

Every method is one RPC of the gateway (see proto/berth/gateway/v1/gateway.proto
and docs/api.md); nothing is orchestrated here beyond what the RPCs do::

    from berth_client import Client

    with Client("unix:///run/berth/berth.sock") as c:
        image_id = c.import_image("rootfs.tar", "busybox:latest")
        cid = c.create("busybox", ["echo", "hi"])
        c.start(cid)
        assert c.wait(cid) == 0
        print(c.logs(cid))          # [("stdout", b"hi\\n")]
        c.remove(cid)

Remote daemons: ``Client("tcp://host:2376", tls_ca_cert="ca.pem",
tls_cert="cert.pem", tls_key="key.pem")`` (mutual TLS). Without an address
the client uses ``$BERTH_HOST``.

The generated gRPC modules live in ``berth_client._gen`` and are made by
``clients/python/generate.sh``.
"""

from __future__ import annotations

try:
    from berth_client._gen.berth.gateway.v1 import gateway_pb2 as _pb  # noqa: F401
except ImportError as e:  # pragma: no cover - only without generated code
    raise ImportError("berth_client's generated gRPC code is missing: run clients/python/generate.sh") from e

from .client import (
    CHUNK_SIZE,
    DEFAULT_ADDRESS,
    DEFAULT_NAMESPACE,
    NAMESPACE_KEY,
    PACKAGE,
    Client,
    parse_address,
    rpc_wrappers,
)
from .errors import (
    EXIT_CODE_KEY,
    AlreadyExists,
    BerthError,
    Cancelled,
    Conflict,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from .streams import Attachment, ByteStream, CopyFromStream, ProcessSession, Stream
from .types import (
    Change,
    Container,
    ContainerId,
    ContainerStats,
    ContainerUsage,
    DiskUsage,
    Event,
    ExecResult,
    HistoryEntry,
    Image,
    ImageDeleteItem,
    ImageId,
    ImagePruneReport,
    ImageUsage,
    Info,
    LoadedImage,
    LogEntry,
    LoginResult,
    MountSpec,
    Network,
    NetworkEndpoint,
    PathStat,
    Progress,
    PruneReport,
    RegistryAuth,
    RemovedImage,
    Resources,
    SearchResult,
    ThrottleDevice,
    TopResult,
    Ulimit,
    VersionInfo,
    Volume,
    WeightDevice,
)

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_ADDRESS",
    "DEFAULT_NAMESPACE",
    "NAMESPACE_KEY",
    "EXIT_CODE_KEY",
    "PACKAGE",
    "Client",
    "parse_address",
    "rpc_wrappers",
    # errors
    "BerthError",
    "NotFound",
    "AlreadyExists",
    "InvalidArgument",
    "Conflict",
    "PermissionDenied",
    "Unavailable",
    "Internal",
    "Cancelled",
    "DeadlineExceeded",
    # streams
    "Stream",
    "ByteStream",
    "CopyFromStream",
    "Attachment",
    "ProcessSession",
    # data
    "Change",
    "Container",
    "ContainerId",
    "ContainerStats",
    "ContainerUsage",
    "DiskUsage",
    "Event",
    "ExecResult",
    "HistoryEntry",
    "Image",
    "ImageDeleteItem",
    "ImageId",
    "ImagePruneReport",
    "ImageUsage",
    "Info",
    "LoadedImage",
    "LogEntry",
    "LoginResult",
    "MountSpec",
    "Network",
    "NetworkEndpoint",
    "PathStat",
    "Progress",
    "PruneReport",
    "RegistryAuth",
    "RemovedImage",
    "Resources",
    "SearchResult",
    "ThrottleDevice",
    "TopResult",
    "Ulimit",
    "VersionInfo",
    "Volume",
    "WeightDevice",
]
