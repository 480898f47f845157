"""Fixtures' machinery for the tests against a real berthd: the daemon in
temp dirs with networking of its own, a busybox image made from
/bin/busybox, a real registry (Debian's docker-registry) on loopback, and
certificates for mutual TLS. Everything started here is stopped and removed
by the objects' close(), which the fixtures call also after a failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import io
import ipaddress
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import uuid
from typing import Iterator, List, Optional, Sequence

REPO = pathlib.Path(__file__).resolve().parents[3]
BERTHD = pathlib.Path(os.environ.get("BERTHD_BIN", str(REPO / "target" / "debug" / "berthd")))
BUSYBOX = pathlib.Path("/bin/busybox")

#: A liveness bound for waits (not a timing assertion).
WAIT = 60.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_tail(path: os.PathLike, limit: int = 8000) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


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


# -- subnets -------------------------------------------------------------------

LEASES = pathlib.Path("/run/lock/berth-test-subnets")


def _routed(net: ipaddress.IPv4Network) -> bool:
    out = subprocess.run(["ip", "-4", "-o", "route", "show"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        dst = line.split()[0] if line.split() else ""
        if dst == "default":
            continue
        try:
            other = ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False)
        except ValueError:
            continue
        if other.prefixlen > 0 and other.overlaps(net):
            return True
    return False


class SubnetLease:
    """A 10.63.y.0/24 no other test uses meanwhile: a file under /run/lock
    naming this process, as the Rust tests' leases (which take 10.64+) do;
    a dead owner's lease is taken over. release() frees it."""

    def __init__(self) -> None:
        LEASES.mkdir(parents=True, exist_ok=True)
        start = int.from_bytes(os.urandom(2), "little") % 256
        for i in range(256):
            y = (start + i) % 256
            net = ipaddress.ip_network(f"10.63.{y}.0/24")
            path = LEASES / str(net.network_address)
            try:
                owner = int(path.read_text().strip())
            except (OSError, ValueError):
                owner = None
            if owner is not None:
                if _pid_alive(owner):
                    continue
                path.unlink(missing_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            if _routed(net):
                path.unlink(missing_ok=True)
                continue
            self.net = net
            self.path = path
            return
        raise RuntimeError("no free 10.63.y.0/24 for a test network")

    @property
    def cidr(self) -> str:
        return str(self.net)

    def ip(self, n: int) -> str:
        return str(self.net.network_address + n)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# -- berthd --------------------------------------------------------------------


def _processes_mentioning(needle: str) -> List[int]:
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit() or int(e) == os.getpid():
            continue
        try:
            with open(f"/proc/{e}/cmdline", "rb") as f:
                if needle.encode() in f.read():
                    out.append(int(e))
        except OSError:
            pass
    return out


def _remove_cgroups(ids: Sequence[str]) -> None:
    base = pathlib.Path("/sys/fs/cgroup")
    bases = [p for p in base.iterdir() if p.is_dir()] + [base] if base.is_dir() else []
    for b in bases:
        berth = b / "berth"
        if not berth.is_dir():
            continue
        for ns in berth.iterdir():
            for cid in ids:
                cg = ns / cid
                if not cg.is_dir():
                    continue
                try:
                    for p in (cg / "cgroup.procs").read_text().split():
                        with contextlib.suppress(OSError):
                            os.kill(int(p), signal.SIGKILL)
                except OSError:
                    pass
                for _ in range(50):
                    try:
                        cg.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.02)


def _remove_stack_network(table: str, bridge: str) -> None:
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)
    subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
    alias = f"berth:{table}"
    for dev in pathlib.Path("/sys/class/net").iterdir():
        try:
            if (dev / "ifalias").read_text().strip() == alias:
                subprocess.run(["ip", "link", "del", dev.name], capture_output=True)
        except OSError:
            pass


