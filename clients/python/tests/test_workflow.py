"""The whole public API through berth_client against a real berthd: an
image pushed to and pulled from a real registry (Debian's docker-registry on
loopback), containers run from it, exec, logs (follow), events, stats,
processes, files, volumes, networks, system.

Needs root, a built berthd (BERTHD_BIN) and docker-registry; skipped
without root or berthd.
"""

import contextlib
import io
import shutil
import tarfile
import threading
import uuid

import pytest

from berth_client import (
    AlreadyExists,
    BerthError,
    Conflict,
    InvalidArgument,
    NotFound,
    Progress,
    RegistryAuth,
    Resources,
)
from conftest import needs_daemon
import support

pytestmark = needs_daemon + [
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="needs docker-registry"),
    pytest.mark.usefixtures("dump_log_on_failure"),
]

#: Liveness bound of the waits on open-ended streams (not a timing assertion).
BOUND = 60.0


def name(prefix="pyt"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def bounded(stream, what):
    """Cancels `stream` if the block has not finished after BOUND seconds
    and then fails the test with `what`, so an expectation that is never met
    fails instead of hanging."""
    fired = threading.Event()

    def cancel():
        fired.set()
        stream.cancel()

    timer = threading.Timer(BOUND, cancel)
    timer.start()
    try:
        yield stream
    finally:
        timer.cancel()
        stream.cancel()  # an open-ended stream the block left
    if fired.is_set():
        pytest.fail(f"gave up waiting for {what}")


@pytest.fixture(scope="module")
def registry():
    reg = support.Registry()
    try:
        yield reg.start()
    finally:
        reg.close()


@pytest.fixture(scope="module")
def pulled(daemon, client, registry):
    """An image that went through the registry: imported from the busybox
    tarball, pushed to 127.0.0.1:PORT/pytest/busybox:v1, removed locally,
    pulled back. Returns (reference, image id, manifest digest)."""
    tar = daemon.dir / "busybox-pull.tar"
    support.busybox_tar(tar)
    ref = f"{registry.addr}/pytest/busybox:v1"
    image_id = client.import_image(str(tar), ref, changes=['CMD ["sh"]'], message="for the registry")
    assert image_id.reference.endswith("pytest/busybox:v1"), image_id.reference

    pushed = list(client.push(ref))
    assert pushed and all(isinstance(p, Progress) for p in pushed)
    digest = pushed[-1].digest
    assert digest.startswith("sha256:") and pushed[-1].size > 0, pushed[-1]
    assert any(p.status == "Pushed" for p in pushed), [p.status for p in pushed]

    removed = client.remove_image(image_id, force=True)
    assert image_id in removed.deleted, removed
    with pytest.raises(NotFound):
        client.inspect_image(ref)

    progress = list(client.pull(ref))
    assert progress[-1].digest == digest, progress[-1]
    statuses = {p.status for p in progress}
    assert "Pull complete" in statuses or "Download complete" in statuses, statuses
    doc = client.inspect_image(ref)
    assert doc["Id"] == image_id, "the pulled image is the one pushed"
    listed = [i for i in client.images() if ref in i.repo_tags]
    assert len(listed) == 1 and any(d.endswith("@" + digest) for d in listed[0].repo_digests), listed
    return ref, str(image_id), digest


@pytest.fixture
def running(client, pulled):
    """A running container of the pulled image (sleeping), removed after."""
    cid = client.create(pulled[0], ["sleep", "3600"], name=name("run"))
    try:
        client.start(cid)
        yield cid
    finally:
        client.remove(cid, force=True)


# -- images --------------------------------------------------------------------


def test_pulled_image_runs(client, pulled):
    ref, image_id, _ = pulled
    cid = client.create(ref, ["sh", "-c", "echo pulled and running; exit 3"])
    try:
        attachment = client.attach(cid)
        client.start(cid)
        code, out = attachment.wait()
        assert code == 3
        assert out == [("stdout", b"pulled and running\n")]
        assert client.inspect(cid)["Image"] == image_id
    finally:
        client.remove(cid, force=True)


def test_login_history_save_load(client, pulled, registry):
    ref, image_id, _ = pulled
    # The test registry has no auth: any credentials pass its /v2/ check.
    login = client.login(registry.addr, RegistryAuth("pytest", "secret"))
    assert login.status == "Login Succeeded", login
    with pytest.raises(InvalidArgument):
        client.login(registry.addr)  # no user name

    history = client.history(ref)
    assert history[0].id == image_id and ref in history[0].tags, history[0]
    assert history[0].comment == "for the registry"

    archive = client.save([ref]).read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = tar.getnames()
    assert "manifest.json" in names and "index.json" in names, names

    client.tag(ref, "pytest-saved:v1")
    client.remove_image("pytest-saved:v1")
    with pytest.raises(NotFound):
        client.inspect_image("pytest-saved:v1")
    loaded = client.load(io.BytesIO(archive))
    assert [(i.id, i.names) for i in loaded] == [(image_id, [ref])], loaded

    with pytest.raises(NotFound):
        list(client.save(["no-such-image:v9"]))


def test_prune_images_keeps_used_ones(client, pulled, running):
    report = client.prune_images({"dangling": "false", "label": "no-such-label"})
    assert report.deleted == [] and report.space_reclaimed == 0
    with pytest.raises(InvalidArgument):
        client.prune_images({"bogus": "1"})


# -- containers ----------------------------------------------------------------


def test_exec_exit_code_and_output(client, running):
    r = client.exec_run(running, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (r.exit_code, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    assert len(r.exec_id) > 0

    r = client.exec_run(running, ["cat"], input=b"through stdin\n")
    assert (r.exit_code, r.stdout) == (0, b"through stdin\n")

    r = client.exec_run(running, ["pwd"], working_dir="/tmp", env=["X=1"])
    assert r.stdout == b"/tmp\n"

    session = client.exec(running, ["sh", "-c", "read a; echo got $a"], stdin=True)
    session.write(b"piece\n")
    entries = list(session)
    assert b"".join(e.data for e in entries) == b"got piece\n" and session.exit_code == 0

    r = client.exec_run(running, ["/no/such/command"])
    assert r.exit_code == 127 and "/no/such/command" in r.error, r


def test_exec_in_a_stopped_container_is_refused(client, pulled):
    cid = client.create(pulled[0], ["true"])
    try:
        with pytest.raises(Conflict):
            client.exec_run(cid, ["echo"])
        with pytest.raises(NotFound):
            client.exec_run("no-such-container-" + uuid.uuid4().hex, ["echo"])
    finally:
        client.remove(cid, force=True)


def test_logs_follow_streams_live_output(client, pulled):
    # The container prints, then waits for a file that the test makes with
    # an exec once it has seen the first line through the follow stream.
    script = "echo first; echo warn >&2; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second"
    cid = client.create(pulled[0], ["sh", "-c", script])
    try:
        client.start(cid)
        seen = []
        with bounded(client.logs_iter(cid, follow=True), "the followed logs") as logs:
            for entry in logs:
                seen.append((entry.stream, entry.data))
                if entry.data == b"first\n":
                    assert client.exec_run(cid, ["touch", "/tmp/go"]).exit_code == 0
        # The stream ended by itself when the container stopped.
        out = b"".join(d for s, d in seen if s == "stdout")
        err = b"".join(d for s, d in seen if s == "stderr")
        assert (out, err) == (b"first\nsecond\n", b"warn\n")
        assert client.wait(cid) == 0
        assert client.logs(cid, tail=1, stderr=False) == [("stdout", b"second\n")]
        assert [e.stream for e in client.logs_iter(cid, stdout=False)] == ["stderr"]
    finally:
        client.remove(cid, force=True)


def test_events_see_create_start_die(client, pulled):
    cname = name("ev")
    with bounded(client.events(filters={"type": "container", "container": cname}), "die") as events:
        cid = client.create(pulled[0], ["sh", "-c", "exit 4"], name=cname)
        try:
            client.start(cid)
            got = []
            for ev in events:
                assert ev.type == "container" and ev.id == cid, ev
                got.append(ev)
                if ev.action == "die":
                    break
        finally:
            client.remove(cid, force=True)
    actions = [e.action for e in got]
    assert actions.index("create") < actions.index("start") < actions.index("die"), actions
    die = got[-1]
    assert die.attributes["exitCode"] == "4" and die.attributes["name"] == cname, die
    assert die.time_nano > 0

    # Past events: replayed with `since`, ending at `until`.
    since = str(got[0].time_nano // 1_000_000_000)
    until = str(die.time_nano / 1e9 + 1)
    with bounded(client.events(since=since, until=until, filters={"container": cid}), "until") as past:
        replay = [e.action for e in past]
    assert replay[: len(actions)] == actions, replay


def test_stats_of_a_running_container(client, running):
    # Make some CPU time and memory in the container first.
    assert client.exec_run(running, ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"]).exit_code == 0
    (sample,) = list(client.stats(running))
    assert sample.id == running
    assert sample.memory_usage > 0, sample
    assert sample.cpu_total_ns > 0, sample
    assert sample.system_cpu_ns > 0 and sample.online_cpus > 0 and sample.pids >= 1, sample

    with bounded(client.stats(running, stream=True), "two stats samples") as stream:
        samples = []
        for s in stream:
            samples.append(s)
            if len(samples) == 2:
                stream.cancel()  # ends the iteration without an error
    assert len(samples) == 2 and samples[1].cpu_total_ns >= samples[0].cpu_total_ns


def test_top_pause_unpause(client, running):
    top = client.top(running)
    assert "PID" in top.titles and "CMD" in top.titles, top.titles
    cmd = top.titles.index("CMD")
    assert any("sleep 3600" in row[cmd] for row in top.processes), top.processes

    client.pause(running)
    try:
        assert client.inspect(running)["State"]["Status"] == "paused"
        with pytest.raises(Conflict):
            client.exec_run(running, ["true"])
    finally:
        client.unpause(running)
    assert client.inspect(running)["State"]["Status"] == "running"


def test_interactive_attach_and_resize(client, pulled):
    # stdin_once: closing the attached stdin closes the container's (docker run -i).
    cid = client.create(pulled[0], ["cat"], open_stdin=True, stdin_once=True)
    try:
        client.start(cid)
        with bounded(client.attach_io(cid, stdin=True), "cat's echo and exit") as session:
            session.write(b"echo me\n")
            received = b""
            for entry in session:
                received += entry.data
                if received == b"echo me\n":
                    session.close_stdin()  # cat sees EOF and exits
        assert received == b"echo me\n"
        assert session.exit_code == 0 and not session.detached
    finally:
        client.remove(cid, force=True)

    cid = client.create(pulled[0], ["sh", "-c", "read x; stty size"], tty=True, open_stdin=True)
    try:
        client.start(cid)
        client.resize(cid, 33, 77)
        with bounded(client.attach_io(cid, stdin=True), "stty's output") as session:
            session.write(b"\n")
            result = session.wait()
        assert b"33 77" in result.stdout, result
        assert result.exit_code == 0
    finally:
        client.remove(cid, force=True)


def test_rename_restart_kill_update_prune(client, pulled):
    first, second = name("a"), name("b")
    cid = client.create(pulled[0], ["sleep", "3600"], name=first, labels={"pytest": "prune"})
    try:
        with pytest.raises(AlreadyExists):
            client.create(pulled[0], ["true"], name=first)
        client.rename(cid, second)
        assert client.inspect(second)["Id"] == cid
        client.start(cid)
        pid = client.inspect(cid)["State"]["Pid"]
        client.restart(cid, timeout=0)
        state = client.inspect(cid)["State"]
        assert state["Running"] and state["Pid"] != pid, state

        warnings = client.update(cid, Resources(memory=64 << 20, memory_swap=-1, pids_limit=50))
        assert isinstance(warnings, list)
        res = client.inspect(cid)["HostConfig"]
        assert res["Memory"] == 64 << 20 and res["PidsLimit"] == 50, res

        client.kill(cid, "KILL")
        assert client.wait(cid) == 137
        with pytest.raises(Conflict):
            client.remove_image(pulled[0])  # in use by the container

        report = client.prune_containers({"label": "pytest=prune"})
        assert report.deleted == [cid], report
        with pytest.raises(NotFound):
            client.inspect(cid)
    finally:
        with contextlib.suppress(NotFound):
            client.remove(cid, force=True)


def test_create_options_reach_the_container(client, pulled):
    cid = client.create(
        pulled[0],
        ["sh", "-c", "echo $GREETING; hostname; cat /etc/hosts | grep -c example-host"],
        env=["GREETING=hello"],
        hostname="pyhost",
        extra_hosts=["example-host:10.1.2.3"],
        resources={"memory": 32 << 20},
        tmpfs={"/scratch": "size=1m"},
        init=True,
    )
    try:
        assert isinstance(cid.warnings, list)
        a = client.attach(cid)
        client.start(cid)
        code, out = a.wait()
        assert code == 0, out
        assert b"".join(d for s, d in out if s == "stdout") == b"hello\npyhost\n1\n"
        doc = client.inspect(cid)
        assert doc["HostConfig"]["Memory"] == 32 << 20
        assert "/scratch" in doc["HostConfig"]["Tmpfs"]
    finally:
        client.remove(cid, force=True)


def test_files_copy_diff_export_commit(client, pulled):
    cid = client.create(pulled[0], ["sh", "-c", "echo changed > /etc/motd"])
    try:
        client.start(cid)
        assert client.wait(cid) == 0

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            data = b"copied in\n"
            ti = tarfile.TarInfo("hello.txt")
            ti.size = len(data)
            ti.mode = 0o640
            tar.addfile(ti, io.BytesIO(data))
        client.copy_to(cid, "/tmp", buf.getvalue())

        out = client.copy_from(cid, "/tmp/hello.txt")
        assert out.stat.name == "hello.txt" and out.stat.size == 10 and out.stat.mode & 0o777 == 0o640, out.stat
        with tarfile.open(fileobj=io.BytesIO(out.read())) as tar:
            assert tar.extractfile("hello.txt").read() == b"copied in\n"
        with pytest.raises(NotFound):
            client.copy_from(cid, "/no/such/path")

        changes = {(c.letter, c.path) for c in client.diff(cid)}
        assert ("A", "/tmp/hello.txt") in changes and ("A", "/etc/motd") in changes, changes

        with tarfile.open(fileobj=io.BytesIO(client.export(cid).read())) as tar:
            names = set(tar.getnames())
        assert {"bin/busybox", "tmp/hello.txt", "etc/motd"} <= {n.lstrip("./") for n in names}

        image = client.commit(cid, "pytest-committed:v1", comment="from python", changes=['CMD ["cat", "/etc/motd"]'])
        try:
            assert image.startswith("sha256:")
            assert client.history("pytest-committed:v1")[0].comment == "from python"
            run = client.create("pytest-committed:v1")
            a = client.attach(run)
            client.start(run)
            assert a.wait() == (0, [("stdout", b"changed\n")])
            client.remove(run)
        finally:
            client.remove_image("pytest-committed:v1", force=True)
    finally:
        client.remove(cid, force=True)


# -- volumes and networks ------------------------------------------------------


def test_volumes(client, pulled):
    vname = name("vol")
    vol = client.create_volume(vname, labels={"pytest": "vol"})
    assert (vol.name, vol.driver, vol.labels) == (vname, "local", {"pytest": "vol"})
    assert client.inspect_volume(vname).mountpoint == vol.mountpoint
    assert [v.name for v in client.volumes({"name": vname})] == [vname]
    assert vname not in {v.name for v in client.volumes({"label": "pytest=other"})}

    writer = client.create(pulled[0], ["sh", "-c", "echo kept > /data/f"], binds=[f"{vname}:/data"])
    try:
        client.start(writer)
        assert client.wait(writer) == 0
        assert client.inspect_volume(vname).ref_count == 1
        with pytest.raises(Conflict):
            client.remove_volume(vname)
    finally:
        client.remove(writer)
    reader = client.create(pulled[0], ["cat", "/data/f"], mounts=[{"type": "volume", "source": vname, "target": "/data", "read_only": True}])
    try:
        a = client.attach(reader)
        client.start(reader)
        assert a.wait() == (0, [("stdout", b"kept\n")])
    finally:
        client.remove(reader)

    client.remove_volume(vname)
    with pytest.raises(NotFound):
        client.inspect_volume(vname)
    client.remove_volume(vname, force=True)  # a missing volume with force is no error

    # A volume created without a name gets a random one but is not
    # anonymous (docker's rule): only prune -a removes it.
    unnamed = client.create_volume(labels={"pytest": "prune"})
    assert len(unnamed.name) == 64, unnamed
    assert unnamed.name not in client.prune_volumes(filters={"label": "pytest=prune"}).deleted
    report = client.prune_volumes(all=True, filters={"label": "pytest=prune"})
    assert report.deleted == [unnamed.name], report


def test_networks(client, pulled, daemon):
    lease = support.SubnetLease()
    nname = name("net")
    try:
        net = client.create_network(nname, subnet=lease.cidr, labels={"pytest": "net"})
        assert (net.name, net.driver, net.subnet, net.builtin) == (nname, "bridge", lease.cidr, False)
        with pytest.raises(AlreadyExists):
            client.create_network(nname)
        assert [n.name for n in client.networks({"name": nname})] == [nname]
        assert {"bridge", "host", "none"} <= {n.name for n in client.networks()}

        server = client.create(pulled[0], ["sleep", "3600"], name=name("srv"), network_mode=nname, network_aliases=["svc"])
        other = client.create(pulled[0], ["sleep", "3600"])
        try:
            client.start(server)
            client.start(other)
            doc = client.inspect_network(nname)
            assert server in doc["Containers"], doc
            ip = doc["Containers"][server]["IPv4Address"].split("/")[0]
            assert ip.startswith(str(lease.net.network_address)[:-1]), ip

            # Names resolve for containers started on the network.
            peer = client.create(pulled[0], ["ping", "-c", "1", "-W", "5", "svc"], network_mode=nname)
            a = client.attach(peer)
            client.start(peer)
            code, out = a.wait()
            client.remove(peer)
            assert code == 0, out

            # A container of the default bridge connected live reaches it.
            client.connect_network(nname, other, aliases=["other"])
            assert other in client.inspect_network(nname)["Containers"]
            r = client.exec_run(other, ["ping", "-c", "1", "-W", "5", ip])
            assert r.exit_code == 0, r
            with pytest.raises(Conflict):
                client.remove_network(nname)
            client.disconnect_network(nname, other)
            assert other not in client.inspect_network(nname)["Containers"]
            client.disconnect_network(nname, other, force=True)  # not connected: no error with force
        finally:
            client.remove(server, force=True)
            client.remove(other, force=True)
        client.remove_network(nname)
        with pytest.raises(NotFound):
            client.inspect_network(nname)

        client.create_network(nname + "-p", subnet=lease.cidr, labels={"pytest": "prune"})
        assert client.prune_networks({"label": "pytest=prune"}).deleted == [nname + "-p"]
    finally:
        for n in (nname, nname + "-p"):
            with contextlib.suppress(BerthError):
                client.remove_network(n)
        lease.release()


# -- system --------------------------------------------------------------------


def test_system(client, pulled, running):
    v = client.version()
    assert v.version and v.api_version and v.os == "linux", v
    info = client.info()
    assert info.containers >= 1 and info.containers_running >= 1 and info.images >= 1, info
    assert info.storage_driver == "overlayfs" and info.ncpu > 0 and info.mem_total > 0, info
    df = client.disk_usage()
    assert any(i.id == pulled[1] and i.containers >= 1 for i in df.images), df.images
    assert any(c.id == running for c in df.containers), df.containers


def test_namespaces_are_separate(client, running):
    other = client.with_namespace("pytest-other-" + uuid.uuid4().hex[:6])
    assert running not in {c.id for c in other.containers(all=True)}
    with pytest.raises(NotFound):
        other.inspect(running)
    assert running in {c.id for c in client.containers()}
