//! Remote management: the gateway on TCP with mutual TLS (certificates made
//! here), plain TCP only when asked for, the unix socket's group, and
//! grpc.health.v1 on every service.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use berth_integration::pki::{Issued, TestCa};
use berth_integration::{bin_dir, free_port, require_root, unique, Mode, Run, Stack};

/// `berth -H tcp://ADDR FLAGS... ARGS...`, with no default certificates
/// to fall back on (BERTH_CERT_PATH points at an empty directory).
fn remote(addr: &str, empty: &Path, flags: &[&str], args: &[&str]) -> Run {
    Command::new(bin_dir().join("berth"))
        .arg("-H")
        .arg(format!("tcp://{addr}"))
        .args(flags)
        .args(args)
        .env("BERTH_CERT_PATH", empty)
        .env_remove("BERTH_TLS_VERIFY")
        .stdin(Stdio::null())
        .output()
        .unwrap()
        .into()
}

fn tls_flags<'a>(ca: &'a Path, client: Option<&'a Issued>) -> Vec<&'a str> {
    let mut f = vec!["--tls", "--tlscacert", ca.to_str().unwrap()];
    if let Some(c) = client {
        f.extend([
            "--tlsverify",
            "--tlscert",
            c.cert.to_str().unwrap(),
            "--tlskey",
            c.key.to_str().unwrap(),
        ]);
    }
    f
}

