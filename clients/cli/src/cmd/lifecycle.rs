//! events, restart, rename, container prune, and docker's env-file format.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use berth_proto::gateway::v1::{
    Event, EventsRequest, PruneContainersRequest, RenameContainerRequest, StopContainerRequest,
    StringList,
};
use clap::Args;
use serde_json::json;

use crate::cli::StopArgs;
use crate::ctx::{is_connect_error, Ctx};
use crate::eprint_err;
use crate::render::human_size4;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Filter output based on conditions provided (type, event, container,
    /// image, label)
    #[arg(short = 'f', long = "filter", value_name = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template ("json" or a Go template)
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Show all events created since timestamp
    #[arg(long, value_name = "string")]
    pub since: Option<String>,
    /// Stream events until this timestamp
    #[arg(long, value_name = "string")]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    #[arg(value_name = "NEW_NAME")]
    pub new_name: String,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long = "filter", value_name = "filter")]
    pub filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `KEY=VALUE` filter flags into the API's map; values of a key add up.
pub(crate) fn parse_filters(specs: &[String]) -> Result<HashMap<String, StringList>, String> {
    let mut out: HashMap<String, StringList> = HashMap::new();
    for spec in specs {
        let Some((k, v)) = spec.split_once('=') else {
            return Err(format!(
                "bad format of filter (expected name=value): {spec}"
            ));
        };
        // "label!=a=b" arrives split at the first '='.
        let (k, v) = match k.strip_suffix('!') {
            Some(k) => (format!("{}!", k.trim().to_lowercase()), v),
            None => (k.trim().to_lowercase(), v),
        };
        out.entry(k).or_default().values.push(v.to_string());
    }
    Ok(out)
}

/// Reads docker's `--env-file` format: `KEY=VALUE` lines taken literally,
/// `KEY` alone takes our environment's value (dropped when unset), blank
/// lines and `#` comments skipped.
pub fn read_env_file(
    path: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("open {path}: {}", io_msg(&e)))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(f).split(b'\n').enumerate() {
        let line = line.map_err(|e| format!("read {path}: {}", io_msg(&e)))?;
        let line = String::from_utf8(line).map_err(|_| {
            format!(
                "env file {path} contains invalid utf8 bytes at line {}",
                n + 1
            )
        })?;
        let line = if n == 0 {
            line.trim_start_matches('\u{feff}').to_string()
        } else {
            line
        };
        let line = line.strip_suffix('\r').unwrap_or(&line);
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line, None),
        };
        if key.is_empty() {
            return Err(format!("no variable name on line '{line}'"));
        }
        if key.contains(char::is_whitespace) {
            return Err(format!("variable '{key}' contains whitespaces"));
        }
        match value {
            Some(v) => out.push(format!("{key}={v}")),
            None => {
                if let Some(v) = lookup(key) {
                    out.push(format!("{key}={v}"));
                }
            }
        }
    }
    Ok(out)
}

/// Go's wording for common I/O errors.
fn io_msg(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            let s = e.to_string();
            s.split(" (os error").next().unwrap_or(&s).to_lowercase()
        }
    }
}

/// docker's `events` line: time, type, action, actor ID, attributes.
pub fn event_line(e: &Event) -> String {
    let secs = e.time_nano.div_euclid(1_000_000_000);
    let nanos = e.time_nano.rem_euclid(1_000_000_000) as u32;
    let time = chrono::DateTime::from_timestamp(secs, nanos)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string())
        .unwrap_or_default();
    let mut line = format!("{time} {} {} {}", e.r#type, e.action, e.id);
    if !e.attributes.is_empty() {
        let mut attrs: Vec<(&String, &String)> = e.attributes.iter().collect();
        attrs.sort();
        let attrs: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line.push_str(&format!(" ({})", attrs.join(", ")));
    }
    line
}

/// The document `--format` templates see (docker's events.Message).
fn event_doc(e: &Event) -> serde_json::Value {
    let attrs: serde_json::Map<String, serde_json::Value> = e
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let mut doc = json!({
        "Type": e.r#type,
        "Action": e.action,
        "Actor": {"ID": e.id, "Attributes": attrs},
        "scope": e.scope,
        "time": e.time_nano.div_euclid(1_000_000_000),
        "timeNano": e.time_nano,
    });
    if e.r#type == "container" {
        doc["status"] = json!(e.action);
        doc["id"] = json!(e.id);
        if let Some(image) = e.attributes.get("image") {
            doc["from"] = json!(image);
        }
    }
    doc
}

