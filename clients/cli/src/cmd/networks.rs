//! `berth network create|ls|inspect|rm|prune|connect|disconnect` and
//! `berth port`.

use std::collections::HashMap;

use berth_proto::gateway::v1::{
    ConnectNetworkRequest, CreateNetworkRequest, DisconnectNetworkRequest, ListNetworksRequest,
    NetworkRef, PruneNetworksRequest,
};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::ctx::Ctx;
use crate::{eprint_err, output_format, print_rows};

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks
    Inspect(InspectArgs),
    /// Remove one or more networks
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove all unused networks
    Prune(PruneArgs),
    /// Connect a container to a network
    Connect(ConnectArgs),
    /// Disconnect a container from a network
    Disconnect(DisconnectArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Driver to manage the Network
    #[arg(short = 'd', long, value_name = "string", default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR format that represents a network segment
    #[arg(long, value_name = "strings")]
    pub subnet: Vec<String>,
    /// Allocate container ip from a sub-range
    #[arg(long = "ip-range", value_name = "strings")]
    pub ip_range: Vec<String>,
    /// IPv4 or IPv6 Gateway for the master subnet
    #[arg(long, value_name = "strings")]
    pub gateway: Vec<String>,
    /// Restrict external access to the network
    #[arg(long)]
    pub internal: bool,
    /// Set metadata on a network
    #[arg(long = "label", value_name = "list")]
    pub label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt", value_name = "map")]
    pub opt: Vec<String>,
    #[arg(value_name = "NETWORK")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Provide filter values (e.g. "driver=bridge")
    #[arg(short = 'f', long = "filter", value_name = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Do not truncate the output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Only display network IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long, value_name = "string")]
    pub format: Option<String>,
    #[arg(value_name = "NETWORK", required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Do not error if the network does not exist
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(value_name = "NETWORK", required = true)]
    pub names: Vec<String>,
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

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// IPv4 address (e.g., "172.30.100.104")
    #[arg(long, value_name = "string")]
    pub ip: Option<String>,
    /// Add network-scoped alias for the container
    #[arg(long = "alias", value_name = "strings")]
    pub alias: Vec<String>,
    #[arg(value_name = "NETWORK")]
    pub network: String,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Debug, Args)]
pub struct DisconnectArgs {
    /// Force the container to disconnect from a network
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(value_name = "NETWORK")]
    pub network: String,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// PRIVATE_PORT[/PROTO]
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    pub port: Option<String>,
}

/// At most one value of a repeatable docker flag (berth's networks have
/// one IPv4 subnet).
fn one(v: &[String], flag: &str) -> Result<String, String> {
    match v {
        [] => Ok(String::new()),
        [x] => Ok(x.clone()),
        _ => Err(format!(
            "only one --{flag} is supported: berth networks have one IPv4 subnet"
        )),
    }
}

pub async fn run(ctx: &Ctx, cmd: NetworkCommand) -> i32 {
    let r = match cmd {
        NetworkCommand::Create(a) => create(ctx, a).await,
        NetworkCommand::Ls(a) => ls(ctx, a).await,
        NetworkCommand::Inspect(a) => return inspect(ctx, a).await,
        NetworkCommand::Rm(a) => return rm(ctx, a).await,
        NetworkCommand::Prune(a) => prune(ctx, a).await,
        NetworkCommand::Connect(a) => connect(ctx, a).await,
        NetworkCommand::Disconnect(a) => disconnect(ctx, a).await,
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprint_err(&e);
            1
        }
    }
}

async fn create(ctx: &Ctx, a: CreateArgs) -> Result<(), String> {
    let labels = crate::cmd::volumes::key_values(&a.label, "label")?;
    let options = crate::cmd::volumes::key_values(&a.opt, "opt")?;
    let n = ctx
        .networks()
        .create(ctx.req(CreateNetworkRequest {
            name: a.name,
            driver: a.driver,
            subnet: one(&a.subnet, "subnet")?,
            ip_range: one(&a.ip_range, "ip-range")?,
            gateway: one(&a.gateway, "gateway")?,
            internal: a.internal,
            labels,
            options,
        }))
        .await
        .map_err(|s| ctx.describe(&s))?
        .into_inner();
    crate::outln(&n.id);
    Ok(())
}

async fn ls(ctx: &Ctx, a: LsArgs) -> Result<(), String> {
    let format = output_format(a.format.as_deref(), a.quiet)?;
    let filters = crate::cmd::lifecycle::parse_filters(&a.filter)?;
    let nets = ctx
        .networks()
        .list(ctx.req(ListNetworksRequest { filters }))
        .await
        .map_err(|s| ctx.describe(&s))?
        .into_inner()
        .networks;
    let rows: Vec<Value> = nets
        .iter()
        .map(|n| {
            let mut labels: Vec<String> =
                n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let id = if a.no_trunc {
                n.id.clone()
            } else {
                n.id[..12.min(n.id.len())].to_string()
            };
            json!({
                "ID": id,
                "Name": n.name,
                "Driver": n.driver,
                "Scope": n.scope,
                "IPv4": "true",
                "IPv6": "false",
                "Internal": n.internal.to_string(),
                "Labels": labels.join(","),
                "CreatedAt": n.created,
            })
        })
        .collect();
    let header = json!({
        "ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
        "IPv4": "IPV4", "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS",
        "CreatedAt": "CREATED AT",
    });
    match print_rows(
        format,
        "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
        "{{.ID}}",
        &header,
        &rows,
    ) {
        0 => Ok(()),
        _ => Err("cannot print the networks".into()),
    }
}

