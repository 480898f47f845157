//! `berth context create|ls|use|show|inspect|rm`: named daemon endpoints
//! (host and TLS material), as `docker context`. Kept in `contexts.json`
//! beside berth's config.json, TLS files copied under `contexts/tls/NAME/`.
//! These commands work without a daemon.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::DEFAULT_HOST;
use crate::{eprint_err, output_format, print_rows};

/// The context that always exists: BERTH_HOST or the default socket.
pub const DEFAULT_CONTEXT: &str = "default";

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Create a context
    Create(CreateArgs),
    /// List contexts
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Set the current berth context
    Use(UseArgs),
    /// Print the name of the current context
    Show,
    /// Display detailed information on one or more contexts
    Inspect(InspectArgs),
    /// Remove one or more contexts
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Description of the context
    #[arg(long, value_name = "string", default_value = "")]
    pub description: String,
    /// set the docker endpoint: host=URL,ca=FILE,cert=FILE,key=FILE
    #[arg(long = "docker", value_name = "stringToString")]
    pub docker: Option<String>,
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Only show context names
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct UseArgs {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long, value_name = "string")]
    pub format: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a context in use
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// One stored context.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Context {
    #[serde(default)]
    pub description: String,
    pub host: String,
    /// Copied TLS files, when the endpoint uses TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Store {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    current: String,
    #[serde(default)]
    contexts: BTreeMap<String, Context>,
}

fn dir() -> PathBuf {
    crate::auth::berth_config_path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn store_path() -> PathBuf {
    dir().join("contexts.json")
}

fn load() -> Result<Store, String> {
    let path = store_path();
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| format!("{} is not a valid contexts file: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Store::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes the store whole: a temp file renamed over the old one.
fn save(store: &Store) -> Result<(), String> {
    let path = store_path();
    let d = dir();
    std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(store).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, body)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A context name: docker's `^[a-zA-Z0-9][a-zA-Z0-9_.+-]+$`.
fn check_name(name: &str) -> Result<(), String> {
    let ok = name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "context name {name:?} is invalid, names are validated against regexp \"^[a-zA-Z0-9][a-zA-Z0-9_.+-]+$\""
        ))
    }
}

/// The context to use when no -H is given: `--context`/BERTH_CONTEXT, else
/// the current one; `None` means the default endpoint.
pub fn selected(flag: Option<&str>) -> Result<Option<Context>, String> {
    let store = load()?;
    let name = flag.map(str::to_string).unwrap_or(store.current.clone());
    if name.is_empty() || name == DEFAULT_CONTEXT {
        return Ok(None);
    }
    store
        .contexts
        .get(&name)
        .cloned()
        .map(Some)
        .ok_or_else(|| format!("context {name:?} does not exist"))
}

fn default_host() -> String {
    std::env::var("BERTH_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_string())
}

/// Runs a context command; these need no daemon.
pub fn run(c: ContextCommand) -> i32 {
    let r = match c {
        ContextCommand::Create(a) => create(a),
        ContextCommand::Ls(a) => return ls(a),
        ContextCommand::Use(a) => use_context(&a.name),
        ContextCommand::Show => load().map(|s| {
            crate::outln(if s.current.is_empty() {
                DEFAULT_CONTEXT
            } else {
                &s.current
            })
        }),
        ContextCommand::Inspect(a) => return inspect(a),
        ContextCommand::Rm(a) => rm(a),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprint_err(&e);
            1
        }
    }
}

fn create(a: CreateArgs) -> Result<(), String> {
    check_name(&a.name)?;
    let mut store = load()?;
    if a.name == DEFAULT_CONTEXT || store.contexts.contains_key(&a.name) {
        return Err(format!("context {:?} already exists", a.name));
    }
    let mut ctx = Context {
        description: a.description,
        host: default_host(),
        ..Default::default()
    };
    let tls_dir = dir().join("contexts").join("tls").join(&a.name);
    let mut files = Vec::new();
    for kv in a
        .docker
        .iter()
        .flat_map(|d| d.split(','))
        .filter(|s| !s.is_empty())
    {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("invalid --docker value {kv:?}: expected key=value"))?;
        match k {
            "host" => {
                berth_common::grpc::parse_host(v).map_err(|e| e.to_string())?;
                ctx.host = v.to_string();
            }
            "ca" | "cert" | "key" => files.push((k, PathBuf::from(v))),
            "skip-tls-verify" if v == "false" => {}
            other => {
                return Err(format!(
                    "unsupported --docker key {other:?}: use host, ca, cert and key"
                ))
            }
        }
    }
    if !files.is_empty() && !ctx.host.starts_with("tcp://") {
        return Err("TLS files need a tcp:// host".to_string());
    }
    // Read every file before writing anything.
    let mut contents = Vec::new();
    for (k, p) in &files {
        let b = std::fs::read(p).map_err(|e| format!("cannot read {k} {}: {e}", p.display()))?;
        contents.push((*k, b));
    }
    if !contents.is_empty() {
        std::fs::create_dir_all(&tls_dir)
            .map_err(|e| format!("cannot create {}: {e}", tls_dir.display()))?;
    }
    for (k, b) in contents {
        let dest = tls_dir.join(format!("{k}.pem"));
        write_private(&dest, &b)?;
        match k {
            "ca" => ctx.ca = Some(dest),
            "cert" => ctx.cert = Some(dest),
            _ => ctx.key = Some(dest),
        }
    }
    store.contexts.insert(a.name.clone(), ctx);
    save(&store)?;
    crate::outln(&a.name);
    eprint_err(&format!("Successfully created context \"{}\"", a.name));
    Ok(())
}