/// `berth events`.
pub async fn events(ctx: &Ctx, args: EventsArgs) -> i32 {
    let filters = match parse_filters(&args.filter) {
        Ok(f) => f,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    let template = match args.format.as_deref() {
        None | Some("") | Some("json") => None,
        Some(t) => match crate::template::parse(&t.replace("\\t", "\t").replace("\\n", "\n")) {
            Ok(t) => Some(t),
            Err(e) => {
                eprint_err(&format!("template parsing error: {e}"));
                return 64;
            }
        },
    };
    let json_out = args.format.as_deref() == Some("json");
    let req = ctx.req(EventsRequest {
        since: args.since.unwrap_or_default(),
        until: args.until.unwrap_or_default(),
        filters,
    });
    let mut stream = match ctx.events().subscribe(req).await {
        Ok(s) => s.into_inner(),
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(e)) => {
                let line = if json_out {
                    event_doc(&e).to_string()
                } else if let Some(t) = &template {
                    match t.render(&event_doc(&e)) {
                        Ok(l) => l,
                        Err(err) => {
                            eprint_err(&format!("template: {err}"));
                            return 1;
                        }
                    }
                } else {
                    event_line(&e)
                };
                let mut out = std::io::stdout().lock();
                if writeln!(out, "{line}").is_err() || out.flush().is_err() {
                    return 0;
                }
            }
            Ok(None) => return 0,
            Err(s) => {
                eprint_err(&ctx.describe(&s));
                return 1;
            }
        }
    }
}

/// `berth restart`.
pub async fn restart(ctx: &Ctx, args: StopArgs) -> i32 {
    let mut failed = false;
    for c in &args.containers {
        let req = ctx.req(StopContainerRequest {
            id: c.clone(),
            timeout: args.time,
        });
        match ctx.containers().restart(req).await {
            Ok(_) => crate::outln(c),
            Err(s) => {
                eprint_err(&ctx.describe(&s));
                failed = true;
                if is_connect_error(&s) {
                    break;
                }
            }
        }
    }
    i32::from(failed)
}

/// `berth rename`.
pub async fn rename(ctx: &Ctx, args: RenameArgs) -> i32 {
    let new_name = args.new_name.trim();
    if args.container.trim().is_empty() || new_name.is_empty() {
        eprint_err("Error: Neither old nor new names may be empty");
        return 1;
    }
    let req = ctx.req(RenameContainerRequest {
        id: args.container.clone(),
        new_name: new_name.to_string(),
    });
    match ctx.containers().rename(req).await {
        Ok(_) => 0,
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            if !is_connect_error(&s) {
                eprint_err(&format!(
                    "Error: failed to rename container named {}",
                    args.container
                ));
            }
            1
        }
    }
}

/// `berth container prune`.
pub async fn prune(ctx: &Ctx, args: PruneArgs) -> i32 {
    let filters = match parse_filters(&args.filter) {
        Ok(f) => f,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    if !args.force
        && !crate::cmd::imagestore::confirm("WARNING! This will remove all stopped containers.")
    {
        return 0;
    }
    let resp = match ctx
        .containers()
        .prune(ctx.req(PruneContainersRequest { filters }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    let mut out = String::new();
    containers_report(&mut out, &resp.deleted);
    out.push_str(&format!(
        "Total reclaimed space: {}",
        human_size4(resp.space_reclaimed as i64)
    ));
    crate::outln(&out);
    0
}

/// Docker's "Deleted Containers:" block of a prune report.
pub(crate) fn containers_report(out: &mut String, deleted: &[String]) {
    if deleted.is_empty() {
        return;
    }
    out.push_str("Deleted Containers:\n");
    for id in deleted {
        out.push_str(id);
        out.push('\n');
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files() {
        let dir = std::env::temp_dir().join(format!("berth-envfile-{}", std::process::id()));
        std::fs::write(
            &dir,
            "# comment\n\n  A=1\nB= two words \nFROM_ENV\nUNSET_X\nC=x=y\r\n",
        )
        .unwrap();
        let env = read_env_file(dir.to_str().unwrap(), |k| {
            (k == "FROM_ENV").then(|| "v".to_string())
        })
        .unwrap();
        assert_eq!(env, ["A=1", "B= two words ", "FROM_ENV=v", "C=x=y"]);
        std::fs::write(&dir, "BAD KEY=1\n").unwrap();
        assert_eq!(
            read_env_file(dir.to_str().unwrap(), |_| None).unwrap_err(),
            "variable 'BAD KEY' contains whitespaces"
        );
        std::fs::remove_file(&dir).unwrap();
        assert!(read_env_file("/nonexistent/x", |_| None)
            .unwrap_err()
            .ends_with("no such file or directory"));
    }

    #[test]
    fn event_lines() {
        let e = Event {
            r#type: "container".into(),
            action: "start".into(),
            id: "abc".into(),
            attributes: [
                ("name".to_string(), "x".to_string()),
                ("image".to_string(), "busybox".to_string()),
            ]
            .into_iter()
            .collect(),
            time_nano: 1_704_164_645_123_456_789,
            scope: "local".into(),
        };
        assert_eq!(
            event_line(&e),
            "2024-01-02T03:04:05.123456789Z container start abc (image=busybox, name=x)"
        );
    }

    #[test]
    fn sizes_and_filters() {
        assert_eq!(human_size4(0), "0B");
        assert_eq!(human_size4(12), "12B");
        assert_eq!(human_size4(1500), "1.5kB");
        let f = parse_filters(&["label=a".into(), "label=b=c".into(), "label!=d".into()]).unwrap();
        assert_eq!(f["label"].values, ["a", "b=c"]);
        assert_eq!(f["label!"].values, ["d"]);
        assert!(parse_filters(&["nope".into()]).is_err());
    }
}
