//! End-to-end: pull, push, login, logout and search against Debian's
//! docker-registry, with skopeo as the independent peer.

use berth_integration::registry::{
    oci_layers_layout, oci_layout, CutProxy, Faults, FlakyProxy, Registry, TokenServer, Variant,
};
use berth_integration::{require_root, unique, Mode, Stack};

/// A stack whose CLI keeps its credentials in the stack's own dir.
fn stack() -> Stack {
    let s = Stack::start(Mode::AllInOne);
    std::fs::create_dir_all(s.dir.join("berth-config")).unwrap();
    s
}

fn berth_env(s: &Stack, args: &[&str], stdin: Option<&[u8]>) -> berth_integration::Run {
    let mut cmd = s.cmd();
    cmd.env("BERTH_CONFIG", s.dir.join("berth-config"))
        .env("DOCKER_CONFIG", s.dir.join("docker-config"))
        .args(args);
    berth_integration::run_with_stdin(cmd, stdin.unwrap_or(b""))
}

#[test]
fn pull_a_multi_platform_image_and_run_it() {
    require_root!();
    let s = stack();
    let reg = Registry::start(None);
    let layout = oci_layout(
        &s.dir,
        &[
            Variant {
                arch: "amd64",
                files: &[("etc/which", "amd64\n")],
                layer: "gzip",
            },
            Variant {
                arch: "arm64",
                files: &[("etc/which", "arm64\n")],
                layer: "gzip",
            },
        ],
    );
    reg.skopeo_push(&layout, "multi/bb:1.0");
    let name = format!("{}/multi/bb:1.0", reg.addr);

    let r = berth_env(&s, &["pull", &name], None);
    assert_eq!(r.code, 0, "{r:?}\n{}", s.daemon_logs());
    assert!(r.stdout.contains("1.0: Pulling from multi/bb"), "{r:?}");
    assert!(r.stdout.contains(": Pull complete"), "{r:?}");
    let index_digest = reg.skopeo_raw("multi/bb:1.0");
    assert_eq!(
        index_digest["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert!(r.stdout.contains("Digest: sha256:"), "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("Status: Downloaded newer image for {name}")),
        "{r:?}"
    );
    assert!(r.stdout.trim_end().ends_with(&name), "{r:?}");
    // This host's variant was chosen.
    let out = s.berth(&["run", "--rm", &name, "cat", "/etc/which"]).ok();
    assert_eq!(out, "amd64\n");
    let arch = s
        .berth(&["image", "inspect", "-f", "{{.Architecture}}", &name])
        .ok();
    assert_eq!(arch.trim(), "amd64");

    // Pulling again: nothing to fetch.
    let r = berth_env(&s, &["pull", &name], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("Status: Image is up to date for {name}")),
        "{r:?}"
    );
    assert!(r.stdout.contains("Already exists"), "{r:?}");

    // Another platform on request; the shared busybox layer is not fetched
    // again.
    let arm = format!("{}/multi/bb:1.0", reg.addr);
    s.berth(&["rmi", &name]).ok();
    let r = berth_env(&s, &["pull", "--platform", "linux/arm64", &arm], None);
    assert_eq!(r.code, 0, "{r:?}");
    let arch = s
        .berth(&["image", "inspect", "-f", "{{.Architecture}}", &arm])
        .ok();
    assert_eq!(arch.trim(), "arm64");
    let r = berth_env(&s, &["pull", "--platform", "linux/s390x", &arm], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("no matching manifest for linux/s390x in the manifest list entries"),
        "{r:?}"
    );
}

#[test]
fn pull_errors_name_the_problem_and_store_nothing() {
    require_root!();
    let s = stack();
    let reg = Registry::start(None);
    let r = berth_env(&s, &["pull", &format!("{}/no/such:tag", reg.addr)], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("manifest unknown"), "{r:?}");
    let r = berth_env(&s, &["pull", "in valid"], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("invalid reference format"), "{r:?}");
    // A registry that is not there.
    let r = berth_env(&s, &["pull", "127.0.0.1:1/x/y"], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("onnect"), "{r:?}");
    assert_eq!(s.berth(&["images", "-q"]).ok(), "");
}

#[test]
fn push_to_a_registry_then_pull_it_back_and_skopeo_reads_it() {
    require_root!();
    let s = stack();
    s.import_busybox("busybox");
    let reg = Registry::start(None);
    let name = format!("{}/pushed/bb:v1", reg.addr);
    s.berth(&["tag", "busybox", &name]).ok();
    let r = berth_env(&s, &["push", &name], None);
    assert_eq!(r.code, 0, "{r:?}\n{}", s.daemon_logs());
    assert!(
        r.stdout.starts_with(&format!(
            "The push refers to repository [{}/pushed/bb]",
            reg.addr
        )),
        "{r:?}"
    );
    assert!(r.stdout.contains(": Pushed"), "{r:?}");
    let last = r.stdout.lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("v1: digest: sha256:"), "{r:?}");
    // skopeo sees the manifest berth pushed.
    let m = reg.skopeo_raw("pushed/bb:v1");
    assert_eq!(m["layers"].as_array().map(|a| a.len()), Some(1), "{m}");
    let digest = last
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();

    // Pushing again: the layer exists. Another repository mounts it.
    let r = berth_env(&s, &["push", &name], None);
    assert!(r.stdout.contains("Layer already exists"), "{r:?}");
    let other = format!("{}/other/bb:v1", reg.addr);
    s.berth(&["tag", "busybox", &other]).ok();
    let r = berth_env(&s, &["push", &other], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Mounted from pushed/bb"), "{r:?}");

    // Pulled back into a fresh stack by digest, it runs.
    let s2 = stack();
    let by_digest = format!("{}/pushed/bb@{digest}", reg.addr);
    let r = berth_env(&s2, &["pull", &by_digest], None);
    assert_eq!(r.code, 0, "{r:?}\n{}", s2.daemon_logs());
    assert_eq!(
        s2.berth(&["run", "--rm", &by_digest, "echo", "round trip"])
            .ok(),
        "round trip\n"
    );
    // Pushing what does not exist.
    let r = berth_env(&s, &["push", &format!("{}/none/x:1", reg.addr)], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("An image does not exist locally with the tag"),
        "{r:?}"
    );
}

