//! A real registry for tests: Debian's docker-registry on a free loopback
//! port with its storage in a temp dir (optionally with htpasswd auth), and
//! OCI image layouts pushed into it with skopeo.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::fixtures;

/// A running docker-registry, stopped and removed on drop.
pub struct Registry {
    /// 127.0.0.1:PORT
    pub addr: String,
    pub dir: PathBuf,
    /// user and password when started with auth.
    pub creds: Option<(String, String)>,
    child: Child,
}

use crate::free_port;

impl Registry {
    /// Starts a registry; with `creds`, it requires them (htpasswd, Basic).
    pub fn start(creds: Option<(&str, &str)>) -> Registry {
        let dir = std::env::temp_dir().join(crate::unique("berth-registry"));
        std::fs::create_dir_all(&dir).unwrap();
        let auth = match creds {
            Some((u, p)) => {
                let hash = bcrypt::hash(p, 5).unwrap();
                std::fs::write(dir.join("htpasswd"), format!("{u}:{hash}\n")).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    dir.join("htpasswd").display()
                )
            }
            None => String::new(),
        };
        Registry::start_in(dir, auth, creds)
    }

    /// Starts a registry that accepts manifests whose layers name URLs on
    /// 127.0.0.1 (foreign / non-distributable layers).
    pub fn start_allowing_urls() -> Registry {
        let dir = std::env::temp_dir().join(crate::unique("berth-registry"));
        std::fs::create_dir_all(&dir).unwrap();
        let extra = "validation:\n  manifests:\n    urls:\n      allow:\n        - ^http://127\\.0\\.0\\.1\n";
        Registry::start_in(dir, extra.to_string(), None)
    }

    /// Starts a registry that speaks only HTTPS, with a certificate for
    /// 127.0.0.1 signed by a new test CA. Returns it and the CA's PEM file
    /// (for SSL_CERT_FILE: the trust store berth's client reads).
    pub fn start_tls() -> (Registry, PathBuf) {
        let dir = std::env::temp_dir().join(crate::unique("berth-registry"));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = crate::pki::TestCa::new(&dir, "ca");
        let server = ca.server(&dir, "cert");
        std::fs::rename(&server.key, dir.join("key.pem")).unwrap();
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        );
        let ca_file = dir.join("ca.pem");
        (Registry::start_in(dir, tls, None), ca_file)
    }

    fn start_in(dir: PathBuf, auth: String, creds: Option<(&str, &str)>) -> Registry {
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
                dir.join("data").display()
            );
            std::fs::write(dir.join("config.yml"), config).unwrap();
            let log = std::fs::File::create(dir.join("registry.log")).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(dir.join("config.yml"))
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("docker-registry is needed: apt-get install docker-registry");
            let mut reg = Registry {
                addr: addr.clone(),
                dir: dir.clone(),
                creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
                child,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = reg.child.try_wait() {
                    break; // port taken: try another
                }
                if std::net::TcpStream::connect(&addr).is_ok() {
                    return reg;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = reg.child.kill();
            let _ = reg.child.wait();
            std::mem::forget(reg); // the dir is reused by the next attempt
        }
        panic!(
            "docker-registry did not start: {}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
    }

    /// `skopeo copy --all oci:LAYOUT docker://ADDR/REPO`, with the
    /// registry's credentials.
    pub fn skopeo_push(&self, layout: &Path, repo_tag: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("oci:{}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.addr))
            .output()
            .expect("skopeo is needed: apt-get install skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `skopeo inspect --raw` of a manifest in the registry.
    pub fn skopeo_raw(&self, repo_tag: &str) -> serde_json::Value {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("docker://{}/{repo_tag}", self.addr))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo inspect failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn put_blob(layout: &Path, data: &[u8]) -> (String, usize) {
    let d = sha256(data);
    let p = layout
        .join("blobs/sha256")
        .join(d.trim_start_matches("sha256:"));
    std::fs::write(p, data).unwrap();
    (d, data.len())
}

/// One image of a layout: its architecture and the files of its one extra
/// layer (path, content), on top of the busybox layer.
pub struct Variant<'a> {
    pub arch: &'a str,
    pub files: &'a [(&'a str, &'a str)],
    /// How the extra layer is stored: "gzip", "zstd" or "plain".
    pub layer: &'a str,
}

/// Writes an OCI image layout with an index of the given variants; each
/// image is the busybox rootfs (gzip layer) plus a small layer of its own
/// files. Returns the layout directory.
pub fn oci_layout(dir: &Path, variants: &[Variant<'_>]) -> PathBuf {
    let layout = dir.join(crate::unique("layout"));
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let base_tar = std::fs::read(fixtures::busybox_tar_in(dir)).unwrap();
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let base_gz = gz(&base_tar);
    let (base_digest, base_size) = put_blob(&layout, &base_gz);
    let mut manifests = Vec::new();
    for v in variants {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in v.files {
            fixtures::add_file(&mut b, path, 0o644, content.as_bytes());
        }
        let extra_tar = b.into_inner().unwrap();
        let (extra_blob, extra_type) = match v.layer {
            "zstd" => (
                zstd::encode_all(extra_tar.as_slice(), 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
            "plain" => (extra_tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            _ => (
                gz(&extra_tar),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            ),
        };
        let (extra_digest, extra_size) = put_blob(&layout, &extra_blob);
        let config = serde_json::json!({
            "created": "2026-01-02T03:04:05Z",
            "architecture": v.arch,
            "os": "linux",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(&base_tar), sha256(&extra_tar)]},
            "history": [{"created_by": "busybox"}, {"created_by": format!("files for {}", v.arch)}],
        });
        let config = serde_json::to_vec(&config).unwrap();
        let (config_digest, config_size) = put_blob(&layout, &config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": base_digest, "size": base_size},
                {"mediaType": extra_type, "digest": extra_digest, "size": extra_size},
            ],
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let (md, ms) = put_blob(&layout, &manifest);
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": ms,
            "platform": {"architecture": v.arch, "os": "linux"},
        }));
    }
    let index = if manifests.len() == 1 {
        // A plain manifest, named in the layout's index only.
        let mut m = manifests[0].clone();
        m["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "latest"});
        serde_json::json!({"schemaVersion": 2, "manifests": [m]})
    } else {
        let inner = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let data = serde_json::to_vec(&inner).unwrap();
        let (d, s) = put_blob(&layout, &data);
        serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": s,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }]})
    };
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    layout
}

/// What a [`FlakyProxy`] does to the traffic it forwards.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Answer the first this many requests with 503.
    pub fail_first: usize,
    /// Cut the first blob download after this many bytes of its answer.
    pub cut_blob_after: Option<usize>,
    /// Flip a byte of the body of downloads of the blobs whose digest
    /// contains this ("" : every blob).
    pub corrupt_blobs: Option<String>,
    /// Send blob bodies at about this many bytes per second.
    pub throttle: Option<usize>,
    /// Replace manifest bodies with bytes that are not JSON.
    pub corrupt_manifests: bool,
}

/// An HTTP proxy in front of a registry that misbehaves on purpose: one
/// request per connection (it adds `Connection: close`), with the faults
/// asked for. It records each request's line and Range header.
pub struct FlakyProxy {
    pub addr: String,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FlakyProxy {
    pub fn start(upstream: &str, faults: Faults) -> FlakyProxy {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let cut_done = Arc::new(AtomicBool::new(false));
        let (reqs, stop2, upstream) = (requests.clone(), stop.clone(), upstream.to_string());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let (reqs, upstream, faults) = (reqs.clone(), upstream.clone(), faults.clone());
                let (failed, cut_done) = (failed.clone(), cut_done.clone());
                std::thread::spawn(move || {
                    let _ = proxy_one(client, &upstream, &faults, &reqs, &failed, &cut_done);
                });
            }
        });
        FlakyProxy {
            addr,
            requests,
            stop,
        }
    }

    /// The recorded request lines (`GET /v2/... Range: bytes=N-`).
    pub fn seen(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn proxy_one(
    mut client: std::net::TcpStream,
    upstream: &str,
    faults: &Faults,
    reqs: &std::sync::Mutex<Vec<String>>,
    failed: &std::sync::atomic::AtomicUsize,
    cut_done: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    client.set_nonblocking(false)?;
    // The request head.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or("").to_string();
    let range = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("range:"))
        .map(|l| format!(" {}", l.trim()))
        .unwrap_or_default();
    reqs.lock().unwrap().push(format!("{line}{range}"));
    if failed.fetch_add(1, Ordering::SeqCst) < faults.fail_first {
        client.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let is_blob_get = line.starts_with("GET ") && line.contains("/blobs/sha256:");
    let is_manifest_get = line.starts_with("GET ") && line.contains("/manifests/");
    let mut up = std::net::TcpStream::connect(upstream)?;
    let mut new_head: String = text
        .trim_end_matches("\r\n\r\n")
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    new_head.push_str("\r\nConnection: close\r\n\r\n");
    up.write_all(new_head.as_bytes())?;
    // The request body (uploads), while the answer comes back.
    let mut c2 = client.try_clone()?;
    let mut u2 = up.try_clone()?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
    });
    let mut sent = 0usize;
    let mut body_start: Option<usize> = None;
    let mut seen_head = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let cut = if is_blob_get && !cut_done.load(Ordering::SeqCst) {
        faults.cut_blob_after
    } else {
        None
    };
    loop {
        let n = up.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &mut buf[..n];
        if body_start.is_none() {
            seen_head.extend_from_slice(chunk);
            if let Some(p) = seen_head.windows(4).position(|w| w == b"\r\n\r\n") {
                body_start = Some(p + 4);
            }
        }
        if is_manifest_get && faults.corrupt_manifests {
            if let Some(b) = body_start {
                // The body's first byte ('{') becomes '!': not JSON any more.
                if b >= sent && b < sent + n {
                    chunk[b - sent] = b'!';
                }
            }
        }
        if is_blob_get
            && faults
                .corrupt_blobs
                .as_ref()
                .is_some_and(|d| line.contains(d.as_str()))
        {
            if let Some(b) = body_start {
                // Flip the body's 100th byte when it passes by.
                let target = b + 100;
                if target >= sent && target < sent + n {
                    chunk[target - sent] ^= 0xff;
                }
            }
        }
        if let Some(limit) = cut {
            if sent + n > limit {
                let keep = limit.saturating_sub(sent);
                client.write_all(&chunk[..keep])?;
                cut_done.store(true, Ordering::SeqCst);
                let _ = client.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
        }
        client.write_all(chunk)?;
        sent += n;
        if let (true, Some(rate)) = (is_blob_get, faults.throttle) {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// A Docker token server for a registry started with [`Registry::start_with_tokens`]:
/// it checks Basic credentials and answers `{"token": JWT}` for the asked
/// scopes, signed (ES256) with a key whose certificate the registry trusts.
pub struct TokenServer {
    /// http://127.0.0.1:PORT/token
    pub realm: String,
    pub cert_pem: String,
    pub user: String,
    pub password: String,
    /// How many tokens were handed out, and the scopes asked for.
    pub issued: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

const TOKEN_ISSUER: &str = "berth-test-issuer";
const TOKEN_SERVICE: &str = "berth-test-registry";

fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl TokenServer {
    pub fn start(user: &str, password: &str) -> TokenServer {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["berth-token".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_pem = cert.pem();
        let cert_der = cert.der().to_vec();
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let issued = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (issued2, stop2) = (issued.clone(), stop.clone());
        use base64::Engine;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((mut c, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match std::io::Read::read(&mut c, &mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let authorized = text.lines().any(|l| {
                    l.to_ascii_lowercase().starts_with("authorization:")
                        && l["authorization:".len()..].trim() == expected
                });
                let target = text.split_whitespace().nth(1).unwrap_or("").to_string();
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let scopes: Vec<String> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .map(|v| {
                        v.replace("%3A", ":")
                            .replace("%2C", ",")
                            .replace("%2F", "/")
                            .replace("%2A", "*")
                    })
                    .collect();
                if !authorized {
                    let _ = c.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 54\r\nConnection: close\r\n\r\n{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"nope\"}]}");
                    continue;
                }
                let access: Vec<serde_json::Value> = scopes
                    .iter()
                    .filter_map(|s| {
                        let mut p = s.splitn(3, ':');
                        let (t, n, a) = (p.next()?, p.next()?, p.next()?);
                        Some(serde_json::json!({"type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>()}))
                    })
                    .collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({
                    "alg": "ES256", "typ": "JWT",
                    "x5c": [base64::engine::general_purpose::STANDARD.encode(&cert_der)],
                });
                let claims = serde_json::json!({
                    "iss": TOKEN_ISSUER, "sub": "tester", "aud": TOKEN_SERVICE,
                    "exp": now + 300, "nbf": now - 10, "iat": now,
                    "jti": format!("{now}-{}", issued2.lock().unwrap().len()),
                    "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let sig = signer.sign(&rng, signing_input.as_bytes()).unwrap();
                let jwt = format!("{signing_input}.{}", b64url(sig.as_ref()));
                issued2.lock().unwrap().push(scopes.join(" "));
                let body = serde_json::json!({"token": jwt, "expires_in": 300}).to_string();
                let _ = c.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        TokenServer {
            realm,
            cert_pem,
            user: user.to_string(),
            password: password.to_string(),
            issued,
            stop,
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Registry {
    /// Starts a registry that requires Bearer tokens from `tokens`.
    pub fn start_with_tokens(tokens: &TokenServer) -> Registry {
        let dir = std::env::temp_dir().join(crate::unique("berth-registry"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token.pem"), &tokens.cert_pem).unwrap();
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            tokens.realm,
            dir.join("token.pem").display()
        );
        Registry::start_in(dir, auth, Some((&tokens.user, &tokens.password)))
    }
}
/// An image layout made by [`oci_layers_layout`].
pub struct LayersLayout {
    pub dir: PathBuf,
    /// Digests of the layer blobs, bottom first.
    pub layers: Vec<String>,
    /// Digest of the config blob.
    pub config: String,
}

/// Writes an OCI image layout holding one image for `arch` whose layers are
/// the given tars (bottom first), gzipped, named `latest` in the layout.
pub fn oci_layers_layout(dir: &Path, arch: &str, tars: &[Vec<u8>]) -> LayersLayout {
    let layout = dir.join(crate::unique("layout"));
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut layers = Vec::new();
    let mut digests = Vec::new();
    let mut diff_ids = Vec::new();
    for t in tars {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(t).unwrap();
        let gz = e.finish().unwrap();
        let (d, size) = put_blob(&layout, &gz);
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": size,
        }));
        digests.push(d);
        diff_ids.push(sha256(t));
    }
    let config = serde_json::json!({
        "created": "2026-01-02T03:04:05Z",
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": tars.iter().map(|_| serde_json::json!({"created_by": "test"})).collect::<Vec<_>>(),
    });
    let (config_digest, config_size) = put_blob(&layout, &serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layers,
    });
    let (md, ms) = put_blob(&layout, &serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": "latest"},
    }]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    LayersLayout {
        dir: layout,
        layers: digests,
        config: config_digest,
    }
}

/// A TCP proxy on loopback in front of a registry that breaks one
/// download: the response to the first request whose request line contains
/// `needle` is cut (both sockets shut down) after `after` bytes. Everything
/// else is forwarded untouched. Stopped on drop.
pub struct CutProxy {
    /// 127.0.0.1:PORT
    pub addr: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CutProxy {
    pub fn start(upstream: &str, needle: &str, after: usize) -> CutProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (upstream, needle) = (upstream.to_string(), needle.as_bytes().to_vec());
        let (cut2, stop2) = (cut.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                // Set by the request side before it forwards the request
                // to cut, read by the response side.
                let armed = Arc::new(AtomicBool::new(false));
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (needle, cut, armed2) = (needle.clone(), cut2.clone(), armed.clone());
                std::thread::spawn(move || {
                    use std::io::Read;
                    let mut tail: Vec<u8> = Vec::new();
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match c_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        tail.extend_from_slice(&buf[..n]);
                        if tail.windows(needle.len()).any(|w| w == needle.as_slice())
                            && !cut.swap(true, Ordering::SeqCst)
                        {
                            armed2.store(true, Ordering::SeqCst);
                        }
                        let keep = tail.len().saturating_sub(needle.len());
                        tail.drain(..keep);
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    use std::io::Read;
                    let mut sent_armed = 0usize;
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if armed.load(Ordering::SeqCst) {
                            let room = after - sent_armed;
                            if n >= room {
                                let _ = c_out.write_all(&buf[..room]);
                                let _ = c_out.shutdown(std::net::Shutdown::Both);
                                let _ = s_in.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            sent_armed += n;
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CutProxy {
            addr,
            cut,
            stop,
            thread: Some(thread),
        }
    }

    /// Whether the request to cut was seen (its response is cut).
    pub fn did_cut(&self) -> bool {
        self.cut.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop.
        let _ = std::net::TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
