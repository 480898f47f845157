//! Dockerfile instructions applied by `ImportImage` (`docker import
//! --change`), and the OCI image config they fill in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An empty JSON object, as Go writes `struct{}` values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmptyObject {}

/// The `config` part of an OCI image config (Go field names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `USER`.
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `EXPOSE`, as "80/tcp".
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, EmptyObject>,
    /// `ENV`, as "K=V".
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`.
    #[serde(
        rename = "Volumes",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, EmptyObject>,
    /// `WORKDIR`.
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    /// `LABEL`.
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `STOPSIGNAL`.
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
}

const UNSUPPORTED: &[&str] = &[
    "ADD",
    "ARG",
    "COPY",
    "FROM",
    "HEALTHCHECK",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
];

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("invalid change: {msg}"))
}

/// Applies `changes` in order to an empty config.
pub fn apply_changes(changes: &[String]) -> Result<RunConfig> {
    let mut c = RunConfig::default();
    for ch in changes {
        apply_one(&mut c, ch)?;
    }
    Ok(c)
}

fn apply_one(c: &mut RunConfig, change: &str) -> Result<()> {
    let change = change.trim();
    if change.is_empty() {
        return Ok(());
    }
    let (instr, rest) = match change.split_once(char::is_whitespace) {
        Some((i, r)) => (i, r.trim()),
        None => (change, ""),
    };
    let instr = instr.to_ascii_uppercase();
    let known = matches!(
        instr.as_str(),
        "CMD"
            | "ENTRYPOINT"
            | "ENV"
            | "WORKDIR"
            | "USER"
            | "EXPOSE"
            | "LABEL"
            | "VOLUME"
            | "STOPSIGNAL"
    );
    if !known {
        if UNSUPPORTED.contains(&instr.as_str()) {
            return Err(bad(format!("{instr} is not supported by import")));
        }
        return Err(bad(format!("unknown instruction {instr:?}")));
    }
    if rest.is_empty() {
        return Err(bad(format!("{instr} requires at least one argument")));
    }
    match instr.as_str() {
        "CMD" => c.cmd = Some(command(rest)?),
        "ENTRYPOINT" => c.entrypoint = Some(command(rest)?),
        "ENV" => {
            for (k, v) in key_values(&instr, rest)? {
                let prefix = format!("{k}=");
                c.env.retain(|e| !e.starts_with(&prefix));
                c.env.push(format!("{k}={v}"));
            }
        }
        "LABEL" => {
            for (k, v) in key_values(&instr, rest)? {
                c.labels.insert(k, v);
            }
        }
        "WORKDIR" => {
            let dir = words(rest)?.join(" ");
            c.working_dir = if dir.starts_with('/') {
                dir
            } else if c.working_dir.is_empty() {
                format!("/{dir}")
            } else {
                format!("{}/{dir}", c.working_dir.trim_end_matches('/'))
            };
        }
        "USER" => c.user = single(&instr, rest)?,
        "STOPSIGNAL" => c.stop_signal = single(&instr, rest)?,
        "EXPOSE" => {
            for w in words(rest)? {
                for p in expose(&w)? {
                    c.exposed_ports.insert(p, EmptyObject {});
                }
            }
        }
        "VOLUME" => {
            let vols = match json_array(rest) {
                Some(v) => v?,
                None => words(rest)?,
            };
            for v in vols {
                if v.is_empty() {
                    return Err(bad("VOLUME specified can not be an empty string"));
                }
                c.volumes.insert(v, EmptyObject {});
            }
        }
        _ => unreachable!("checked above"),
    }
    Ok(())
}

/// `["a","b"]` (exec form) or `a b` (shell form, run by /bin/sh -c).
fn command(rest: &str) -> Result<Vec<String>> {
    match json_array(rest) {
        Some(v) => v,
        None => Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_string()]),
    }
}

/// Parses a JSON string array when `s` looks like one. A string that starts
/// with '[' but is not a JSON string array is shell form, as in Docker.
fn json_array(s: &str) -> Option<Result<Vec<String>>> {
    if !s.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(s).ok().map(Ok)
}

fn single(instr: &str, rest: &str) -> Result<String> {
    let w = words(rest)?;
    if w.len() != 1 {
        return Err(bad(format!("{instr} requires exactly one argument")));
    }
    Ok(w.into_iter().next().unwrap_or_default())
}

/// `K=V K2="v 2"` or the legacy `K some value`.
fn key_values(instr: &str, rest: &str) -> Result<Vec<(String, String)>> {
    let first = words(rest)?.into_iter().next().unwrap_or_default();
    if !first.contains('=') {
        // Legacy form: the first word is the key, the rest the value.
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad(format!("{instr} {rest:?} must have two arguments")))?;
        let v = words(v.trim())?.join(" ");
        return Ok(vec![(k.to_string(), v)]);
    }
    words(rest)?
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(bad(format!("{instr} {w:?}: expected key=value"))),
        })
        .collect()
}

/// Splits on whitespace, honouring '…', "…" and backslash escapes.
fn words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        match ch {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            q @ ('"' | '\'') => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(bad(format!("unterminated quote in {s:?}"))),
                        Some(c) if c == q => break,
                        Some('\\') if q == '"' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        Some(c) => cur.push(c),
                    }
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// "80" → ["80/tcp"]; "53/udp"; "8000-8002/tcp" → three ports.
fn expose(w: &str) -> Result<Vec<String>> {
    let (ports, proto) = match w.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (w, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad(format!("EXPOSE {w}: invalid protocol {proto:?}")));
    }
    let port = |p: &str| -> Result<u16> {
        p.parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| bad(format!("EXPOSE {w}: invalid port {p:?}")))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(bad(format!("EXPOSE {w}: invalid port range")));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(ch: &[&str]) -> Result<RunConfig> {
        apply_changes(&ch.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn forms() {
        let c = apply(&[
            r#"CMD ["/bin/echo", "hi there"]"#,
            "ENTRYPOINT /bin/run --fast",
            "ENV A=1 B=\"two words\"",
            "ENV C some value",
            "ENV A=3",
            "WORKDIR /srv",
            "WORKDIR app",
            "USER nobody",
            "EXPOSE 80 53/udp 9000-9001",
            "LABEL a=b \"c d\"=e",
            "VOLUME [\"/data\"]",
            "VOLUME /x /y",
            "STOPSIGNAL SIGTERM",
            "cmd echo lower",
        ])
        .unwrap();
        assert_eq!(c.cmd.unwrap(), vec!["/bin/sh", "-c", "echo lower"]);
        assert_eq!(
            c.entrypoint.unwrap(),
            vec!["/bin/sh", "-c", "/bin/run --fast"]
        );
        assert_eq!(c.env, vec!["B=two words", "C=some value", "A=3"]);
        assert_eq!(c.working_dir, "/srv/app");
        assert_eq!(c.user, "nobody");
        let ports: Vec<_> = c.exposed_ports.keys().cloned().collect();
        assert_eq!(ports, vec!["53/udp", "80/tcp", "9000/tcp", "9001/tcp"]);
        assert_eq!(c.labels["a"], "b");
        assert_eq!(c.labels["c d"], "e");
        let vols: Vec<_> = c.volumes.keys().cloned().collect();
        assert_eq!(vols, vec!["/data", "/x", "/y"]);
        assert_eq!(c.stop_signal, "SIGTERM");
        let json = serde_json::to_value(apply(&["EXPOSE 80", "CMD [\"sh\"]"]).unwrap()).unwrap();
        assert_eq!(json["ExposedPorts"]["80/tcp"], serde_json::json!({}));
        assert_eq!(json["Cmd"], serde_json::json!(["sh"]));
        assert!(json.get("Env").is_none());
    }

    #[test]
    fn errors() {
        let e = apply(&["FOO bar"]).unwrap_err().to_string();
        assert_eq!(e, "invalid change: unknown instruction \"FOO\"");
        assert!(apply(&["RUN x"])
            .unwrap_err()
            .to_string()
            .contains("not supported"));
        assert!(apply(&["CMD"]).is_err());
        assert!(apply(&["EXPOSE http"]).is_err());
        assert!(apply(&["EXPOSE 80/xyz"]).is_err());
        assert!(apply(&["ENV A=\"x"]).is_err());
        assert!(apply(&["ENV =x"]).is_err());
        assert!(apply(&["USER a b"]).is_err());
    }
}