#[test]
fn login_logout_and_authenticated_pull_push() {
    require_root!();
    let s = stack();
    s.import_busybox("busybox");
    let user = unique("user");
    let reg = Registry::start(Some((&user, "s3cret-pw")));
    let name = format!("{}/private/bb:1", reg.addr);
    s.berth(&["tag", "busybox", &name]).ok();
    // Without credentials the registry refuses.
    let r = berth_env(&s, &["push", &name], None);
    assert_eq!(r.code, 1, "{r:?}");
    // A wrong password is refused and nothing is stored.
    let r = berth_env(
        &s,
        &["login", "-u", &user, "--password-stdin", &reg.addr],
        Some(b"wrong\n"),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("401"), "{r:?}");
    let cfg = s.dir.join("berth-config/config.json");
    assert!(!cfg.exists() || !std::fs::read_to_string(&cfg).unwrap().contains(&reg.addr));
    // The right one is stored, readable by root only, and never printed.
    let r = berth_env(
        &s,
        &["login", "-u", &user, "--password-stdin", &reg.addr],
        Some(b"s3cret-pw\n"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Login Succeeded"), "{r:?}");
    assert!(!r.stdout.contains("s3cret") && !r.stderr.contains("s3cret"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!s.daemon_logs().contains("s3cret"));

    let r = berth_env(&s, &["push", &name], None);
    assert_eq!(r.code, 0, "{r:?}");
    s.berth(&["rmi", &name]).ok();
    let r = berth_env(&s, &["pull", &name], None);
    assert_eq!(r.code, 0, "{r:?}");

    // Credentials from Docker's config.json are honoured too.
    let r = berth_env(&s, &["logout", &reg.addr], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r
        .stdout
        .contains(&format!("Removing login credentials for {}", reg.addr)));
    s.berth(&["rmi", &name]).ok();
    let r = berth_env(&s, &["pull", &name], None);
    assert_eq!(r.code, 1, "{r:?}");
    use base64::Engine;
    let docker_auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:s3cret-pw"));
    std::fs::create_dir_all(s.dir.join("docker-config")).unwrap();
    std::fs::write(
        s.dir.join("docker-config/config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{docker_auth}"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let r = berth_env(&s, &["pull", &name], None);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn search_a_registry_catalog() {
    require_root!();
    let s = stack();
    s.import_busybox("busybox");
    let reg = Registry::start(None);
    for repo in ["team/alpha-tools", "team/beta", "alpha/base"] {
        let name = format!("{}/{repo}:1", reg.addr);
        s.berth(&["tag", "busybox", &name]).ok();
        assert_eq!(berth_env(&s, &["push", "-q", &name], None).code, 0);
    }
    let r = berth_env(&s, &["search", &format!("{}/alpha", reg.addr)], None);
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "DESCRIPTION", "STARS", "OFFICIAL"]
    );
    let names: Vec<&str> = lines[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["alpha/base", "team/alpha-tools"], "{r:?}");
    let r = berth_env(
        &s,
        &[
            "search",
            "--limit",
            "1",
            "--format",
            "{{.Name}}",
            &format!("{}/a", reg.addr),
        ],
        None,
    );
    assert_eq!(r.stdout.lines().count(), 1, "{r:?}");
}

/// A tar entry with its own mode, owner and mtime.
fn entry(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    path: &str,
    mode: u32,
    (uid, gid, mtime): (u64, u64, u64),
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

/// Layers on top of busybox whose files need directories the layer lacks
/// ("implicit" ones), below directories with unusual modes and owners.
fn layered_tars(dir: &std::path::Path) -> Vec<Vec<u8>> {
    use tar::EntryType::{Directory as D, Regular as F};
    let base = std::fs::read(berth_integration::fixtures::busybox_tar_in(dir)).unwrap();
    let t = (0, 0, 1_600_000_000);
    let mut l2 = tar::Builder::new(Vec::new());
    entry(&mut l2, D, "opt", 0o750, (1000, 50, 1_500_000_001), b"");
    entry(&mut l2, F, "opt/readme", 0o644, t, b"readme\n");
    entry(&mut l2, D, "var", 0o755, t, b"");
    entry(&mut l2, D, "var/mail", 0o2775, (0, 50, 1_500_000_002), b"");
    entry(&mut l2, D, "srv", 0o711, (0, 0, 1_500_000_003), b"");
    entry(&mut l2, F, "tmp/from-l2", 0o644, t, b"l2\n");
    // Big enough to arrive in many chunks, also compressed.
    let big = noise(3_000_000);
    entry(&mut l2, F, "var/big", 0o600, t, &big);
    let mut l3 = tar::Builder::new(Vec::new());
    entry(&mut l3, F, "opt/app/bin/tool", 0o755, t, b"tool\n");
    entry(&mut l3, F, "var/mail/box/x", 0o600, t, b"x\n");
    entry(&mut l3, F, "etc/l3.conf", 0o644, t, b"conf\n");
    entry(&mut l3, F, "tmp/from-l3", 0o644, t, b"l3\n");
    entry(&mut l3, F, "srv/x/f", 0o644, t, b"f\n");
    entry(&mut l3, D, "srv", 0o700, t, b"");
    entry(&mut l3, F, "etc/.wh.group", 0o644, t, b"");
    let mut l4 = tar::Builder::new(Vec::new());
    entry(&mut l4, F, "opt/app/data", 0o644, t, b"data\n");
    entry(&mut l4, F, "new/deep/file", 0o644, t, b"n\n");
    vec![
        base,
        l2.into_inner().unwrap(),
        l3.into_inner().unwrap(),
        l4.into_inner().unwrap(),
    ]
}

/// `len` bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The exported root filesystem of a new container of `image`: path →
/// type, mode, owner, content and link, and the mtime unless it is later
/// than `since` (directories made by the unpacker during the test).
fn rootfs_of(s: &Stack, image: &str, since: u64) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest;
    use std::io::Read;
    let name = unique("rootfs");
    s.berth(&["create", "--name", &name, image]).ok();
    let file = s.dir.join(format!("{name}.tar"));
    s.berth(&["export", "-o", file.to_str().unwrap(), &name])
        .ok();
    s.berth(&["rm", &name]).ok();
    let bytes = std::fs::read(&file).unwrap();
    let mut out = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(&bytes[..]);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let mtime = h.mtime().unwrap();
        let mtime = if mtime > since {
            "now".to_string()
        } else {
            mtime.to_string()
        };
        let digest = hex::encode(sha2::Sha256::digest(&data));
        out.insert(
            path,
            format!(
                "{:?} mode={:o} owner={}:{} mtime={mtime} link={link:?} data={digest}",
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
            ),
        );
    }
    out
}

fn single_image(s: &Stack, reg: &Registry, repo_tag: &str) -> serde_json::Value {
    single_image_with(s, reg, repo_tag, "gzip")
}

fn single_image_with(s: &Stack, reg: &Registry, repo_tag: &str, layer: &str) -> serde_json::Value {
    let layout = oci_layout(
        &s.dir,
        &[Variant {
            arch: "amd64",
            files: &[("etc/flaky", "yes\n")],
            layer,
        }],
    );
    reg.skopeo_push(&layout, repo_tag);
    reg.skopeo_raw(repo_tag)
}

#[test]
fn pull_retries_5xx_and_resumes_a_broken_download() {
    require_root!();
    let s = stack();
    let reg = Registry::start(None);
    single_image(&s, &reg, "flaky/bb:1");
    let proxy = FlakyProxy::start(
        &reg.addr,
        Faults {
            fail_first: 2,
            cut_blob_after: Some(200_000),
            ..Default::default()
        },
    );
    let name = format!("{}/flaky/bb:1", proxy.addr);
    let r = berth_env(&s, &["pull", &name], None);
    assert_eq!(r.code, 0, "{r:?}\n{}", s.daemon_logs());
    let seen = proxy.seen();
    // The two 503s were retried, and the cut download went on from where
    // it broke, not from the start.
    assert!(seen.len() > 2, "{seen:?}");
    let resumed = seen.iter().any(|l| {
        l.contains("/blobs/sha256:")
            && l.split("bytes=")
                .nth(1)
                .is_some_and(|v| !v.starts_with("0-"))
    });
    assert!(resumed, "no ranged blob request after the cut: {seen:?}");
    assert_eq!(
        s.berth(&["run", "--rm", &name, "cat", "/etc/flaky"]).ok(),
        "yes\n"
    );
}

#[test]
fn a_corrupted_layer_is_refused_and_never_stored() {
    require_root!();
    let s = stack();
    let reg = Registry::start(None);
    let manifest = single_image(&s, &reg, "bad/bb:1");
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    // A corrupted layer (it is unpacked while it downloads), then a
    // corrupted config.
    for bad in [&layers[0], &config] {
        let proxy = FlakyProxy::start(
            &reg.addr,
            Faults {
                corrupt_blobs: Some(bad.clone()),
                ..Default::default()
            },
        );
        let r = berth_env(&s, &["pull", &format!("{}/bad/bb:1", proxy.addr)], None);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stderr.contains("digest"), "{r:?}");
        assert!(r.stderr.contains(bad.as_str()), "{r:?}");
        assert_eq!(s.berth(&["images", "-q"]).ok(), "");
        // Every stored blob is what its name says (the config of the first
        // round may be there, intact, until a collection).
        for entry in std::fs::read_dir(s.root.join("content/blobs/sha256")).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
            assert_eq!(
                path.file_name().unwrap().to_string_lossy(),
                hex,
                "a corrupted blob was stored"
            );
        }
        // Nor unpacked: what was streamed into snapshots is gone with it.
        let snaps: Vec<_> = std::fs::read_dir(s.root.join("snapshots/snapshots"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(snaps.is_empty(), "snapshots left: {snaps:?}");
    }
    // The same image straight from the registry is fine.
    let r = berth_env(&s, &["pull", &format!("{}/bad/bb:1", reg.addr)], None);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn an_interrupted_pull_resumes_after_a_daemon_crash() {
    require_root!();
    let mut s = stack();
    let reg = Registry::start(None);
    single_image(&s, &reg, "slow/bb:1");
    let proxy = FlakyProxy::start(
        &reg.addr,
        Faults {
            throttle: Some(150_000),
            ..Default::default()
        },
    );
    let name = format!("{}/slow/bb:1", proxy.addr);
    let mut cmd = s.cmd();
    cmd.env("BERTH_CONFIG", s.dir.join("berth-config"))
        .args(["pull", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut first = cmd.spawn().unwrap();
    // Let the big layer get well under way, then crash the daemon.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !proxy.seen().iter().any(|l| l.contains("/blobs/sha256:")) {
        assert!(std::time::Instant::now() < deadline, "no blob request");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(2500));
    s.kill9_and_restart();
    let _ = first.wait();
    let before = proxy.seen().len();
    let r = berth_env(&s, &["pull", &name], None);
    assert_eq!(r.code, 0, "{r:?}\n{}", s.daemon_logs());
    let after: Vec<String> = proxy.seen()[before..].to_vec();
    let resumed = after.iter().any(|l| {
        l.contains("/blobs/sha256:")
            && l.split("bytes=")
                .nth(1)
                .is_some_and(|v| !v.starts_with("0-"))
    });
    assert!(resumed, "the pull started over: {after:?}");
    assert_eq!(
        s.berth(&["run", "--rm", &name, "cat", "/etc/flaky"]).ok(),
        "yes\n"
    );
}

#[test]
fn run_pulls_a_missing_image_and_mirrors_are_tried_first() {
    require_root!();
    let reg = Registry::start(None);
    // The image lives only in `reg`; the name points at a registry that is
    // not there, whose mirror is `reg`.
    let s = Stack::start_with_env(
        Mode::AllInOne,
        &[(
            "BERTH_REGISTRY_MIRRORS",
            &format!("127.0.0.1:1=http://{}", reg.addr),
        )],
    );
    std::fs::create_dir_all(s.dir.join("berth-config")).unwrap();
    single_image(&s, &reg, "mirrored/bb:1");
    let r = berth_env(
        &s,
        &[
            "run",
            "--rm",
            "127.0.0.1:1/mirrored/bb:1",
            "cat",
            "/etc/flaky",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}\n{}", s.daemon_logs());
    assert_eq!(r.stdout, "yes\n");
    assert!(
        r.stderr
            .contains("Unable to find image '127.0.0.1:1/mirrored/bb:1' locally"),
        "{r:?}"
    );
    // --pull=never does not pull.
    let r = berth_env(
        &s,
        &[
            "run",
            "--rm",
            "--pull=never",
            &format!("{}/mirrored/bb:2", reg.addr),
        ],
        None,
    );
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("No such image"), "{r:?}");
}

#[test]
fn bearer_token_flow_against_a_token_server() {
    require_root!();
    let s = stack();
    s.import_busybox("busybox");
    let user = unique("tok");
    let tokens = TokenServer::start(&user, "t0ken-pw");
    let reg = Registry::start_with_tokens(&tokens);
    let name = format!("{}/bearer/bb:1", reg.addr);
    s.berth(&["tag", "busybox", &name]).ok();
    let r = berth_env(&s, &["push", &name], None);
    assert_eq!(r.code, 1, "pushed without credentials: {r:?}");
    let r = berth_env(
        &s,
        &["login", "-u", &user, "--password-stdin", &reg.addr],
        Some(b"wrong\n"),
    );
    assert_eq!(r.code, 1, "{r:?}");
    let r = berth_env(
        &s,
        &["login", "-u", &user, "--password-stdin", &reg.addr],
        Some(b"t0ken-pw\n"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = berth_env(&s, &["push", &name], None);
    assert_eq!(r.code, 0, "{r:?}\n{}", reg.log());
    let issued = tokens.issued.lock().unwrap().clone();
    assert!(
        issued
            .iter()
            .any(|s| s.contains("repository:bearer/bb:pull,push")),
        "{issued:?}"
    );
    // skopeo, with the same credentials, reads what berth pushed.
    let m = reg.skopeo_raw("bearer/bb:1");
    assert_eq!(m["schemaVersion"], 2);
    s.berth(&["rmi", &name]).ok();
    let r = berth_env(&s, &["pull", &name], None);
    assert_eq!(r.code, 0, "{r:?}");
    // The catalog needs its own scope.
    let r = berth_env(&s, &["search", &format!("{}/bear", reg.addr)], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("bearer/bb"), "{r:?}");
    assert!(
        tokens
            .issued
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.contains("registry:catalog:*")),
        "{:?}",
        tokens.issued.lock().unwrap()
    );
    assert!(!s.daemon_logs().contains("t0ken-pw"));
}

#[test]
fn pull_all_tags_of_a_repository() {
    require_root!();
    let s = stack();
    s.import_busybox("busybox");
    let reg = Registry::start(None);
    for tag in ["a", "b"] {
        let name = format!("{}/tags/bb:{tag}", reg.addr);
        s.berth(&["tag", "busybox", &name]).ok();
        assert_eq!(berth_env(&s, &["push", "-q", &name], None).code, 0);
        s.berth(&["rmi", &name]).ok();
    }
    let repo = format!("{}/tags/bb", reg.addr);
    let r = berth_env(&s, &["pull", "-a", &repo], None);
    assert_eq!(r.code, 0, "{r:?}");
    let images = s
        .berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok();
    for tag in ["a", "b"] {
        assert!(images.contains(&format!("{repo}:{tag}")), "{images}");
    }
    let r = berth_env(&s, &["pull", "-a", &format!("{repo}:a")], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("tag can't be used with --all-tags/-a"),
        "{r:?}"
    );
}

#[test]
fn credential_helpers_store_and_give_credentials() {
    require_root!();
    let s = stack();
    s.import_busybox("busybox");
    let user = unique("helper");
    let reg = Registry::start(Some((&user, "h3lper-pw")));
    // A docker-credential helper speaking the documented protocol, keeping
    // its secrets in one file per server.
    let bin = s.dir.join("helper-bin");
    let store = s.dir.join("helper-store");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&store).unwrap();
    let script = format!(
        r#"#!/bin/sh
set -e
key() {{ printf '%s' "$1" | tr '/:' '__'; }}
case "$1" in
  store) data=$(cat); server=$(printf '%s' "$data" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/'); printf '%s' "$data" > "{store}/$(key "$server")" ;;
  get) server=$(cat); f="{store}/$(key "$server")"; if [ -f "$f" ]; then cat "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) server=$(cat); rm -f "{store}/$(key "$server")" ;;
  *) exit 1 ;;
esac
"#,
        store = store.display()
    );
    let helper = bin.join("docker-credential-berthtest");
    std::fs::write(&helper, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        s.dir.join("berth-config/config.json"),
        r#"{"credsStore":"berthtest"}"#,
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let with_path = |args: &[&str], stdin: Option<&[u8]>| {
        let mut cmd = s.cmd();
        cmd.env("BERTH_CONFIG", s.dir.join("berth-config"))
            .env("DOCKER_CONFIG", s.dir.join("docker-config"))
            .env("PATH", &path)
            .args(args);
        berth_integration::run_with_stdin(cmd, stdin.unwrap_or(b""))
    };
    let r = with_path(
        &["login", "-u", &user, "--password-stdin", &reg.addr],
        Some(b"h3lper-pw\n"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    // The secret went to the helper, not into config.json.
    let cfg = std::fs::read_to_string(s.dir.join("berth-config/config.json")).unwrap();
    assert!(
        !cfg.contains("h3lper-pw") && !cfg.contains("auth\""),
        "{cfg}"
    );
    let kept = std::fs::read_dir(&store).unwrap().count();
    assert_eq!(kept, 1);
    let name = format!("{}/helped/bb:1", reg.addr);
    s.berth(&["tag", "busybox", &name]).ok();
    let r = with_path(&["push", &name], None);
    assert_eq!(r.code, 0, "{r:?}");
    let r = with_path(&["logout", &reg.addr], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0);
    let r = with_path(&["push", &name], None);
    assert_eq!(r.code, 1, "pushed after logout: {r:?}");
    // A helper that is named but missing is an error that says so.
    std::fs::write(
        s.dir.join("berth-config/config.json"),
        r#"{"credHelpers":{"example.invalid:5000":"absent"}}"#,
    )
    .unwrap();
    let r = with_path(&["pull", "example.invalid:5000/x/y:1"], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("docker-credential-absent"), "{r:?}");
}

#[test]
fn zstd_and_uncompressed_layers() {
    require_root!();
    let s = stack();
    let reg = Registry::start(None);
    for kind in ["zstd", "plain"] {
        let repo_tag = format!("layers/{kind}:1");
        let m = single_image_with(&s, &reg, &repo_tag, kind);
        let types: Vec<&str> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["mediaType"].as_str())
            .collect();
        assert!(
            types.iter().any(|t| t.ends_with(match kind {
                "zstd" => "tar+zstd",
                _ => "v1.tar",
            })),
            "{types:?}"
        );
        let name = format!("{}/{repo_tag}", reg.addr);
        let r = berth_env(&s, &["pull", &name], None);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(
            s.berth(&["run", "--rm", &name, "cat", "/etc/flaky"]).ok(),
            "yes\n"
        );
    }
}

#[test]
fn pull_on_a_terminal_draws_progress_lines_in_place() {
    require_root!();
    let s = stack();
    let reg = Registry::start(None);
    single_image(&s, &reg, "tty/bb:1");
    let name = format!("{}/tty/bb:1", reg.addr);
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave: std::os::fd::OwnedFd = pty.slave;
    let mut child = s
        .cmd()
        .env("BERTH_CONFIG", s.dir.join("berth-config"))
        .args(["pull", &name])
        .stdout(std::process::Stdio::from(slave.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut master, &mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    assert!(child.wait().unwrap().success());
    // The slave is closed with the child; the reader sees EIO and stops.
    let out = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(out.contains("Pull complete"), "{out:?}");
    // Layer lines are rewritten in place: cursor up, clear line.
    assert!(out.contains("\u{1b}[2K"), "{out:?}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {name}")),
        "{out:?}"
    );
}

#[test]
fn foreign_layers_come_from_their_urls() {
    require_root!();
    let s = stack();
    let reg = Registry::start_allowing_urls();
    // The foreign layer is served by a plain HTTP server, never uploaded.
    let files = s.dir.join("foreign-files");
    std::fs::create_dir_all(&files).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    berth_integration::fixtures::add_file(&mut b, "etc/foreign", 0o644, b"from a URL\n");
    let foreign_tar = b.into_inner().unwrap();
    let gz = |data: &[u8]| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let foreign = gz(&foreign_tar);
    std::fs::write(files.join("layer.tar.gz"), &foreign).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(s.dir.join("http.log")).unwrap();
    let mut server = std::process::Command::new("/usr/bin/python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&files)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "http.server did not start"
        );
        assert!(server.try_wait().unwrap().is_none(), "http.server exited");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _server = Kill(server);

    let base_tar = std::fs::read(berth_integration::fixtures::busybox_tar_in(&s.dir)).unwrap();
    let base = gz(&base_tar);
    let sha = |d: &[u8]| berth_registry::sha256_digest(d);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(&base_tar), sha(&foreign_tar)]},
    }))
    .unwrap();
    let url = format!("http://127.0.0.1:{port}/layer.tar.gz");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(&base), "size": base.len()},
            {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
             "digest": sha(&foreign), "size": foreign.len(), "urls": [url]},
        ],
    }))
    .unwrap();
    // Upload what the registry holds: the base layer, config, manifest.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = berth_registry::Client::new(Default::default()).unwrap();
        let none = berth_registry::Credentials::default();
        for blob in [&base, &config] {
            let berth_registry::Upload::Session(at) = c
                .start_upload(&reg.addr, "foreign/bb", None, &none)
                .await
                .unwrap()
            else {
                panic!("no upload session");
            };
            c.finish_upload(
                &reg.addr,
                "foreign/bb",
                &at,
                &sha(blob),
                bytes::Bytes::from(blob.clone()),
                &none,
            )
            .await
            .unwrap();
        }
        c.put_manifest(
            &reg.addr,
            "foreign/bb",
            "1",
            "application/vnd.oci.image.manifest.v1+json",
            bytes::Bytes::from(manifest.clone()),
            &none,
        )
        .await
        .unwrap();
    });
    let name = format!("{}/foreign/bb:1", reg.addr);
    let r = berth_env(&s, &["pull", &name], None);
    assert_eq!(r.code, 0, "{r:?}\n{}\n{}", s.daemon_logs(), reg.log());
    let served = std::fs::read_to_string(s.dir.join("http.log")).unwrap();
    assert!(served.contains("GET /layer.tar.gz"), "{served}");
    assert_eq!(
        s.berth(&["run", "--rm", &name, "cat", "/etc/foreign"]).ok(),
        "from a URL\n"
    );
    // Pushed elsewhere, the foreign layer is not uploaded (it stays at its
    // URL); the rest is.
    let copy = format!("{}/foreign/copy:1", reg.addr);
    s.berth(&["tag", &name, &copy]).ok();
    let r = berth_env(&s, &["push", &copy], None);
    assert_eq!(r.code, 0, "{r:?}\n{}", reg.log());
    assert!(r.stdout.contains("Skipped foreign layer"), "{r:?}");
    rt.block_on(async {
        let c = berth_registry::Client::new(Default::default()).unwrap();
        let none = berth_registry::Credentials::default();
        let (foreign_d, config_d) = (sha(&foreign), sha(&config));
        let foreign_there = c
            .blob_exists(&reg.addr, "foreign/copy", &foreign_d, &none)
            .await
            .unwrap();
        assert!(foreign_there.is_none(), "the foreign layer was uploaded");
        let config_there = c
            .blob_exists(&reg.addr, "foreign/copy", &config_d, &none)
            .await
            .unwrap();
        assert!(config_there.is_some());
    });
}

