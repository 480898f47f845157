"""berth_client against an in-process fake gateway: what goes on the wire
(namespace metadata, import chunks, presence of optional fields) and how
answers and errors come back. Needs neither root nor berthd."""

import io
import os
import tempfile
from concurrent import futures

import grpc
import pytest

from berth_client import CHUNK_SIZE, BerthError, Client, Conflict, NotFound
from berth_client._gen.berth.gateway.v1 import gateway_pb2 as pb
from berth_client._gen.berth.gateway.v1 import gateway_pb2_grpc as pb_grpc


class Recorder:
    def __init__(self):
        self.calls = []  # (method, namespace, request)

    def note(self, method, request, context):
        md = dict(context.invocation_metadata())
        self.calls.append((method, md.get("berth-namespace"), request))


class Images(pb_grpc.ImagesServicer):
    def __init__(self, rec):
        self.rec = rec

    def Import(self, request_iterator, context):
        msgs = list(request_iterator)
        self.rec.note("Import", msgs, context)
        return pb.ImportResponse(id="sha256:" + "a" * 64, reference=msgs[0].header.reference)

    def List(self, request, context):
        self.rec.note("List", request, context)
        return pb.ListImagesResponse(
            images=[pb.ImageSummary(id="sha256:" + "b" * 64, repo_tags=["bb:1"], created=5, size=7)]
        )

    def Inspect(self, request, context):
        self.rec.note("InspectImage", request, context)
        if request.reference != "bb:1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"No such image: {request.reference}")
        return pb.InspectResponse(json='{"Id": "sha256:bbb", "RepoTags": ["bb:1"]}')


class Containers(pb_grpc.ContainersServicer):
    def __init__(self, rec):
        self.rec = rec

    def Create(self, request, context):
        self.rec.note("Create", request, context)
        return pb.CreateContainerResponse(id="c" * 64)

    def Start(self, request, context):
        self.rec.note("Start", request, context)
        if request.id == "missing-cmd":
            context.set_trailing_metadata([("berth-exit-code", "127")])
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, 'exec: "nope": executable file not found in $PATH')
        return pb.StartContainerResponse()

    def Wait(self, request, context):
        self.rec.note("Wait", request, context)
        return pb.WaitContainerResponse(status_code=3)

    def Logs(self, request, context):
        self.rec.note("Logs", request, context)
        yield pb.LogEntry(stream=pb.STREAM_STDOUT, data=b"out\n", time="t1")
        yield pb.LogEntry(stream=pb.STREAM_STDERR, data=b"err\n", time="t2")

    def Attach(self, request, context):
        self.rec.note("Attach", request, context)
        context.send_initial_metadata(())
        yield pb.AttachResponse(output=pb.LogEntry(stream=pb.STREAM_STDOUT, data=b"hi\n"))
        yield pb.AttachResponse(exit=pb.ExitStatus(status_code=42))

    def Inspect(self, request, context):
        self.rec.note("Inspect", request, context)
        context.abort(grpc.StatusCode.NOT_FOUND, f"No such container: {request.id}")

    def Remove(self, request, context):
        self.rec.note("Remove", request, context)
        return pb.Empty()


class System(pb_grpc.SystemServicer):
    def Version(self, request, context):
        return pb.VersionResponse(version="0.1.0", api_version="v1", os="linux", arch="x86_64")

    def Ping(self, request, context):
        return pb.Empty()


@pytest.fixture
def fake():
    rec = Recorder()
    tmp = tempfile.mkdtemp(prefix="berth-fake-")
    sock = os.path.join(tmp, "gw.sock")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ImagesServicer_to_server(Images(rec), server)
    pb_grpc.add_ContainersServicer_to_server(Containers(rec), server)
    pb_grpc.add_SystemServicer_to_server(System(), server)
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    client = Client(f"unix://{sock}", namespace="team1", timeout=10)
    try:
        yield client, rec
    finally:
        client.close()
        server.stop(None)
        os.unlink(sock) if os.path.exists(sock) else None
        os.rmdir(tmp)


def test_import_streams_header_then_chunks(fake):
    client, rec = fake
    data = os.urandom(CHUNK_SIZE * 2 + 10)
    image_id = client.import_image(io.BytesIO(data), "bb:1", changes=["CMD [\"sh\"]"], message="m")
    assert image_id == "sha256:" + "a" * 64
    method, ns, msgs = rec.calls[-1]
    assert (method, ns) == ("Import", "team1")
    assert msgs[0].WhichOneof("payload") == "header"
    assert msgs[0].header.reference == "bb:1"
    assert list(msgs[0].header.changes) == ['CMD ["sh"]']
    assert msgs[0].header.source == "-"
    chunks = [m.data for m in msgs[1:]]
    assert [len(c) for c in chunks] == [CHUNK_SIZE, CHUNK_SIZE, 10]
    assert b"".join(chunks) == data


def test_import_from_path_names_the_source(fake):
    client, rec = fake
    with tempfile.NamedTemporaryFile() as f:
        f.write(b"x" * 100)
        f.flush()
        client.import_image(f.name, "")
        msgs = rec.calls[-1][2]
        assert msgs[0].header.source == f.name
        assert b"".join(m.data for m in msgs[1:]) == b"x" * 100


def test_create_sets_presence_of_optional_fields(fake):
    client, rec = fake
    client.create("bb:1")
    req = rec.calls[-1][2]
    assert not req.HasField("cmd") and not req.HasField("entrypoint")
    assert not req.HasField("stop_timeout")

    client.create("bb:1", [], entrypoint=[], stop_timeout=0, env=["A=1"], name="n", labels={"k": "v"})
    req = rec.calls[-1][2]
    assert req.HasField("cmd") and list(req.cmd.values) == []
    assert req.HasField("entrypoint") and list(req.entrypoint.values) == []
    assert req.HasField("stop_timeout") and req.stop_timeout == 0
    assert list(req.env) == ["A=1"] and req.name == "n" and dict(req.labels) == {"k": "v"}

    with pytest.raises(TypeError):
        client.create("bb:1", "echo hi")


def test_answers_and_errors(fake):
    client, rec = fake
    assert client.wait("x") == 3
    assert client.logs("x") == [("stdout", b"out\n"), ("stderr", b"err\n")]
    assert client.images()[0].repo_tags == ["bb:1"]
    assert client.inspect_image("bb:1")["Id"] == "sha256:bbb"
    assert client.version()["version"] == "0.1.0"
    with pytest.raises(NotFound) as e:
        client.inspect("nope")
    assert "No such container: nope" in str(e.value)
    with pytest.raises(Conflict) as e:
        client.start("missing-cmd")
    assert e.value.exit_code == 127
    assert all(ns == "team1" for _, ns, _ in rec.calls)


def test_attach_returns_output_and_exit_status(fake):
    client, _ = fake
    attachment = client.attach("x")
    client.start("x")
    assert attachment.wait() == (42, [("stdout", b"hi\n")])


def test_unreachable_daemon():
    from berth_client import Unavailable

    with Client("unix:///nonexistent/berth.sock", timeout=5) as c:
        with pytest.raises(Unavailable):
            c.ping()
    assert issubclass(Unavailable, BerthError)
