"""End to end: a real berthd in temp dirs, driven through berth_client.

Needs root and a built berthd (BERTHD_BIN, default <repo>/target/debug/berthd);
skipped otherwise. The image is made from /bin/busybox (busybox-static).
"""

import ctypes
import io
import os
import pathlib
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
BERTHD = pathlib.Path(os.environ.get("BERTHD_BIN", str(REPO / "target" / "debug" / "berthd")))
BUSYBOX = pathlib.Path("/bin/busybox")
IMAGE = "pytest-busybox:latest"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (berthd runs containers)"),
    pytest.mark.skipif(
        not BERTHD.is_file(),
        reason=f"berthd is not built at {BERTHD} (cargo build -p berthd, or set BERTHD_BIN)",
    ),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs /bin/busybox (busybox-static)"),
]


def busybox_tar(path: pathlib.Path) -> None:
    """A root filesystem: bin/busybox, a symlink per applet, a few dirs and
    /etc/passwd and /etc/group."""
    out = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    applets = sorted({a.strip() for a in out.stdout.split() if a.strip() and a.strip() != "busybox"})

    def info(name, kind, mode, size=0):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.size = size
        ti.uid = ti.gid = 0
        ti.mtime = 1_700_000_000
        return ti

    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for d in ["bin", "etc", "dev", "proc", "sys", "root", "home", "usr", "usr/bin"]:
            tar.addfile(info(d, tarfile.DIRTYPE, 0o755))
        tar.addfile(info("tmp", tarfile.DIRTYPE, 0o1777))
        data = BUSYBOX.read_bytes()
        tar.addfile(info("bin/busybox", tarfile.REGTYPE, 0o755, len(data)), io.BytesIO(data))
        for a in applets:
            ti = info(f"bin/{a}", tarfile.SYMTYPE, 0o777)
            ti.linkname = "busybox"
            tar.addfile(ti)
        for name, text in [
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ]:
            b = text.encode()
            tar.addfile(info(name, tarfile.REGTYPE, 0o644, len(b)), io.BytesIO(b))


def unmount_under(*dirs: str) -> None:
    """Detaches every mount below `dirs` (deepest first), so that removing
    the temp dirs never reaches into a mount left behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    mnt_detach = 2
    prefixes = [os.path.realpath(d).rstrip("/") + "/" for d in dirs]
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4].replace("\\040", " ") for line in f]
    except OSError:
        return
    points = [p for p in points if any((p + "/").startswith(pre) for pre in prefixes)]
    for p in sorted(set(points), key=len, reverse=True):
        libc.umount2(p.encode(), mnt_detach)


@pytest.fixture(scope="module")
def berthd():
    """Starts berthd all-in-one in temp dirs; stops it and removes them
    afterwards, also after a failure."""
    root = tempfile.mkdtemp(prefix="berth-py-root-")
    state = tempfile.mkdtemp(prefix="berth-py-state-")
    log_path = os.path.join(root, "berthd.log")
    log = open(log_path, "wb")
    proc = None
    # Networking of its own (outside the 10.64+ ranges the Rust tests use),
    # removed afterwards.
    tag = f"{os.getpid() & 0xFFFF:04x}"
    table, bridge = f"berth-py-{tag}", f"bpy{tag}"
    subnet = f"10.63.{os.getpid() % 256}.0/24"
    try:
        proc = subprocess.Popen(
            [
                str(BERTHD), "--root", root, "--state", state,
                "--nft-table", table, "--bridge", bridge, "--bridge-subnet", subnet,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        sock = os.path.join(state, "berth.sock")
        deadline = time.monotonic() + 60
        while not os.path.exists(sock):
            if proc.poll() is not None:
                pytest.fail(f"berthd exited with {proc.returncode}:\n{read(log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"berthd did not create {sock}:\n{read(log_path)}")
            time.sleep(0.05)

        from berth_client import BerthError, Client

        client = Client(f"unix://{sock}", timeout=120)
        while True:
            try:
                client.ping()
                break
            except BerthError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"berthd does not answer Ping:\n{read(log_path)}")
                time.sleep(0.05)
        yield client, root, log_path
        client.close()
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        unmount_under(root, state)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")[-8000:]
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def image(berthd):
    client, root, _ = berthd
    tar = pathlib.Path(root) / "busybox.tar"
    busybox_tar(tar)
    image_id = client.import_image(str(tar), IMAGE)
    assert image_id.startswith("sha256:") and len(image_id) == 71, image_id
    return image_id


def test_image_import_list_inspect(berthd, image):
    client, _, _ = berthd
    listed = [i for i in client.images() if IMAGE in i.repo_tags]
    assert [i.id for i in listed] == [image]
    assert listed[0].size > 0

    doc = client.inspect_image(IMAGE)
    assert doc["Id"] == image
    assert IMAGE in doc["RepoTags"]
    assert client.inspect_image(image)["Id"] == image


def test_container_lifecycle(berthd, image):
    from berth_client import NotFound

    client, _, log_path = berthd
    name = "pytest-" + uuid.uuid4().hex[:8]
    cid = client.create(IMAGE, ["echo", "hello from python"], name=name)
    assert len(cid) == 64, cid
    try:
        client.start(cid)
        assert client.wait(cid) == 0, read(log_path)

        logs = client.logs(cid)
        assert b"".join(d for s, d in logs if s == "stdout") == b"hello from python\n"
        assert [d for s, d in logs if s == "stderr"] == []

        doc = client.inspect(cid)
        assert doc["Id"] == cid
        assert doc["Name"].lstrip("/") == name
        assert doc["State"]["Status"] == "exited"
        assert doc["State"]["ExitCode"] == 0

        listed = {c.id: c for c in client.containers(all=True)}
        assert cid in listed
        assert listed[cid].names == [name]
        assert listed[cid].state == "exited"
        assert cid not in {c.id for c in client.containers()}
    finally:
        client.remove(cid, force=True)

    with pytest.raises(NotFound):
        client.inspect(cid)
    assert cid not in {c.id for c in client.containers(all=True)}


def test_attach_before_start_sees_all_output(berthd, image):
    client, _, _ = berthd
    cid = client.create(IMAGE, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    try:
        attachment = client.attach(cid)
        client.start(cid)
        code, output = attachment.wait()
        assert code == 3
        assert b"".join(d for s, d in output if s == "stdout") == b"out\n"
        assert b"".join(d for s, d in output if s == "stderr") == b"err\n"
    finally:
        client.remove(cid, force=True)


def test_missing_command_exit_code(berthd, image):
    from berth_client import BerthError

    client, _, _ = berthd
    cid = client.create(IMAGE, ["/no/such/command"])
    try:
        with pytest.raises(BerthError) as err:
            client.start(cid)
        assert err.value.exit_code == 127
    finally:
        client.remove(cid, force=True)


def test_remove_image(berthd, image):
    client, _, _ = berthd
    client.tag(IMAGE, "pytest-busybox:other")
    removed = client.remove_image("pytest-busybox:other")
    assert any("pytest-busybox:other" in u for u in removed["untagged"]), removed
    assert removed["deleted"] == [], removed
    assert client.inspect_image(IMAGE)["Id"] == image
