"""Plain data returned and taken by :class:`berth_client.Client`.

Each result dataclass mirrors one message of berth.gateway.v1 with the same
field names (see docs/api.md for their meaning); :func:`from_pb` fills one
from a message. The input dataclasses (:class:`Resources`,
:class:`MountSpec`, :class:`RegistryAuth`, ...) are written into requests by
:func:`fill_pb`, which also takes plain dicts with the same keys.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Type, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

T = TypeVar("T")

# -- results ----------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """One entry of :meth:`Client.images` (ImageSummary)."""

    id: str
    repo_tags: List[str]
    created: int
    size: int
    labels: Dict[str, str] = field(default_factory=dict)
    repo_digests: List[str] = field(default_factory=list)


class ImageId(str):
    """The ID ("sha256:...") of an image made by :meth:`Client.import_image`
    or :meth:`Client.commit` (a str), with the normalised ``reference`` it
    was given (empty when none)."""

    reference: str

    def __new__(cls, id: str, reference: str = "") -> "ImageId":
        obj = super().__new__(cls, id)
        obj.reference = reference
        return obj


@dataclass(frozen=True)
class RemovedImage:
    """Result of :meth:`Client.remove_image`: names removed and image IDs
    and blobs deleted."""

    untagged: List[str]
    deleted: List[str]


@dataclass(frozen=True)
class Progress:
    """A progress line of a pull or push; the last one carries ``digest``
    (and, for a push, ``size``)."""

    id: str
    status: str
    current: int
    total: int
    digest: str
    size: int


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for a registry, sent with each pull, push, login or
    search that needs them (the daemon never stores them)."""

    username: str = ""
    password: str = ""
    identity_token: str = ""


@dataclass(frozen=True)
class LoginResult:
    status: str
    identity_token: str


@dataclass(frozen=True)
class SearchResult:
    name: str
    description: str
    stars: int
    official: bool


@dataclass(frozen=True)
class LoadedImage:
    """An image read by :meth:`Client.load`: its ID and the names given."""

    id: str
    names: List[str]


@dataclass(frozen=True)
class HistoryEntry:
    id: str
    created: int
    created_by: str
    size: int
    comment: str
    tags: List[str]


@dataclass(frozen=True)
class ImageDeleteItem:
    """Either a name removed (``untagged``) or an image ID ``deleted``."""

    untagged: str
    deleted: str


@dataclass(frozen=True)
class ImagePruneReport:
    deleted: List[ImageDeleteItem]
    space_reclaimed: int


@dataclass(frozen=True)
class PruneReport:
    """What a prune of containers, volumes or networks removed (networks
    report no space)."""

    deleted: List[str]
    space_reclaimed: int = 0


@dataclass(frozen=True)
class Container:
    """One entry of :meth:`Client.containers` (ContainerSummary)."""

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


class ContainerId(str):
    """The full ID of a new container (a str), with the daemon's
    ``warnings`` about settings it could not apply."""

    warnings: List[str]

    def __new__(cls, id: str, warnings: Optional[List[str]] = None) -> "ContainerId":
        obj = super().__new__(cls, id)
        obj.warnings = list(warnings or [])
        return obj


@dataclass(frozen=True)
class LogEntry:
    """A chunk of output: ``stream`` is "stdout" or "stderr"; ``time`` is
    RFC 3339 with nanoseconds."""

    stream: str
    data: bytes
    time: str


@dataclass(frozen=True)
class VersionInfo:
    version: str
    api_version: str
    git_commit: str
    os: str
    arch: str
    kernel_version: str


@dataclass(frozen=True)
class Info:
    """docker info's facts (InfoResponse)."""

    containers: int
    containers_running: int
    containers_paused: int
    containers_stopped: int
    images: int
    server_version: str
    storage_driver: str
    logging_driver: str
    cgroup_driver: str
    cgroup_version: str
    kernel_version: str
    operating_system: str
    os_type: str
    architecture: str
    ncpu: int
    mem_total: int
    name: str
    root_dir: str
    warnings: List[str]
    insecure_registries: List[str]
    registry_mirrors: List[str]


@dataclass(frozen=True)
class Volume:
    name: str
    driver: str
    mountpoint: str
    created_at: str
    labels: Dict[str, str]
    options: Dict[str, str]
    scope: str
    ref_count: int
    size: int


@dataclass(frozen=True)
class ImageUsage:
    id: str
    repo_tags: List[str]
    created: int
    size: int
    shared_size: int
    containers: int


@dataclass(frozen=True)
class ContainerUsage:
    id: str
    names: List[str]
    image: str
    command: str
    created: int
    state: str
    size_rw: int
    local_volumes: int


@dataclass(frozen=True)
class DiskUsage:
    """docker system df (DiskUsageResponse)."""

    layers_size: int
    images: List[ImageUsage]
    containers: List[ContainerUsage]
    volumes: List[Volume]


@dataclass(frozen=True)
class ExecResult:
    """The end of an exec: exit code (None when detached), the output by
    stream, and the daemon's error when the command could not be run."""

    exit_code: Optional[int]
    stdout: bytes
    stderr: bytes
    error: str = ""
    exec_id: str = ""


@dataclass(frozen=True)
class TopResult:
    """`docker top`: ps column titles and one row of values per process."""

    titles: List[str]
    processes: List[List[str]]