#[test]
fn info_shows_the_engine_and_registry_logins() {
    require_root!();
    let reg = Registry::start(Some(("infouser", "inf0-pw")));
    let s = Stack::start_with_env(
        Mode::AllInOne,
        &[("BERTH_INSECURE_REGISTRIES", "registry.test:5000")],
    );
    std::fs::create_dir_all(s.dir.join("berth-config")).unwrap();
    s.import_busybox("busybox");
    s.berth(&["run", "-d", "--name", "inf1", "busybox", "sleep", "1000"])
        .ok();
    s.berth(&["create", "--name", "inf2", "busybox", "true"])
        .ok();
    let r = berth_env(
        &s,
        &["login", "-u", "infouser", "--password-stdin", &reg.addr],
        Some(b"inf0-pw\n"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = berth_env(&s, &["info"], None);
    assert_eq!(r.code, 0, "{r:?}");
    for want in [
        " Containers: 2",
        "  Running: 1",
        "  Stopped: 1",
        " Images: 1",
        " Storage Driver: overlayfs",
        " Cgroup Driver: cgroupfs",
        " Logging Driver: json-file",
        "  registry.test:5000",
        &format!("  {}: infouser", reg.addr),
    ] {
        assert!(r.stdout.contains(want), "{want:?} not in {r:?}");
    }
    let cg = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    };
    assert!(
        r.stdout.contains(&format!(" Cgroup Version: {cg}")),
        "{r:?}"
    );
    assert!(!r.stdout.contains("inf0-pw"));
    let r = berth_env(
        &s,
        &[
            "info",
            "--format",
            "{{.ContainersRunning}} {{.Driver}} {{json .Warnings}}",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("1 overlayfs ["), "{r:?}");
    s.berth(&["rm", "-f", "inf1", "inf2"]).ok();
}

/// The number of `method` RPCs served, from the daemons' debug log.
fn rpcs(logs: &str, method: &str) -> usize {
    logs.lines()
        .filter(|l| l.ends_with("berth_common::grpc: request"))
        .filter(|l| {
            let dotted = method.trim_start_matches('/').replace('/', ".");
            l.contains(&format!("otel.name={dotted} "))
        })
        .count()
}

/// (name, kind) of every snapshot in the default namespace.
fn snapshots(s: &Stack) -> Vec<(String, i32)> {
    use berth_proto::snapshots::v1::{snapshots_client::SnapshotsClient, ListRequest};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c =
            SnapshotsClient::new(berth_common::connect_unix(s.state.join("snapshots.sock")));
        c.list(berth_common::request("default", ListRequest {}))
            .await
            .unwrap()
            .into_inner()
            .snapshots
            .into_iter()
            .map(|i| (i.name, i.kind))
            .collect()
    })
}