/// One network's inspect document.
pub async fn inspect_one(ctx: &Ctx, name: &str) -> Result<Value, tonic::Status> {
    let r = ctx
        .networks()
        .inspect(ctx.req(NetworkRef {
            name: name.to_string(),
        }))
        .await?
        .into_inner();
    serde_json::from_str(&r.json)
        .map_err(|e| tonic::Status::internal(format!("bad inspect document from daemon: {e}")))
}

async fn inspect(ctx: &Ctx, a: InspectArgs) -> i32 {
    crate::cmd::inspect::fetch_and_print(ctx, &a.names, a.format.as_deref(), |n| {
        inspect_one(ctx, n)
    })
    .await
}

async fn rm(ctx: &Ctx, a: RmArgs) -> i32 {
    let mut failed = false;
    for name in &a.names {
        match ctx
            .networks()
            .remove(ctx.req(NetworkRef { name: name.clone() }))
            .await
        {
            Ok(_) => crate::outln(name),
            Err(s) if a.force && s.code() == tonic::Code::NotFound => {}
            Err(s) => {
                eprint_err(&ctx.describe(&s));
                failed = true;
            }
        }
    }
    i32::from(failed)
}

/// Docker's prompt for `network prune`.
pub(crate) const PRUNE_WARNING: &str =
    "WARNING! This will remove all custom networks not used by at least one container.";

/// Runs a network prune and adds docker's "Deleted Networks:" block to
/// `out`.
pub(crate) async fn prune_into(
    ctx: &Ctx,
    filters: HashMap<String, berth_proto::gateway::v1::StringList>,
    out: &mut String,
) -> Result<(), tonic::Status> {
    let resp = ctx
        .networks()
        .prune(ctx.req(PruneNetworksRequest { filters }))
        .await?
        .into_inner();
    if !resp.deleted.is_empty() {
        out.push_str("Deleted Networks:\n");
        for n in &resp.deleted {
            out.push_str(n);
            out.push('\n');
        }
        out.push('\n');
    }
    Ok(())
}

async fn prune(ctx: &Ctx, a: PruneArgs) -> Result<(), String> {
    let filters = crate::cmd::lifecycle::parse_filters(&a.filter)?;
    if !a.force && !crate::cmd::imagestore::confirm(PRUNE_WARNING) {
        return Ok(());
    }
    let mut out = String::new();
    prune_into(ctx, filters, &mut out)
        .await
        .map_err(|s| ctx.describe(&s))?;
    if !out.is_empty() {
        crate::outln(out.trim_end_matches('\n'));
    }
    Ok(())
}

async fn connect(ctx: &Ctx, a: ConnectArgs) -> Result<(), String> {
    ctx.networks()
        .connect_container(ctx.req(ConnectNetworkRequest {
            network: a.network,
            container: a.container,
            ipv4_address: a.ip.unwrap_or_default(),
            aliases: a.alias,
        }))
        .await
        .map_err(|s| ctx.describe(&s))?;
    Ok(())
}

async fn disconnect(ctx: &Ctx, a: DisconnectArgs) -> Result<(), String> {
    ctx.networks()
        .disconnect_container(ctx.req(DisconnectNetworkRequest {
            network: a.network,
            container: a.container,
            force: a.force,
        }))
        .await
        .map_err(|s| ctx.describe(&s))?;
    Ok(())
}

/// `berth port` lines from an inspect document's NetworkSettings.Ports:
/// "80/tcp -> 0.0.0.0:8080", sorted; only `want` ("80" or "80/udp") when
/// given.
pub fn port_lines(doc: &Value, want: Option<&str>) -> Result<Vec<String>, String> {
    let want = want.map(|w| {
        if w.contains('/') {
            w.to_string()
        } else {
            format!("{w}/tcp")
        }
    });
    let mut out = Vec::new();
    if let Some(ports) = doc["NetworkSettings"]["Ports"].as_object() {
        let mut keys: Vec<&String> = ports.keys().collect();
        keys.sort_by_key(|k| {
            let (p, proto) = k.split_once('/').unwrap_or((k, ""));
            (p.parse::<u32>().unwrap_or(0), proto.to_string())
        });
        for k in keys {
            if want.as_ref().is_some_and(|w| w != k) {
                continue;
            }
            for b in ports[k].as_array().into_iter().flatten() {
                let ip = b["HostIp"].as_str().unwrap_or("0.0.0.0");
                let port = b["HostPort"].as_str().unwrap_or("");
                if want.is_some() {
                    out.push(format!("{ip}:{port}"));
                } else {
                    out.push(format!("{k} -> {ip}:{port}"));
                }
            }
        }
    }
    if out.is_empty() {
        if let Some(w) = want {
            let name = doc["Name"].as_str().unwrap_or("").trim_start_matches('/');
            return Err(format!("No public port '{w}' published for {name}"));
        }
    }
    Ok(out)
}

/// `berth port CONTAINER [PRIVATE_PORT[/PROTO]]`.
pub async fn port(ctx: &Ctx, a: PortArgs) -> i32 {
    let doc = match crate::cmd::inspect::container_doc(ctx, &a.container).await {
        Ok(d) => d,
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    match port_lines(&doc, a.port.as_deref()) {
        Ok(lines) => {
            for l in lines {
                crate::outln(&l);
            }
            0
        }
        Err(e) => {
            eprint_err(&e);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_output() {
        let doc = json!({"Name": "/web", "NetworkSettings": {"Ports": {
            "443/tcp": null,
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
        }}});
        assert_eq!(
            port_lines(&doc, None).unwrap(),
            vec!["53/udp -> 127.0.0.1:5353", "80/tcp -> 0.0.0.0:8080"]
        );
        assert_eq!(port_lines(&doc, Some("80")).unwrap(), vec!["0.0.0.0:8080"]);
        assert_eq!(
            port_lines(&doc, Some("81")).unwrap_err(),
            "No public port '81/tcp' published for web"
        );
    }
}
