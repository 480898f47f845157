//! `berth volume create|ls|inspect|rm|prune`, and the `--mount` parser of
//! run/create.

use std::collections::HashMap;

use berth_proto::gateway::v1::{
    CreateVolumeRequest, ListVolumesRequest, MountSpec, PruneVolumesRequest, RemoveVolumeRequest,
    Volume, VolumeRef,
};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::ctx::Ctx;
use crate::{eprint_err, output_format, print_rows};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume
    Create(CreateArgs),
    /// List volumes
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes
    Inspect(InspectArgs),
    /// Remove one or more volumes
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove unused local volumes
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Specify volume driver name
    #[arg(short = 'd', long, value_name = "string", default_value = "local")]
    pub driver: String,
    /// Set metadata for a volume
    #[arg(long = "label", value_name = "list")]
    pub label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt", value_name = "map")]
    pub opt: Vec<String>,
    /// Specify volume name
    #[arg(long = "name", value_name = "string")]
    pub name_flag: Option<String>,
    #[arg(value_name = "VOLUME")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Provide filter values (e.g. "dangling=true")
    #[arg(short = 'f', long = "filter", value_name = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Only display volume names
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long, value_name = "string")]
    pub format: Option<String>,
    #[arg(value_name = "VOLUME", required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of one or more volumes
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(value_name = "VOLUME", required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Provide filter values (e.g. "label=<label>")
    #[arg(long = "filter", value_name = "filter")]
    pub filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `KEY=VALUE` pairs of --label / --opt (a bare label is a key with an
/// empty value, as docker).
pub(crate) fn key_values(specs: &[String], what: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for s in specs {
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            // A bare label is a key with an empty value (docker).
            None if what == "label" && !s.is_empty() => {
                out.insert(s.clone(), String::new());
            }
            _ => return Err(format!("invalid {what} '{s}': expected KEY=VALUE")),
        }
    }
    Ok(out)
}

/// The inspect document docker shows for a volume.
fn doc(v: &Volume) -> Value {
    json!({
        "CreatedAt": v.created_at,
        "Driver": v.driver,
        "Labels": v.labels,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": v.options,
        "Scope": v.scope,
    })
}

pub async fn run(ctx: &Ctx, cmd: VolumeCommand) -> i32 {
    match cmd {
        VolumeCommand::Create(a) => create(ctx, a).await,
        VolumeCommand::Ls(a) => ls(ctx, a).await,
        VolumeCommand::Inspect(a) => inspect(ctx, a).await,
        VolumeCommand::Rm(a) => rm(ctx, a).await,
        VolumeCommand::Prune(a) => prune(ctx, a).await,
    }
}

async fn create(ctx: &Ctx, a: CreateArgs) -> i32 {
    let name = match (&a.name, &a.name_flag) {
        (Some(n), Some(f)) if n != f => {
            eprint_err(
                "conflicting options: either specify --name or provide positional arg, not both",
            );
            return 1;
        }
        (Some(n), _) | (None, Some(n)) => n.clone(),
        (None, None) => String::new(),
    };
    let (labels, options) = match (key_values(&a.label, "label"), key_values(&a.opt, "opt")) {
        (Ok(l), Ok(o)) => (l, o),
        (Err(e), _) | (_, Err(e)) => {
            eprint_err(&e);
            return 1;
        }
    };
    match ctx
        .volumes()
        .create(ctx.req(CreateVolumeRequest {
            name,
            driver: a.driver,
            labels,
            options,
        }))
        .await
    {
        Ok(v) => {
            crate::outln(&v.into_inner().name);
            0
        }
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            1
        }
    }
}