/// Asserts that only the image's committed layers exist: no unpack is left
/// behind.
#[track_caller]
fn only_committed_layers(s: &Stack, n: usize) {
    use berth_proto::snapshots::v1::Kind;
    let all = snapshots(s);
    assert_eq!(all.len(), n, "{all:?}");
    assert!(
        all.iter().all(|(_, k)| *k == Kind::Committed as i32),
        "{all:?}"
    );
}

/// What the layered image's root filesystem must hold: directories the
/// layers lack take their attributes from the layers below them.
#[track_caller]
fn check_layered_rootfs(fs: &std::collections::BTreeMap<String, String>) {
    let get = |p: &str| {
        fs.get(p)
            .unwrap_or_else(|| panic!("{p} missing: {fs:#?}"))
            .clone()
    };
    for (p, want) in [
        ("tmp", "mode=1777 owner=0:0 mtime=1700000000"),
        ("opt", "mode=750 owner=1000:50 mtime=1500000001"),
        ("var/mail", "mode=2775 owner=0:50 mtime=1500000002"),
        ("etc", "mode=755 owner=0:0 mtime=1700000000"),
        ("srv", "mode=700 owner=0:0 mtime=1600000000"),
        ("opt/app", "mode=755 owner=0:0"),
        ("opt/app/bin", "mode=755 owner=0:0"),
        ("var/mail/box", "mode=755 owner=0:0"),
        ("srv/x", "mode=755 owner=0:0"),
        ("new/deep", "mode=755 owner=0:0"),
        ("opt/app/data", "Regular mode=644"),
        ("var/big", "Regular mode=600"),
        ("etc/l3.conf", "Regular mode=644"),
    ] {
        assert!(get(p).contains(want), "{p}: {} lacks {want}", get(p));
    }
    assert!(!fs.contains_key("etc/group"));
    assert!(fs.contains_key("etc/passwd"));
    assert!(fs.contains_key("tmp/from-l2") && fs.contains_key("tmp/from-l3"));
}

