//! Registry credentials on the client, in Docker's config.json format.
//!
//! berth keeps its own file, `$BERTH_CONFIG/config.json` (default
//! `~/.berth/config.json`, mode 0600 in a 0700 directory), and also reads
//! Docker's (`$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`)
//! so that existing logins work. Both may name credential helpers
//! (`credsStore`, `credHelpers`: `docker-credential-NAME get|store|erase`).
//! The daemon never stores credentials: they go with each pull and push.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use berth_proto::gateway::v1::RegistryAuth;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The key Docker uses for Docker Hub in config.json.
pub const HUB_KEY: &str = "https://index.docker.io/v1/";

/// The config.json key of a registry domain ("docker.io" is Docker Hub's).
pub fn server_key(domain: &str) -> String {
    let d = domain
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    match d {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" | "index.docker.io/v1" => {
            HUB_KEY.to_string()
        }
        d => d.to_string(),
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(
        rename = "credsStore",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    creds_store: String,
    #[serde(
        rename = "credHelpers",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    cred_helpers: BTreeMap<String, String>,
    /// Everything else in the file is kept as it was.
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    auth: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    identitytoken: String,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// berth's own config file.
pub fn berth_config_path() -> PathBuf {
    if let Ok(d) = std::env::var("BERTH_CONFIG") {
        return PathBuf::from(d).join("config.json");
    }
    home().join(".berth").join("config.json")
}

fn docker_config_path() -> PathBuf {
    if let Ok(d) = std::env::var("DOCKER_CONFIG") {
        return PathBuf::from(d).join("config.json");
    }
    home().join(".docker").join("config.json")
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

fn load(path: &Path) -> Result<ConfigFile, String> {
    match std::fs::read(path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(ConfigFile::default()),
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| format!("loading config file {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(format!("loading config file {}: {e}", path.display())),
    }
}

/// Writes the file atomically, readable by its owner only.
fn save(path: &Path, cfg: &ConfigFile) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let data = serde_json::to_vec_pretty(cfg).map_err(|e| e.to_string())?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(&data)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("saving credentials to {}: {e}", path.display())
    })
}

/// The helper that handles `key`, if the file names one.
fn helper_for(cfg: &ConfigFile, key: &str) -> Option<String> {
    cfg.cred_helpers
        .get(key)
        .cloned()
        .or_else(|| (!cfg.creds_store.is_empty()).then(|| cfg.creds_store.clone()))
}

/// Runs `docker-credential-NAME ACTION` with `input` on stdin.
fn run_helper(name: &str, action: &str, input: &[u8]) -> Result<Vec<u8>, String> {
    let prog = format!("docker-credential-{name}");
    let mut child = Command::new(&prog)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("error getting credentials - err: exec: \"{prog}\": {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{prog} {action}: {e}"))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return Err(if msg.is_empty() {
            format!("{prog} {action} failed: {}", out.status)
        } else {
            msg
        });
    }
    Ok(out.stdout)
}