class Berthd:
    """berthd all-in-one in a temp dir (root/ and state/ inside), with its
    own nftables table, default bridge and subnet. ``extra_args`` go before
    the (absent) subcommand, e.g. ``["--tcp", "127.0.0.1:PORT", ...]``.

    ``start()`` waits until the unix socket answers Ping (or fails with the
    daemon's log); ``close()`` removes containers, stops the daemon, kills
    what is left of it (shims), removes cgroups, mounts, network and dirs.
    """

    def __init__(self, extra_args: Sequence[str] = ()):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="berth-py-"))
        self.root = self.dir / "root"
        self.state = self.dir / "state"
        self.root.mkdir()
        self.state.mkdir()
        self.log_path = self.dir / "berthd.log"
        self.socket = self.state / "berth.sock"
        self.address = f"unix://{self.socket}"
        tag = uuid.uuid4().hex[:6]
        self.nft_table = f"berth-py-{tag}"
        self.bridge = f"bpy{tag}"
        self.subnet = SubnetLease()
        self.extra_args = list(extra_args)
        self.proc: Optional[subprocess.Popen] = None
        self._log = None

    def start(self) -> "Berthd":
        from berth_client import BerthError, Client

        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                str(BERTHD),
                "--root", str(self.root),
                "--state", str(self.state),
                "--nft-table", self.nft_table,
                "--bridge", self.bridge,
                "--bridge-subnet", self.subnet.cidr,
                *self.extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "BERTH_LOG": os.environ.get("BERTH_LOG", "info")},
        )
        deadline = time.monotonic() + WAIT
        while not self.socket.exists():
            self._check_alive(deadline, f"did not create {self.socket}")
            time.sleep(0.05)
        with Client(self.address, timeout=10) as c:
            while True:
                try:
                    c.ping()
                    break
                except BerthError:
                    self._check_alive(deadline, "does not answer Ping")
                    time.sleep(0.05)
        return self

    def _check_alive(self, deadline: float, what: str) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"berthd exited with {self.proc.returncode}:\n{self.log()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"berthd {what}:\n{self.log()}")

    def client(self, **kwargs):
        from berth_client import Client

        kwargs.setdefault("timeout", 120)
        return Client(self.address, **kwargs)

    def log(self) -> str:
        return read_tail(self.log_path)

    def container_ids(self) -> List[str]:
        ids = []
        tasks = self.state / "tasks"
        if tasks.is_dir():
            for ns in tasks.iterdir():
                if ns.is_dir():
                    ids += [b.name for b in ns.iterdir()]
        return ids

    def close(self) -> None:
        ids = self.container_ids()
        if self.proc is not None and self.proc.poll() is None:
            from berth_client import BerthError

            try:
                with self.client(timeout=30) as c:
                    for cont in c.containers(all=True):
                        ids.append(cont.id)
                        with contextlib.suppress(BerthError):
                            c.remove(cont.id, force=True, volumes=True)
            except Exception:
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
        for pid in _processes_mentioning(str(self.dir)):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        _remove_cgroups(sorted(set(ids)))
        unmount_under(str(self.dir))
        _remove_stack_network(self.nft_table, self.bridge)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.subnet.release()


@contextlib.contextmanager
def berthd(extra_args: Sequence[str] = ()) -> Iterator[Berthd]:
    d = Berthd(extra_args)
    try:
        yield d.start()
    finally:
        d.close()


# -- registry ------------------------------------------------------------------


class Registry:
    """Debian's docker-registry on 127.0.0.1 with a free port and its
    storage in a temp dir; close() stops it and removes the dir."""

    def __init__(self) -> None:
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="berth-py-registry-"))
        self.proc: Optional[subprocess.Popen] = None
        self.addr = ""
        self.log_path = self.dir / "registry.log"

    def start(self) -> "Registry":
        for _ in range(5):
            port = free_port()
            self.addr = f"127.0.0.1:{port}"
            config = self.dir / "config.yml"
            config.write_text(
                "version: 0.1\n"
                "log:\n  level: warn\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n  delete:\n    enabled: true\n"
                f"http:\n  addr: {self.addr}\n"
            )
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            log.close()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.proc.poll() is None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    return self
                time.sleep(0.05)
            self._stop()  # exited (port taken) or never listened: try another port
        raise RuntimeError(f"docker-registry did not start:\n{read_tail(self.log_path)}")

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self._stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- certificates --------------------------------------------------------------


class Pki:
    """A CA and certificates signed by it, written as PEM files into `dir`
    (python3-cryptography). ECDSA P-256 keys, PKCS#8."""

    def __init__(self, dir: pathlib.Path, name: str):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.dir = dir
        self.name = name
        dir.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_path = dir / f"{name}-ca.pem"
        self.ca_path.write_bytes(self._pem(self._cert))

    @staticmethod
    def _pem(cert) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, server: bool, expired: bool = False):
        """Writes <name>-<cn>.pem and <name>-<cn>-key.pem; returns their
        paths. A server certificate names 127.0.0.1 and localhost; an
        `expired` one was valid two days ago until yesterday."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=2 if expired else 0, hours=1))
            .not_valid_after(now + datetime.timedelta(days=-1 if expired else 1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_path = self.dir / f"{self.name}-{cn}.pem"
        key_path = self.dir / f"{self.name}-{cn}-key.pem"
        cert_path.write_bytes(self._pem(cert))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path