@dataclass(frozen=True)
class ContainerStats:
    """A resource usage sample. CPU % = delta(cpu_total_ns) /
    delta(system_cpu_ns) * online_cpus * 100 between two samples."""

    id: str
    name: str
    read: str
    cpu_total_ns: int
    system_cpu_ns: int
    online_cpus: int
    memory_usage: int
    memory_limit: int
    memory_cache: int
    net_rx_bytes: int
    net_tx_bytes: int
    blkio_read_bytes: int
    blkio_write_bytes: int
    pids: int


@dataclass(frozen=True)
class PathStat:
    """The stat of a path copied out of a container."""

    name: str
    size: int
    mode: int
    mtime: str
    link_target: str


@dataclass(frozen=True)
class Change:
    """A change of a container's filesystem: ``kind`` 0 modified (C), 1
    added (A), 2 deleted (D)."""

    kind: int
    path: str

    @property
    def letter(self) -> str:
        return {0: "C", 1: "A", 2: "D"}.get(self.kind, "?")


@dataclass(frozen=True)
class Event:
    """An engine event: ``type`` "container", "image", ...; ``action``
    create, start, die, destroy, pull, tag, ...; ``attributes`` as docker's
    Actor.Attributes."""

    type: str
    action: str
    id: str
    attributes: Dict[str, str]
    time_nano: int
    scope: str


@dataclass(frozen=True)
class NetworkEndpoint:
    container_id: str
    name: str
    endpoint_id: str
    mac_address: str
    ipv4_address: str
    aliases: List[str]


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    driver: str
    scope: str
    created: str
    internal: bool
    subnet: str
    ip_range: str
    gateway: str
    labels: Dict[str, str]
    options: Dict[str, str]
    containers: List[NetworkEndpoint]
    builtin: bool


# -- inputs -----------------------------------------------------------------


@dataclass
class WeightDevice:
    path: str
    weight: int


@dataclass
class ThrottleDevice:
    """Bytes or operations per second on a device."""

    path: str
    rate: int


@dataclass
class Ulimit:
    """An rlimit: ``name`` nofile, nproc, core, ..."""

    name: str
    soft: int
    hard: int


@dataclass
class Resources:
    """Resource limits (docker's HostConfig.Resources); 0/empty: unset.
    ``None`` leaves an optional field unset."""

    memory: int = 0
    memory_swap: int = 0
    memory_reservation: int = 0
    memory_swappiness: Optional[int] = None
    oom_kill_disable: Optional[bool] = None
    nano_cpus: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    pids_limit: Optional[int] = None
    blkio_weight: int = 0
    blkio_weight_device: List[WeightDevice] = field(default_factory=list)
    device_read_bps: List[ThrottleDevice] = field(default_factory=list)
    device_write_bps: List[ThrottleDevice] = field(default_factory=list)
    device_read_iops: List[ThrottleDevice] = field(default_factory=list)
    device_write_iops: List[ThrottleDevice] = field(default_factory=list)
    kernel_memory: int = 0
    ulimits: List[Ulimit] = field(default_factory=list)


@dataclass
class MountSpec:
    """One --mount: ``type`` "volume" (default), "bind" or "tmpfs"."""

    target: str
    source: str = ""
    type: str = "volume"
    read_only: bool = False
    bind_propagation: str = ""
    volume_nocopy: bool = False
    volume_driver: str = ""
    volume_options: Dict[str, str] = field(default_factory=dict)
    volume_labels: Dict[str, str] = field(default_factory=dict)
    tmpfs_size: int = 0
    tmpfs_mode: int = 0


# -- conversion ---------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is list:
        (elem,) = typing.get_args(tp)
        return [_convert(elem, v) for v in value]
    if origin is dict:
        _, elem = typing.get_args(tp)
        return {k: _convert(elem, v) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_pb(tp, value)
    if tp is bytes:
        return bytes(value)
    if tp is int:
        return int(value)
    return value


def from_pb(cls: Type[T], msg: Message) -> T:
    """A result dataclass filled from the message field of the same names."""
    hints = _hints(typing.cast(Any, cls))
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        kwargs[f.name] = _convert(hints[f.name], getattr(msg, f.name))
    return cls(**kwargs)


def fill_pb(msg: Message, value: Any) -> Message:
    """Writes a dataclass or a mapping into ``msg`` by field name (nested
    messages, repeated fields and maps included); ``None`` leaves a field
    unset. An unknown key is a TypeError."""
    if value is None:
        return msg
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    elif isinstance(value, Mapping):
        items = list(value.items())
    else:
        raise TypeError(f"{msg.DESCRIPTOR.name}: expected a dataclass or a dict, got {type(value).__name__}")
    fields = msg.DESCRIPTOR.fields_by_name
    for name, v in items:
        if v is None:
            continue
        fd = fields.get(name)
        if fd is None:
            raise TypeError(f"{msg.DESCRIPTOR.name} has no field {name!r}")
        target = getattr(msg, name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            for k, item in dict(v).items():
                if value_fd.message_type is not None:
                    fill_pb(target[k], item)
                else:
                    target[k] = item
        elif fd.label == FieldDescriptor.LABEL_REPEATED:
            if fd.message_type is not None:
                for item in v:
                    fill_pb(target.add(), item)
            else:
                target.extend(v)
        elif fd.message_type is not None:
            target.SetInParent()
            fill_pb(target, v)
        else:
            setattr(msg, name, v)
    return msg