/// Content Read RPCs of blob `digest`.
fn reads_of(logs: &str, digest: &str) -> usize {
    logs.lines()
        .filter(|l| l.contains("read blob") && l.contains(&format!("digest={digest}")))
        .count()
}

#[test]
fn pull_unpacks_layers_while_they_download_in_one_pass() {
    require_root!();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let s = Stack::start_with_env(
        Mode::AllInOne,
        &[(
            "BERTH_LOG",
            "info,berth_common=debug,berth_content::service=debug",
        )],
    );
    let reg = Registry::start(None);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let image = oci_layers_layout(&s.dir, arch, &layered_tars(&s.dir));
    reg.skopeo_push(&image.dir, "layers/img:1");
    let name = format!("{}/layers/img:1", reg.addr);

    // Pulled: every layer streamed into berth-snapshots as it downloaded,
    // none applied from, or read back out of, berth-content.
    let r = s.berth(&["pull", &name]);
    assert_eq!(r.code, 0, "{r:?}\n{}", s.daemon_logs());
    assert_eq!(r.stdout.matches(": Extracting").count(), 4, "{r:?}");
    assert_eq!(r.stdout.matches(": Pull complete").count(), 4, "{r:?}");
    let logs = s.daemon_logs();
    assert_eq!(
        rpcs(&logs, "/berth.snapshots.v1.Snapshots/ApplyStream"),
        4,
        "{logs}"
    );
    assert_eq!(
        rpcs(&logs, "/berth.snapshots.v1.Snapshots/Apply"),
        0,
        "{logs}"
    );
    for d in &image.layers {
        assert_eq!(reads_of(&logs, d), 0, "layer {d} was read back\n{logs}");
    }
    // (The log does name what was read: the config, for one.)
    assert!(reads_of(&logs, &image.config) > 0, "{logs}");
    only_committed_layers(&s, 4);
    let streamed = rootfs_of(&s, &name, since);

    // The same image unpacked the sequential way: saved, removed (its
    // blobs are collected) and loaded back, each layer is applied from
    // berth-content on top of the one below.
    let archive = s.dir.join("layered.tar");
    s.berth(&["save", "-o", archive.to_str().unwrap(), &name])
        .ok();
    s.berth(&["rmi", &name]).ok();
    let before = logs.len();
    let r = s.berth(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}\n{}", s.daemon_logs());
    let logs = s.daemon_logs();
    let later = &logs[before..];
    assert_eq!(
        rpcs(later, "/berth.snapshots.v1.Snapshots/Apply"),
        4,
        "{later}"
    );
    assert_eq!(
        rpcs(later, "/berth.snapshots.v1.Snapshots/ApplyStream"),
        0,
        "{later}"
    );
    only_committed_layers(&s, 4);
    let sequential = rootfs_of(&s, &name, since);

    assert_eq!(streamed.len(), sequential.len());
    for (path, attrs) in &sequential {
        assert_eq!(streamed.get(path), Some(attrs), "{path}");
    }
    // Directories the layers lack took their attributes from the layers
    // below them: the same answer both ways, and the right one.
    check_layered_rootfs(&streamed);
}