async fn ls(ctx: &Ctx, a: LsArgs) -> i32 {
    let format = match output_format(a.format.as_deref(), a.quiet) {
        Ok(f) => f,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    let filters = match crate::cmd::lifecycle::parse_filters(&a.filter) {
        Ok(f) => f,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    let vols = match ctx
        .volumes()
        .list(ctx.req(ListVolumesRequest { filters }))
        .await
    {
        Ok(r) => r.into_inner().volumes,
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    let rows: Vec<Value> = vols
        .iter()
        .map(|v| {
            let mut labels: Vec<String> =
                v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            json!({
                "Name": v.name,
                "Driver": v.driver,
                "Scope": v.scope,
                "Mountpoint": v.mountpoint,
                "Labels": labels.join(","),
                "Links": if v.ref_count >= 0 { v.ref_count.to_string() } else { "N/A".into() },
                "Size": "N/A",
            })
        })
        .collect();
    let header = json!({
        "Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE",
        "Mountpoint": "MOUNTPOINT", "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE",
    });
    print_rows(
        format,
        "table {{.Driver}}\t{{.Name}}",
        "{{.Name}}",
        &header,
        &rows,
    )
}

async fn inspect(ctx: &Ctx, a: InspectArgs) -> i32 {
    crate::cmd::inspect::fetch_and_print(ctx, &a.names, a.format.as_deref(), |name| async move {
        let v = ctx
            .volumes()
            .inspect(ctx.req(VolumeRef {
                name: name.to_string(),
            }))
            .await?;
        Ok(doc(&v.into_inner()))
    })
    .await
}

async fn rm(ctx: &Ctx, a: RmArgs) -> i32 {
    let mut failed = false;
    for name in &a.names {
        match ctx
            .volumes()
            .remove(ctx.req(RemoveVolumeRequest {
                name: name.clone(),
                force: a.force,
            }))
            .await
        {
            Ok(_) => crate::outln(name),
            Err(s) => {
                eprint_err(&ctx.describe(&s));
                failed = true;
            }
        }
    }
    i32::from(failed)
}

/// Docker's prompt for `volume prune`.
pub(crate) fn prune_warning(all: bool) -> &'static str {
    if all {
        "WARNING! This will remove all local volumes not used by at least one container."
    } else {
        "WARNING! This will remove anonymous local volumes not used by at least one container."
    }
}

/// Runs a volume prune and adds docker's "Deleted Volumes:" block to
/// `out`; the bytes freed.
pub(crate) async fn prune_into(
    ctx: &Ctx,
    all: bool,
    filters: HashMap<String, berth_proto::gateway::v1::StringList>,
    out: &mut String,
) -> Result<u64, tonic::Status> {
    let resp = ctx
        .volumes()
        .prune(ctx.req(PruneVolumesRequest { all, filters }))
        .await?
        .into_inner();
    if !resp.deleted.is_empty() {
        out.push_str("Deleted Volumes:\n");
        for n in &resp.deleted {
            out.push_str(n);
            out.push('\n');
        }
        out.push('\n');
    }
    Ok(resp.space_reclaimed)
}

async fn prune(ctx: &Ctx, a: PruneArgs) -> i32 {
    let filters = match crate::cmd::lifecycle::parse_filters(&a.filter) {
        Ok(f) => f,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    if !a.force && !crate::cmd::imagestore::confirm(prune_warning(a.all)) {
        return 0;
    }
    let mut out = String::new();
    match prune_into(ctx, a.all, filters, &mut out).await {
        Ok(freed) => {
            out.push_str(&format!(
                "Total reclaimed space: {}",
                crate::render::human_size4(freed as i64)
            ));
            crate::outln(&out);
            0
        }
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            1
        }
    }
}

/// Parses one `--mount` value (docker's CSV: type=,source=/src=,
/// target=/dst=/destination=, readonly/ro, volume-*, tmpfs-*, bind-*).
pub fn parse_mount(spec: &str) -> Result<MountSpec, String> {
    let bad = |why: String| format!("invalid argument \"{spec}\" for \"--mount\" flag: {why}");
    let mut m = MountSpec::default();
    let truthy = |k: &str, v: Option<&str>| -> Result<bool, String> {
        match v {
            None | Some("1") | Some("true") => Ok(true),
            Some("0") | Some("false") => Ok(false),
            Some(v) => Err(bad(format!("invalid value for {k}: {v}"))),
        }
    };
    for field in spec.split(',') {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_lowercase(), Some(v)),
            None => (field.trim().to_lowercase(), None),
        };
        let need = |v: Option<&str>| {
            v.map(str::to_string)
                .ok_or_else(|| bad(format!("invalid field '{field}' must be a key=value pair")))
        };
        match k.as_str() {
            "type" => m.r#type = need(v)?,
            "source" | "src" => m.source = need(v)?,
            "target" | "dst" | "destination" => m.target = need(v)?,
            "readonly" | "ro" => m.read_only = truthy(&k, v)?,
            "volume-nocopy" => m.volume_nocopy = truthy(&k, v)?,
            "volume-driver" => m.volume_driver = need(v)?,
            "volume-label" | "volume-opt" => {
                let kv = need(v)?;
                let (a, b) = kv.split_once('=').ok_or_else(|| {
                    bad(format!("invalid field '{field}' must be a key=value pair"))
                })?;
                let map = if k == "volume-label" {
                    &mut m.volume_labels
                } else {
                    &mut m.volume_options
                };
                map.insert(a.to_string(), b.to_string());
            }
            "bind-propagation" => m.bind_propagation = need(v)?,
            "tmpfs-size" => {
                let s = need(v)?;
                m.tmpfs_size = berth_common::units::ram_in_bytes(&s)
                    .map_err(|e| bad(format!("invalid tmpfs-size: {e}")))?;
            }
            "tmpfs-mode" => {
                let s = need(v)?;
                m.tmpfs_mode = u32::from_str_radix(&s, 8)
                    .map_err(|_| bad(format!("invalid tmpfs-mode {s:?}: not octal")))?;
            }
            "" if field.is_empty() => {}
            _ => return Err(bad(format!("unexpected key '{k}' in '{field}'"))),
        }
    }
    if m.target.is_empty() {
        return Err(bad("target is required".into()));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_flags() {
        let m = parse_mount("type=bind,src=/a,dst=/b,readonly,bind-propagation=rshared").unwrap();
        assert_eq!(
            (m.r#type.as_str(), m.source.as_str(), m.target.as_str()),
            ("bind", "/a", "/b")
        );
        assert!(m.read_only);
        assert_eq!(m.bind_propagation, "rshared");
        let m = parse_mount(
            "type=volume,source=v,target=/d,volume-opt=size=64m,volume-label=a=b,volume-nocopy=true,ro=false",
        )
        .unwrap();
        assert_eq!(
            m.volume_options.get("size").map(String::as_str),
            Some("64m")
        );
        assert_eq!(m.volume_labels.get("a").map(String::as_str), Some("b"));
        assert!(m.volume_nocopy && !m.read_only);
        let m = parse_mount("type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=700").unwrap();
        assert_eq!((m.tmpfs_size, m.tmpfs_mode), (1 << 20, 0o700));
        for (bad, why) in [
            ("type=bind,src=/a", "target is required"),
            ("type=bind,bogus=1,dst=/b", "unexpected key 'bogus'"),
            ("type,dst=/b", "must be a key=value pair"),
            ("dst=/b,readonly=maybe", "invalid value for readonly"),
            ("dst=/b,tmpfs-mode=9z", "not octal"),
            ("dst=/b,volume-opt=x", "must be a key=value pair"),
        ] {
            let e = parse_mount(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn labels_and_options() {
        let l = key_values(&["a=1".into(), "b".into()], "label").unwrap();
        assert_eq!(l.get("b").map(String::as_str), Some(""));
        assert!(key_values(&["b".into()], "opt").is_err());
        assert!(key_values(&["=x".into()], "opt").is_err());
    }
}
