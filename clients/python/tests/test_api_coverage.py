"""The client covers the whole public API: checked against the service
descriptors generated from proto/berth/gateway/v1/gateway.proto (no daemon
needed). A new RPC, or a new request field, without a wrapper fails here."""

import dataclasses
import inspect
import typing

import pytest

import berth_client
from berth_client import Client, rpc_wrappers
from berth_client._gen.berth.gateway.v1 import gateway_pb2 as pb
from berth_client.types import from_pb

SERVICES = pb.DESCRIPTOR.services_by_name

#: Client attribute holding each service's stub.
STUB_ATTR = {
    "Images": "_images",
    "Containers": "_containers",
    "System": "_system",
    "ContainerProcesses": "_processes",
    "ContainerFiles": "_files",
    "Events": "_events",
    "Volumes": "_volumes",
    "Networks": "_networks",
}

#: Parameters that carry a streamed request's data (not a header field).
STREAM_PAYLOAD = {"data", "stdin", "resize", "close_stdin"}


def all_methods():
    for service in SERVICES.values():
        for method in service.methods:
            yield service, method


def request_fields(method):
    """The request fields a caller sets: for a client stream, those of its
    first message (the header / start message of the oneof), none when it
    carries only data."""
    msg = method.input_type
    if not method.client_streaming:
        return {f.name for f in msg.fields}
    header = [f for f in msg.fields if f.message_type is not None and f.name not in STREAM_PAYLOAD]
    if not header:
        return set()
    (header,) = header
    return {f.name for f in header.message_type.fields}


def test_the_services_are_the_public_api():
    # A service added to the proto must get a stub attribute (and wrappers).
    assert set(SERVICES) == set(STUB_ATTR), "update STUB_ATTR and the client for the new service"


@pytest.mark.parametrize(
    "service,method",
    [(s.name, m.name) for s, m in all_methods()],
)
def test_every_rpc_has_a_wrapper_taking_every_field(service, method):
    desc = SERVICES[service].methods_by_name[method]
    full = f"{berth_client.PACKAGE}.{service}/{method}"
    wrappers = rpc_wrappers().get(full, [])
    assert wrappers, f"no Client method wraps {full}: add one marked @rpc({service!r}, {method!r})"

    wanted = request_fields(desc)
    best = None
    for name in wrappers:
        fn = getattr(Client, name)
        params = set(inspect.signature(fn).parameters)
        missing = wanted - params
        calls_stub = f"self.{STUB_ATTR[service]}.{method}" in inspect.getsource(fn)
        if calls_stub and not missing:
            return
        best = (name, sorted(missing), calls_stub)
    pytest.fail(
        f"no wrapper of {full} both calls self.{STUB_ATTR[service]}.{method} and takes every "
        f"request field {sorted(wanted)}; last looked at: {best}"
    )


def test_wrappers_name_real_rpcs():
    known = {f"{berth_client.PACKAGE}.{s.name}/{m.name}" for s, m in all_methods()}
    stale = {rpc: names for rpc, names in rpc_wrappers().items() if rpc not in known}
    assert not stale, f"wrappers of RPCs that are not in the proto: {stale}"


def test_server_streams_are_iterators():
    """Each streaming RPC has a wrapper that returns an iterator over the
    responses (a Stream, or a ProcessSession for the two-way ones)."""
    for service, method in all_methods():
        if not method.server_streaming:
            continue
        names = rpc_wrappers()[f"{berth_client.PACKAGE}.{service.name}/{method.name}"]
        kinds = []
        for name in names:
            ret = typing.get_type_hints(getattr(Client, name))["return"]
            ret = typing.get_origin(ret) or ret
            kinds.append(ret)
            if isinstance(ret, type) and issubclass(ret, (berth_client.Stream, berth_client.ProcessSession)):
                break
        else:
            pytest.fail(f"{service.name}/{method.name}: no wrapper returns a stream: {list(zip(names, kinds))}")


# Every result dataclass reads fields that exist in its message.
RESULT_TYPES = {
    "Image": pb.ImageSummary,
    "Progress": pb.Progress,
    "LoginResult": pb.LoginResponse,
    "SearchResult": pb.SearchResult,
    "LoadedImage": pb.LoadedImage,
    "HistoryEntry": pb.HistoryEntry,
    "ImagePruneReport": pb.PruneImagesResponse,
    "Container": pb.ContainerSummary,
    "VersionInfo": pb.VersionResponse,
    "Info": pb.InfoResponse,
    "DiskUsage": pb.DiskUsageResponse,
    "Volume": pb.Volume,
    "ContainerStats": pb.ContainerStats,
    "PathStat": pb.PathStat,
    "Change": pb.Change,
    "Event": pb.Event,
    "Network": pb.Network,
}


@pytest.mark.parametrize("name", sorted(RESULT_TYPES))
def test_result_types_match_their_messages(name):
    cls = getattr(berth_client, name)
    msg = RESULT_TYPES[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    assert fields == {f.name for f in msg.DESCRIPTOR.fields}, f"{name} and {msg.DESCRIPTOR.name} differ"
    from_pb(cls, msg())  # converts an empty message


def test_input_types_match_their_messages():
    for cls, msg in [
        (berth_client.Resources, pb.Resources),
        (berth_client.MountSpec, pb.MountSpec),
        (berth_client.RegistryAuth, pb.RegistryAuth),
        (berth_client.Ulimit, pb.Ulimit),
        (berth_client.WeightDevice, pb.WeightDevice),
        (berth_client.ThrottleDevice, pb.ThrottleDevice),
    ]:
        assert {f.name for f in dataclasses.fields(cls)} == {f.name for f in msg.DESCRIPTOR.fields}, cls


def test_addresses():
    from berth_client import parse_address

    assert parse_address("unix:///run/berth/berth.sock") == ("unix", "unix:///run/berth/berth.sock")
    assert parse_address("/run/x.sock") == ("unix", "unix:///run/x.sock")
    assert parse_address("tcp://127.0.0.1:2376") == ("tcp", "127.0.0.1:2376")
    assert parse_address("tcp://[::1]:2376") == ("tcp", "[::1]:2376")
    for bad in ["tcp://host", "http://x:1", "unix://relative.sock", "tcp://:80"]:
        with pytest.raises(ValueError):
            parse_address(bad)


def test_berth_host_is_the_default_address(monkeypatch):
    monkeypatch.setenv("BERTH_HOST", "unix:///tmp/berth-from-env.sock")
    monkeypatch.setenv("BERTH_NAMESPACE", "envns")
    with Client() as c:
        assert c.address == "unix:///tmp/berth-from-env.sock"
        assert c.namespace == "envns"
    monkeypatch.delenv("BERTH_HOST")
    monkeypatch.delenv("BERTH_NAMESPACE")
    with Client() as c:
        assert c.address == berth_client.DEFAULT_ADDRESS
        assert c.namespace == "default"


def test_tls_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        Client("tcp://127.0.0.1:1", tls_cert=tmp_path / "c.pem")
    with pytest.raises(ValueError, match="TLS applies to tcp"):
        Client("unix:///tmp/x.sock", tls=True)
    with pytest.raises(ValueError, match="cannot read tls_ca_cert"):
        Client("tcp://127.0.0.1:1", tls_ca_cert=tmp_path / "missing.pem")