/// Writes a file only its owner can read (keys live here).
fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn use_context(name: &str) -> Result<(), String> {
    let mut store = load()?;
    if name != DEFAULT_CONTEXT && !store.contexts.contains_key(name) {
        return Err(format!("context {name:?} does not exist"));
    }
    store.current = if name == DEFAULT_CONTEXT {
        String::new()
    } else {
        name.to_string()
    };
    save(&store)?;
    crate::outln(name);
    eprint_err(&format!("Current context is now \"{name}\""));
    Ok(())
}

/// Every context with the default first, as (name, context).
fn all(store: &Store) -> Vec<(String, Context)> {
    let mut out = vec![(
        DEFAULT_CONTEXT.to_string(),
        Context {
            description: "Current BERTH_HOST based configuration".to_string(),
            host: default_host(),
            ..Default::default()
        },
    )];
    out.extend(store.contexts.iter().map(|(n, c)| (n.clone(), c.clone())));
    out
}

fn ls(a: LsArgs) -> i32 {
    let store = match load() {
        Ok(s) => s,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    let current = if store.current.is_empty() {
        DEFAULT_CONTEXT
    } else {
        &store.current
    };
    let rows: Vec<serde_json::Value> = all(&store)
        .into_iter()
        .map(|(n, c)| {
            json!({
                "Name": n,
                "Description": c.description,
                "DockerEndpoint": c.host,
                "Current": n == current,
                "Error": "",
            })
        })
        .collect();
    let format = match output_format(a.format.as_deref(), a.quiet) {
        Ok(f) => f,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    let header = json!({
        "Name": "NAME",
        "Description": "DESCRIPTION",
        "DockerEndpoint": "BERTH ENDPOINT",
        "Current": false,
        "Error": "ERROR",
    });
    print_rows(
        format,
        "table {{.Name}}{{if .Current}} *{{end}}\t{{.Description}}\t{{.DockerEndpoint}}\t{{.Error}}",
        "{{.Name}}",
        &header,
        &rows,
    )
}

fn doc(name: &str, c: &Context) -> serde_json::Value {
    let tls = c.ca.is_some() || c.cert.is_some();
    let files: Vec<String> = [&c.ca, &c.cert, &c.key]
        .iter()
        .filter_map(|p| p.as_ref().and_then(|p| p.file_name()))
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    json!({
        "Name": name,
        "Metadata": {"Description": c.description},
        "Endpoints": {"docker": {"Host": c.host, "SkipTLSVerify": false}},
        "TLSMaterial": if tls {
            json!({ "docker": files })
        } else {
            json!({})
        },
        "Storage": {
            "MetadataPath": store_path(),
            "TLSPath": if tls { json!(dir().join("contexts").join("tls").join(name)) } else { json!("<IN MEMORY>") },
        },
    })
}

fn inspect(a: InspectArgs) -> i32 {
    let store = match load() {
        Ok(s) => s,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    let tmpl = match crate::cmd::inspect::format_template(a.format.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    let known = all(&store);
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for n in &a.names {
        match known.iter().find(|(k, _)| k == n) {
            Some((k, c)) => docs.push(doc(k, c)),
            None => errors.push(format!("context {n:?} does not exist")),
        }
    }
    crate::cmd::inspect::print_docs(
        &docs,
        tmpl.as_ref(),
        a.format.as_deref() == Some("json"),
        errors,
    )
}

fn rm(a: RmArgs) -> Result<(), String> {
    let mut store = load()?;
    let mut errors = Vec::new();
    for n in &a.names {
        if n == DEFAULT_CONTEXT {
            errors.push("default: context \"default\" cannot be removed".to_string());
            continue;
        }
        if !store.contexts.contains_key(n) {
            errors.push(format!("{n}: context {n:?} does not exist"));
            continue;
        }
        if store.current == *n {
            if !a.force {
                errors.push(format!(
                    "{n}: context {n:?} is in use, set -f flag to force remove"
                ));
                continue;
            }
            store.current.clear();
        }
        store.contexts.remove(n);
        let _ = std::fs::remove_dir_all(dir().join("contexts").join("tls").join(n));
        crate::outln(n);
    }
    save(&store)?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("prod-1").is_ok());
        assert!(check_name("a.b_c+d").is_ok());
        assert!(check_name("x").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("a/b").is_err());
    }
}