#[test]
fn a_layer_whose_download_resumes_is_applied_from_content() {
    require_root!();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let s = Stack::start_with_env(
        Mode::AllInOne,
        &[(
            "BERTH_LOG",
            "info,berth_common=debug,berth_content::service=debug",
        )],
    );
    let reg = Registry::start(None);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let image = oci_layers_layout(&s.dir, arch, &layered_tars(&s.dir));
    reg.skopeo_push(&image.dir, "layers/img:1");
    // The big layer's first download breaks after 1 MiB.
    let cut = image.layers[1].clone();
    let proxy = CutProxy::start(
        &reg.addr,
        &format!("GET /v2/layers/img/blobs/{cut}"),
        1 << 20,
    );
    let name = format!("{}/layers/img:1", proxy.addr);

    let r = s.berth(&["pull", &name]);
    assert_eq!(r.code, 0, "{r:?}\n{}", s.daemon_logs());
    assert!(proxy.did_cut());
    assert_eq!(r.stdout.matches(": Pull complete").count(), 4, "{r:?}");
    let logs = s.daemon_logs();
    assert!(logs.contains("layer download broke, resuming"), "{logs}");
    // Every layer started unpacking as it downloaded; the broken one was
    // dropped and, once whole in berth-content, applied from there.
    assert_eq!(
        rpcs(&logs, "/berth.snapshots.v1.Snapshots/ApplyStream"),
        4,
        "{logs}"
    );
    assert_eq!(
        rpcs(&logs, "/berth.snapshots.v1.Snapshots/Apply"),
        1,
        "{logs}"
    );
    assert_eq!(reads_of(&logs, &cut), 1, "{logs}");
    for d in image.layers.iter().filter(|d| **d != cut) {
        assert_eq!(reads_of(&logs, d), 0, "{d}\n{logs}");
    }
    only_committed_layers(&s, 4);
    check_layered_rootfs(&rootfs_of(&s, &name, since));
}

