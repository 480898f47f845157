"""End to end: a real berthd in temp dirs, driven through berth_client:
images imported from /bin/busybox, the container lifecycle, attach, errors.

Needs root and a built berthd (BERTHD_BIN, default <repo>/target/debug/berthd);
skipped otherwise.
"""

import uuid

import pytest

from conftest import needs_daemon

pytestmark = needs_daemon

IMAGE = "pytest-busybox:latest"


@pytest.fixture(scope="module")
def berthd(daemon, client):
    return client, str(daemon.root), daemon.log_path


@pytest.fixture(scope="module")
def image(busybox_image, client):
    assert busybox_image == IMAGE
    return client.inspect_image(IMAGE)["Id"]


def read(path) -> str:
    from support import read_tail

    return read_tail(path)


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
    assert any("pytest-busybox:other" in u for u in removed.untagged), removed
    assert removed.deleted == [], removed
    assert client.inspect_image(IMAGE)["Id"] == image