#[test]
fn mutual_tls_admits_only_certificates_of_the_client_ca() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    let empty = pki.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let ca = TestCa::new(pki, "ca");
    let other_ca = TestCa::new(pki, "other-ca");
    let server = ca.server(pki, "server");
    let good = ca.client(pki, "good", false);
    let expired = ca.client(pki, "expired", true);
    let stranger = other_ca.client(pki, "stranger", false);
    let addr = format!("127.0.0.1:{}", free_port());
    let s = Stack::start_with_env(
        Mode::AllInOne,
        &[
            ("BERTH_TCP", addr.as_str()),
            ("BERTH_TLS_CACERT", ca.pem.to_str().unwrap()),
            ("BERTH_TLS_CERT", server.cert.to_str().unwrap()),
            ("BERTH_TLS_KEY", server.key.to_str().unwrap()),
        ],
    );
    let image = unique("mtls");
    s.import_busybox(&image);

    // Refused at the handshake: no RPC of theirs reaches the gateway, whose
    // log names every RPC it serves (berth_common=debug in the harness).
    for (what, client) in [
        ("no client certificate", None),
        ("a certificate of another CA", Some(&stranger)),
        ("an expired certificate", Some(&expired)),
    ] {
        let r = remote(
            &addr,
            &empty,
            &tls_flags(&ca.pem, client),
            &["volume", "ls"],
        );
        assert_ne!(r.code, 0, "a client with {what} was served: {r:?}");
        assert!(
            r.stderr
                .contains("Cannot connect to the berth daemon at tcp://"),
            "{what}: {r:?}"
        );
    }
    // Plain TCP to the TLS port gets nowhere either.
    let r = remote(&addr, &empty, &[], &["volume", "ls"]);
    assert_ne!(r.code, 0, "plain TCP was served: {r:?}");
    assert!(
        !s.daemon_logs()
            .contains("otel.name=berth.gateway.v1.Volumes.List"),
        "a refused client's RPC ran:\n{}",
        s.daemon_logs()
    );

    let flags = tls_flags(&ca.pem, Some(&good));
    let r = remote(&addr, &empty, &flags, &["version"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Server:"), "{r:?}");
    let r = remote(
        &addr,
        &empty,
        &flags,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &image,
            "echo",
            "over mTLS",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}\n{}", s.daemon_logs());
    assert_eq!(r.stdout, "over mTLS\n");
    let r = remote(&addr, &empty, &flags, &["volume", "ls"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(s
        .daemon_logs()
        .contains("otel.name=berth.gateway.v1.Volumes.List"));

    // The default certificate files of BERTH_CERT_PATH, and BERTH_TLS_VERIFY.
    let certs = pki.join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&ca.pem, certs.join("ca.pem")).unwrap();
    std::fs::copy(&good.cert, certs.join("cert.pem")).unwrap();
    std::fs::copy(&good.key, certs.join("key.pem")).unwrap();
    let r: Run = Command::new(bin_dir().join("berth"))
        .args(["ps", "-a"])
        .env("BERTH_HOST", format!("tcp://{addr}"))
        .env("BERTH_CERT_PATH", &certs)
        .env("BERTH_TLS_VERIFY", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("CONTAINER ID"), "{r:?}");

    // A context keeps the endpoint and copies of the TLS files.
    let config = pki.join("config");
    let berth = |args: &[&str]| -> Run {
        Command::new(bin_dir().join("berth"))
            .args(args)
            .env("BERTH_CONFIG", &config)
            .env("BERTH_CERT_PATH", &empty)
            .env_remove("BERTH_HOST")
            .env_remove("BERTH_CONTEXT")
            .env_remove("BERTH_TLS_VERIFY")
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    };
    let endpoint = format!(
        "host=tcp://{addr},ca={},cert={},key={}",
        ca.pem.display(),
        good.cert.display(),
        good.key.display()
    );
    let r = berth(&[
        "context",
        "create",
        "--description",
        "test host",
        "--docker",
        &endpoint,
        "remote1",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = berth(&["context", "use", "remote1"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = berth(&["context", "ls"]);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("remote1 *") && l.contains(&format!("tcp://{addr}"))),
        "{r:?}"
    );
    let r = berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "echo",
        "via context",
    ]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "via context\n"), "{r:?}");
    let r = berth(&["-H", &format!("tcp://{addr}"), "--context", "remote1", "ps"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("either specify --host or --context"),
        "{r:?}"
    );
    let r = berth(&["context", "rm", "remote1"]);
    assert_ne!(r.code, 0, "the context in use was removed: {r:?}");
    let r = berth(&["context", "rm", "-f", "remote1"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = berth(&["context", "show"]);
    assert_eq!(r.stdout, "default\n", "{r:?}");
}

/// Runs berthd with `args` in `dir`, expects it to refuse to start, and
/// returns what it printed.
fn berthd_refuses(dir: &Path, args: &[&str]) -> String {
    // Not the host's /etc/berth/config.toml.
    std::fs::write(dir.join("no-config.toml"), "").unwrap();
    let out = Command::new(bin_dir().join("berthd"))
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .args(args)
        .env("BERTHD_CONFIG", dir.join("no-config.toml"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "berthd {args:?} started: {err}");
    err
}

#[test]
fn tcp_without_tls_needs_insecure_tcp() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let err = berthd_refuses(dir.path(), &["--tcp", &addr, "gateway"]);
    assert!(
        err.contains("needs mutual TLS") && err.contains("--insecure-tcp"),
        "{err}"
    );
    // A TLS file that is not one is named.
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let missing = dir.path().join("missing-key.pem");
    let err = berthd_refuses(
        dir.path(),
        &[
            "--tcp",
            &addr,
            "--tlscacert",
            bogus.to_str().unwrap(),
            "--tlscert",
            bogus.to_str().unwrap(),
            "--tlskey",
            missing.to_str().unwrap(),
            "gateway",
        ],
    );
    assert!(
        err.contains("--tlskey") && err.contains("missing-key.pem"),
        "{err}"
    );

    let s = Stack::start_with_env(
        Mode::AllInOne,
        &[("BERTH_TCP", addr.as_str()), ("BERTH_INSECURE_TCP", "true")],
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let r = remote(&addr, &empty, &[], &["version"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Server:"), "{r:?}");
    assert!(
        s.daemon_logs().contains("--insecure-tcp"),
        "no warning about plain TCP:\n{}",
        s.daemon_logs()
    );
}

/// Runs `berth version` on `host` as user nobody with `groups`.
fn version_as_nobody(berth: &Path, host: &str, groups: &[u32]) -> Run {
    let groups: Vec<nix::unistd::Gid> = groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    let gid = groups[0];
    let mut cmd = Command::new(berth);
    cmd.args(["-H", host, "version"]).stdin(Stdio::null());
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&groups)?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(65534))?;
            Ok(())
        });
    }
    cmd.output().unwrap().into()
}

#[test]
fn the_api_socket_is_for_root_and_the_berth_group_only() {
    require_root!();
    let gid = 40000 + (std::process::id() % 20000);
    let s = Stack::start_with_env(Mode::Split, &[("BERTH_GROUP", &gid.to_string())]);
    let sock = s.state.join("berth.sock");
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), gid);
    for svc in ["content", "snapshots", "tasks", "network"] {
        let meta = std::fs::metadata(s.state.join(format!("{svc}.sock"))).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o600,
            "{svc}.sock is not root's alone"
        );
    }
    // A copy of the CLI that user nobody can run, wherever the build is.
    let berth = s.dir.join("berth-cli");
    std::fs::copy(bin_dir().join("berth"), &berth).unwrap();
    std::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = s.host();
    let r = version_as_nobody(&berth, &host, &[gid]);
    assert_eq!(
        r.code, 0,
        "a member of the socket's group was refused: {r:?}"
    );
    assert!(r.stdout.contains("Server:"), "{r:?}");
    let r = version_as_nobody(&berth, &host, &[gid + 1]);
    assert_ne!(r.code, 0, "a stranger was served: {r:?}");
    assert!(r.stderr.contains("permission denied"), "{r:?}");

    // A group that does not exist, given explicitly, is an error.
    let dir = tempfile::tempdir().unwrap();
    let err = berthd_refuses(
        dir.path(),
        &["--group", "no-such-group-berth-test", "gateway"],
    );
    assert!(
        err.contains("no-such-group-berth-test: no such group"),
        "{err}"
    );
}

#[test]
fn every_service_answers_grpc_health_checks() {
    require_root!();
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let s = Stack::start(Mode::Split);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let check = |sock: &str, service: &str| {
        rt.block_on(async {
            HealthClient::new(berth_common::connect_unix(s.state.join(sock)))
                .check(HealthCheckRequest {
                    service: service.to_string(),
                })
                .await
                .map(|r| r.into_inner().status)
        })
    };
    for (sock, service) in [
        ("content.sock", "berth.content.v1.Content"),
        ("snapshots.sock", "berth.snapshots.v1.Snapshots"),
        ("tasks.sock", "berth.tasks.v1.Tasks"),
        ("network.sock", "berth.network.v1.Network"),
        ("berth.sock", "berth.gateway.v1.Containers"),
        ("berth.sock", "berth.gateway.v1.Images"),
        ("berth.sock", "berth.gateway.v1.Networks"),
    ] {
        for name in ["", service] {
            assert_eq!(
                check(sock, name).unwrap_or_else(|e| panic!("{sock} {name:?}: {e}")),
                ServingStatus::Serving as i32,
                "{sock} {name:?}"
            );
        }
    }
    let err = check("content.sock", "berth.gateway.v1.Containers").unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}