#[test]
fn a_bad_layer_fails_the_pull_and_leaves_no_unpack_behind() {
    require_root!();
    let s = stack();
    let reg = Registry::start(None);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    // A layer that is refused at its first entry, while megabytes follow.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(1);
    h.as_old_mut().name[..9].copy_from_slice(b"../escape");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    entry(
        &mut b,
        tar::EntryType::Regular,
        "big",
        0o644,
        (0, 0, 1_600_000_000),
        &noise(3_000_000),
    );
    let base = std::fs::read(berth_integration::fixtures::busybox_tar_in(&s.dir)).unwrap();
    let image = oci_layers_layout(&s.dir, arch, &[base, b.into_inner().unwrap()]);
    reg.skopeo_push(&image.dir, "bad/img:1");
    let name = format!("{}/bad/img:1", reg.addr);

    let r = berth_env(&s, &["pull", &name], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("escapes the root"), "{r:?}");
    assert!(!s.dir.parent().unwrap().join("escape").exists());
    // The good layer below may stay (committed, like any layer); nothing
    // half-unpacked does, and no image is named.
    only_committed_layers(&s, 1);
    assert_eq!(s.berth(&["images", "-q"]).ok(), "");
}

#[test]
fn a_large_layer_is_pushed_in_chunks_and_docker_schema2_pulls() {
    require_root!();
    let s = stack();
    let reg = Registry::start(None);
    // An image whose layer is larger than one upload chunk (16 MiB).
    let root = s.dir.join("big-rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(
        berth_integration::fixtures::BUSYBOX,
        root.join("bin/busybox"),
    )
    .unwrap();
    for a in ["sh", "cat", "wc"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(root.join("big"), noise(20 << 20)).unwrap();
    let tar_path = s.dir.join("big.tar");
    let out = std::process::Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar_path)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success());
    s.berth(&["import", tar_path.to_str().unwrap(), "bigimg:1"])
        .ok();
    let name = format!("{}/big/img:1", reg.addr);
    s.berth(&["tag", "bigimg:1", &name]).ok();
    let r = berth_env(&s, &["push", &name], None);
    assert_eq!(r.code, 0, "{r:?}\n{}", reg.log());
    assert!(r.stdout.contains(": Pushed"), "{r:?}");
    // skopeo copies it back out of the registry whole and verified.
    let dir = s.dir.join("skopeo-dir");
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{name}"))
        .arg(format!("dir:{}", dir.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Docker schema 2 (what docker itself pushes), via skopeo: pulled and run.
    let v2 = format!("{}/v2s2/img:1", reg.addr);
    let out = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--format",
            "v2s2",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{name}"))
        .arg(format!("docker://{v2}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        reg.skopeo_raw("v2s2/img:1")["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let r = berth_env(&s, &["pull", &v2], None);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        s.berth(&["run", "--rm", &v2, "sh", "-c", "wc -c < /big"])
            .ok()
            .trim(),
        (20 << 20).to_string()
    );
}

#[test]
fn https_registries_are_verified_against_the_trusted_cas() {
    require_root!();
    let (reg, ca) = Registry::start_tls();
    // Trusting the test CA (SSL_CERT_FILE replaces the system store).
    let s = Stack::start_with_env(Mode::AllInOne, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    std::fs::create_dir_all(s.dir.join("berth-config")).unwrap();
    s.import_busybox("busybox");
    let name = format!("{}/tls/bb:1", reg.addr);
    s.berth(&["tag", "busybox", &name]).ok();
    let r = berth_env(&s, &["push", &name], None);
    assert_eq!(r.code, 0, "{r:?}\n{}", reg.log());
    s.berth(&["rmi", &name]).ok();
    let r = berth_env(&s, &["pull", &name], None);
    assert_eq!(r.code, 0, "{r:?}");
    // With only the system CAs, the registry's certificate is refused.
    let s2 = stack();
    let r = berth_env(&s2, &["pull", &name], None);
    assert_eq!(r.code, 1, "pulled from an untrusted registry: {r:?}");
    assert_eq!(s2.berth(&["images", "-q"]).ok(), "");
}

#[test]
fn archives_written_by_skopeo_load_and_a_malformed_manifest_is_refused() {
    require_root!();
    let s = stack();
    let layout = oci_layout(
        &s.dir,
        &[Variant {
            arch: "amd64",
            files: &[("etc/from-skopeo", "archived\n")],
            layer: "gzip",
        }],
    );
    // skopeo writes a docker-archive (and an oci-archive) of the layout.
    for (kind, name) in [
        ("docker-archive", "skopeo/docker:1"),
        ("oci-archive", "skopeo/oci:1"),
    ] {
        let file = s.dir.join(format!("{kind}.tar"));
        let dest = format!("{kind}:{}:{name}", file.display());
        let out = std::process::Command::new("skopeo")
            .args(["copy", &format!("oci:{}", layout.display()), &dest])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = s.berth(&["load", "-i", file.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{kind}: {r:?}");
        let img = r
            .stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("Loaded image: ")
                    .or_else(|| l.strip_prefix("Loaded image ID: "))
            })
            .unwrap_or_else(|| panic!("{kind}: {r:?}"))
            .to_string();
        assert_eq!(
            s.berth(&["run", "--rm", &img, "cat", "/etc/from-skopeo"])
                .ok(),
            "archived\n",
            "{kind}"
        );
    }

    // A registry whose manifest is not JSON: a clear error, nothing stored.
    let reg = Registry::start(None);
    single_image(&s, &reg, "mal/bb:1");
    let proxy = FlakyProxy::start(
        &reg.addr,
        Faults {
            corrupt_manifests: true,
            ..Default::default()
        },
    );
    let before = s.berth(&["images", "-q"]).ok();
    let r = berth_env(&s, &["pull", &format!("{}/mal/bb:1", proxy.addr)], None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("manifest"), "{r:?}");
    assert_eq!(s.berth(&["images", "-q"]).ok(), before);
}
