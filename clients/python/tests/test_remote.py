"""Remote management: berthd serving its API on TCP with mutual TLS
(--tcp --tlscacert --tlscert --tlskey), or plain with --insecure-tcp, and
berth_client connecting with tcp:// addresses.

The certificates are made here (python3-cryptography): a CA, a server
certificate for 127.0.0.1 and localhost, client certificates from that CA,
from another CA, and an expired one. A client without a good certificate
must be refused before any RPC runs.
"""

import contextlib
import uuid

import grpc
import pytest

from berth_client import BerthError, Client, NotFound
from conftest import needs_daemon
import support

pytestmark = needs_daemon + [pytest.mark.usefixtures("dump_log_on_failure")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    good = support.Pki(d, "good")
    other = support.Pki(d, "other")
    return {
        "ca": good.ca_path,
        "server": good.issue("berthd", server=True),
        "client": good.issue("alice", server=False),
        "expired": good.issue("old-alice", server=False, expired=True),
        "other_ca": other.ca_path,
        "other_client": other.issue("mallory", server=False),
    }


@pytest.fixture(scope="module")
def port():
    return support.free_port()


@pytest.fixture(scope="module")
def daemon(pki, port):
    """berthd with the API on 127.0.0.1:PORT over mutual TLS (and its unix
    socket, which the tests use to look behind the TCP side)."""
    cert, key = pki["server"]
    args = ["--tcp", f"127.0.0.1:{port}", "--tlscacert", str(pki["ca"]), "--tlscert", str(cert), "--tlskey", str(key)]
    with support.berthd(args) as d:
        yield d


def tls_client(pki, port, host="127.0.0.1", cert="client", ca="ca", **kwargs):
    kwargs.setdefault("timeout", 60)
    if cert is not None:
        c, k = pki[cert]
        kwargs.update(tls_cert=c, tls_key=k)
    return Client(f"tcp://{host}:{port}", tls_ca_cert=pki[ca], **kwargs)


def test_good_client_certificate_works(daemon, client, pki, port):
    with tls_client(pki, port) as remote:
        v = remote.version()
        assert v.version == client.version().version and v.api_version, v

        # Client streaming (import), then a container run and an exec.
        tar = daemon.dir / "busybox.tar"
        support.busybox_tar(tar)
        image = remote.import_image(str(tar), "remote-busybox:latest")
        assert client.inspect_image("remote-busybox:latest")["Id"] == image
        cid = remote.create("remote-busybox:latest", ["sh", "-c", "echo over mTLS; sleep 3600"])
        try:
            attachment = remote.attach(cid)
            remote.start(cid)
            first = next(iter(attachment))
            assert (first.stream, first.data) == ("stdout", b"over mTLS\n")
            r = remote.exec_run(cid, ["cat"], input=b"two-way over TLS")
            assert (r.exit_code, r.stdout) == (0, b"two-way over TLS")
            attachment.cancel()
        finally:
            remote.remove(cid, force=True)

    # The certificate's other name works too.
    with tls_client(pki, port, host="localhost") as remote:
        remote.ping()


def test_environment_names_the_remote_daemon_and_its_certificates(daemon, pki, port, tmp_path, monkeypatch):
    import shutil
    cert, key = pki["client"]
    shutil.copy(pki["ca"], tmp_path / "ca.pem")
    shutil.copy(cert, tmp_path / "cert.pem")
    shutil.copy(key, tmp_path / "key.pem")
    monkeypatch.setenv("BERTH_HOST", f"tcp://127.0.0.1:{port}")
    monkeypatch.setenv("BERTH_CERT_PATH", str(tmp_path))
    monkeypatch.setenv("BERTH_TLS_VERIFY", "1")
    with Client(timeout=60) as remote:
        remote.ping()
    # Without BERTH_TLS_VERIFY the tcp address is plain and refused.
    monkeypatch.setenv("BERTH_TLS_VERIFY", "0")
    with Client(timeout=30) as remote:
        with pytest.raises(BerthError):
            remote.ping()


@pytest.mark.parametrize(
    "cert",
    [None, "other_client", "expired"],
    ids=["no-client-certificate", "certificate-of-another-ca", "expired-certificate"],
)
def test_bad_client_certificate_is_refused_before_any_rpc(daemon, client, pki, port, cert):
    name = "refused-" + uuid.uuid4().hex[:8]
    with tls_client(pki, port, cert=cert, timeout=30) as remote:
        with pytest.raises(BerthError) as err:
            remote.create_volume(name)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE, err.value
        with pytest.raises(BerthError):
            remote.version()
    # Nothing ran: the volume does not exist.
    with pytest.raises(NotFound):
        client.inspect_volume(name)


def test_client_refuses_a_server_it_does_not_trust(daemon, pki, port):
    with tls_client(pki, port, ca="other_ca", timeout=30) as remote:
        with pytest.raises(BerthError) as err:
            remote.version()
        assert err.value.code == grpc.StatusCode.UNAVAILABLE, err.value


def test_plain_client_on_the_tls_port_is_refused(daemon, port):
    with Client(f"tcp://127.0.0.1:{port}", timeout=30) as plain:
        with pytest.raises(BerthError) as err:
            plain.version()
        assert err.value.code == grpc.StatusCode.UNAVAILABLE, err.value


def test_tls_needs_the_files(pki, port):
    # The daemon refuses --tcp without TLS files and without --insecure-tcp.
    d = support.Berthd(["--tcp", f"127.0.0.1:{port}"])
    try:
        with pytest.raises(RuntimeError, match="--insecure-tcp"):
            d.start()
    finally:
        d.close()


def test_insecure_tcp(monkeypatch):
    tcp_port = support.free_port()
    with support.berthd(["--tcp", f"127.0.0.1:{tcp_port}", "--insecure-tcp"]) as d:
        assert "plain TCP" in d.log() or "insecure" in d.log(), d.log()
        monkeypatch.setenv("BERTH_HOST", f"tcp://127.0.0.1:{tcp_port}")
        with Client(timeout=60) as remote:  # the address from BERTH_HOST
            assert remote.address == f"tcp://127.0.0.1:{tcp_port}"
            remote.ping()
            tar = d.dir / "busybox.tar"
            support.busybox_tar(tar)
            remote.import_image(str(tar), "plain-busybox:latest")
            cid = remote.create("plain-busybox:latest", ["echo", "over plain tcp"])
            try:
                a = remote.attach(cid)
                remote.start(cid)
                assert a.wait() == (0, [("stdout", b"over plain tcp\n")])
            finally:
                with contextlib.suppress(BerthError):
                    remote.remove(cid, force=True)
