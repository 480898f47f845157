"""Makes `berth_client` importable from the source tree, generating its gRPC
code first when clients/python/generate.sh has not been run yet or a .proto
changed since; provides the fixtures of the tests against a real berthd."""

import os
import pathlib
import signal
import subprocess
import sys

import pytest

PYTHON_DIR = pathlib.Path(__file__).resolve().parent.parent
REPO = PYTHON_DIR.parent.parent
GENERATED = PYTHON_DIR / "berth_client" / "_gen" / "berth" / "gateway" / "v1" / "gateway_pb2.py"


def _stale() -> bool:
    if not GENERATED.exists():
        return True
    made = GENERATED.stat().st_mtime
    return any(p.stat().st_mtime > made for p in (REPO / "proto").rglob("*.proto"))


if _stale():
    subprocess.run(
        [str(PYTHON_DIR / "generate.sh")],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
    )

for p in (str(PYTHON_DIR), str(pathlib.Path(__file__).resolve().parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

import support  # noqa: E402


def _terminate(signum, frame):
    # SIGTERM (a CI timeout, kill) ends the run like Ctrl-C, so pytest still
    # runs the fixtures' teardown: daemons, registry, mounts, networks.
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _terminate)

#: Marks tests that need a real daemon: root, a built berthd, busybox-static.
needs_daemon = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (berthd runs containers)"),
    pytest.mark.skipif(
        not support.BERTHD.is_file(),
        reason=f"berthd is not built at {support.BERTHD} (cargo build -p berthd, or set BERTHD_BIN)",
    ),
    pytest.mark.skipif(not support.BUSYBOX.is_file(), reason="needs /bin/busybox (busybox-static)"),
]


@pytest.fixture(scope="module")
def daemon():
    """berthd all-in-one in temp dirs, for the tests of one module; stopped
    and everything it made removed afterwards, also after a failure."""
    with support.berthd() as d:
        yield d


@pytest.fixture(scope="module")
def client(daemon):
    with daemon.client() as c:
        yield c


@pytest.fixture(scope="module")
def busybox_image(daemon, client):
    """A busybox image imported into the module's daemon: its reference."""
    tar = daemon.dir / "busybox.tar"
    support.busybox_tar(tar)
    ref = "pytest-busybox:latest"
    image_id = client.import_image(str(tar), ref, changes=['CMD ["sh"]'])
    assert image_id.startswith("sha256:") and len(image_id) == 71, image_id
    return ref


@pytest.fixture
def dump_log_on_failure(request, daemon):
    """Prints the daemon's log when the test fails."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"--- berthd log ---\n{daemon.log()}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