#[derive(Serialize, Deserialize)]
struct HelperCreds {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

fn from_helper(name: &str, key: &str) -> Result<Option<RegistryAuth>, String> {
    match run_helper(name, "get", key.as_bytes()) {
        Ok(out) => {
            let c: HelperCreds = serde_json::from_slice(&out)
                .map_err(|e| format!("docker-credential-{name} get: {e}"))?;
            Ok(Some(if c.username == "<token>" {
                RegistryAuth {
                    identity_token: c.secret,
                    ..Default::default()
                }
            } else {
                RegistryAuth {
                    username: c.username,
                    password: c.secret,
                    identity_token: String::new(),
                }
            }))
        }
        // Helpers say so when they have nothing for the server.
        Err(m) if m.contains("credentials not found") => Ok(None),
        Err(m) => Err(m),
    }
}

fn from_entry(e: &AuthEntry) -> Option<RegistryAuth> {
    let mut out = RegistryAuth::default();
    if !e.auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(e.auth.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        out.username = u.to_string();
        out.password = p.to_string();
    }
    out.identity_token = e.identitytoken.clone();
    (!out.username.is_empty() || !out.identity_token.is_empty()).then_some(out)
}

/// Credentials for a registry domain: berth's file first, then Docker's.
/// Errors of a helper are returned (so a broken helper is not silent).
pub fn lookup(domain: &str) -> Result<Option<RegistryAuth>, String> {
    let key = server_key(domain);
    for path in [berth_config_path(), docker_config_path()] {
        let cfg = load(&path)?;
        if let Some(h) = helper_for(&cfg, &key) {
            if let Some(a) = from_helper(&h, &key)? {
                return Ok(Some(a));
            }
        }
        if let Some(a) = cfg.auths.get(&key).and_then(from_entry) {
            return Ok(Some(a));
        }
    }
    Ok(None)
}

/// Stores credentials after a successful login (in berth's file, or its
/// helper). Returns where they went, for the message.
pub fn store(domain: &str, auth: &RegistryAuth) -> Result<String, String> {
    let key = server_key(domain);
    let path = berth_config_path();
    let mut cfg = load(&path)?;
    if let Some(h) = helper_for(&cfg, &key) {
        let (username, secret) = if auth.identity_token.is_empty() {
            (auth.username.clone(), auth.password.clone())
        } else {
            ("<token>".to_string(), auth.identity_token.clone())
        };
        let input = serde_json::to_vec(&HelperCreds {
            server_url: key.clone(),
            username,
            secret,
        })
        .map_err(|e| e.to_string())?;
        run_helper(&h, "store", &input)?;
        // The file only records that the server has credentials.
        cfg.auths.insert(key, AuthEntry::default());
        save(&path, &cfg)?;
        return Ok(format!("the {h} credential helper"));
    }
    let entry = AuthEntry {
        auth: if auth.identity_token.is_empty() {
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", auth.username, auth.password))
        } else {
            String::new()
        },
        identitytoken: auth.identity_token.clone(),
        other: BTreeMap::new(),
    };
    cfg.auths.insert(key, entry);
    save(&path, &cfg)?;
    Ok(path.display().to_string())
}

/// Removes stored credentials; false if there were none.
pub fn erase(domain: &str) -> Result<bool, String> {
    let key = server_key(domain);
    let path = berth_config_path();
    let mut cfg = load(&path)?;
    let had = cfg.auths.remove(&key).is_some();
    if let Some(h) = helper_for(&cfg, &key) {
        run_helper(&h, "erase", key.as_bytes())?;
    }
    if had {
        save(&path, &cfg)?;
    }
    Ok(had)
}

/// Registries with stored credentials, and the user for each (for
/// `info`), from berth's file and Docker's.
pub fn logins() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for path in [berth_config_path(), docker_config_path()] {
        let Ok(cfg) = load(&path) else { continue };
        for key in cfg.auths.keys() {
            if out.iter().any(|(k, _)| k == key) {
                continue;
            }
            let user = match lookup(key) {
                Ok(Some(a)) if !a.username.is_empty() => a.username,
                Ok(Some(_)) => "<token>".to_string(),
                _ => continue,
            };
            out.push((key.clone(), user));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(server_key("docker.io"), HUB_KEY);
        assert_eq!(server_key(""), HUB_KEY);
        assert_eq!(server_key("https://index.docker.io/v1/"), HUB_KEY);
        assert_eq!(server_key("localhost:5000"), "localhost:5000");
        assert_eq!(server_key("http://localhost:5000/"), "localhost:5000");
    }

    #[test]
    fn entries() {
        let e = AuthEntry {
            auth: "dTpwOnc=".into(), // u:p:w
            ..Default::default()
        };
        let a = from_entry(&e).unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p:w"));
        assert!(from_entry(&AuthEntry::default()).is_none());
        let t = from_entry(&AuthEntry {
            identitytoken: "tok".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.identity_token, "tok");
    }

    #[test]
    fn file_round_trip_keeps_other_settings_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("berth-auth-{}", std::process::id()));
        let path = dir.join("config.json");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, r#"{"auths":{},"detachKeys":"ctrl-x,y"}"#).unwrap();
        let mut cfg = load(&path).unwrap();
        cfg.auths.insert(
            "r:5000".into(),
            AuthEntry {
                auth: "YTpi".into(),
                ..Default::default()
            },
        );
        save(&path, &cfg).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("detachKeys"), "{text}");
        assert!(text.contains("YTpi"), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
