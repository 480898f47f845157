//! Local image management: save, load, history, image prune, system prune
//! and system df.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};

use berth_proto::gateway::v1::{
    Empty, HistoryRequest, ListContainersRequest, LoadRequest, PruneContainersRequest,
    PruneImagesRequest, SaveRequest, StringList,
};
use chrono::Utc;
use clap::{ArgAction, Args};
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::cmd::lifecycle::parse_filters;
use crate::ctx::Ctx;
use crate::render::{
    ago_unix, ellipsis, human_size, human_size4, ps_command, ps_status, short_id, StateView,
};
use crate::{eprint_err, output_format};

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long, value_name = "string")]
    pub output: Option<String>,
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from tar archive file, instead of STDIN
    #[arg(short = 'i', long, value_name = "string")]
    pub input: Option<String>,
    /// Suppress the load output
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long = "human", value_name = "bool", default_value_t = true,
          action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true",
          require_equals = true)]
    pub human: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Format output using a custom template ("table", "json" or a Go template)
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

#[derive(Debug, Args)]
pub struct ImagePruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long = "filter", value_name = "filter")]
    pub filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SystemPruneArgs {
    /// Remove all unused images not just dangling ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Provide filter values (e.g. "label=<key>=<value>")
    #[arg(long = "filter", value_name = "filter")]
    pub filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Prune anonymous volumes
    #[arg(long)]
    pub volumes: bool,
}

#[derive(Debug, Args)]
pub struct DfArgs {
    /// Show detailed information on space usage
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

/// Docker's confirmation: true when the user answers y/yes.
pub(crate) fn confirm(warning: &str) -> bool {
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim().to_lowercase().as_str(), "y" | "yes")
}

/// `berth save`: the archive goes to a temp file beside `-o` and is renamed
/// only when whole, so a failed save leaves no file.
pub async fn save(ctx: &Ctx, args: SaveArgs) -> i32 {
    if args.output.is_none() && std::io::stdout().is_terminal() {
        eprint_err("cowardly refusing to save to a terminal. Use the -o flag or redirect");
        return 1;
    }
    let mut stream = match ctx
        .images()
        .save(ctx.req(SaveRequest {
            references: args.images.clone(),
        }))
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    let (mut out, tmp): (Box<dyn Write>, Option<std::path::PathBuf>) = match &args.output {
        None => (Box::new(std::io::stdout().lock()), None),
        Some(path) => {
            let p = std::path::Path::new(path);
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            };
            let name = p
                .file_name()
                .map_or_else(|| "save".into(), |n| n.to_string_lossy().into_owned());
            let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
            match std::fs::File::create(&tmp) {
                Ok(f) => (Box::new(std::io::BufWriter::new(f)), Some(tmp)),
                Err(e) => {
                    eprint_err(&format!("failed to save image: open {path}: {e}"));
                    return 1;
                }
            }
        }
    };
    let fail = |msg: String, tmp: &Option<std::path::PathBuf>| {
        if let Some(t) = tmp {
            let _ = std::fs::remove_file(t);
        }
        eprint_err(&msg);
        1
    };
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                if let Err(e) = out.write_all(&chunk.data) {
                    return fail(format!("failed to save image: {e}"), &tmp);
                }
            }
            Ok(None) => break,
            Err(s) => return fail(ctx.describe(&s), &tmp),
        }
    }
    if let Err(e) = out.flush() {
        return fail(format!("failed to save image: {e}"), &tmp);
    }
    drop(out);
    if let (Some(t), Some(path)) = (&tmp, &args.output) {
        if let Err(e) = std::fs::rename(t, path) {
            return fail(format!("failed to save image: rename to {path}: {e}"), &tmp);
        }
    }
    0
}

/// `berth load`.
pub async fn load(ctx: &Ctx, args: LoadArgs) -> i32 {
    let mut reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match args.input.as_deref() {
        None | Some("-") => {
            if std::io::stdin().is_terminal() {
                eprint_err("requested load from stdin, but stdin is empty");
                return 1;
            }
            Box::new(tokio::io::stdin())
        }
        Some(path) => match tokio::fs::File::open(path).await {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprint_err(&format!("open {path}: {e}"));
                return 1;
            }
        },
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<LoadRequest>(4);
    let (err_tx, mut err_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
    let reading = tokio::spawn(async move {
        loop {
            let mut buf = vec![0u8; super::images::CHUNK];
            let mut filled = 0;
            while filled < buf.len() {
                match reader.read(&mut buf[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        let _ = err_tx.send(e);
                        return;
                    }
                }
            }
            if filled == 0 {
                return;
            }
            buf.truncate(filled);
            let last = filled < super::images::CHUNK;
            if tx.send(LoadRequest { data: buf }).await.is_err() || last {
                return;
            }
        }
    });
    let mut images = ctx.images();
    let call = images.load(ctx.req(tokio_stream::wrappers::ReceiverStream::new(rx)));
    // A read error aborts the call: the daemon never takes a short archive
    // for a whole one.
    let result = tokio::select! {
        r = call => r,
        Ok(e) = &mut err_rx => {
            eprint_err(&format!("Error: read archive: {e}"));
            reading.abort();
            return 1;
        }
    };
    match result {
        Ok(resp) => {
            if !args.quiet {
                for img in resp.into_inner().images {
                    if img.names.is_empty() {
                        crate::outln(&format!("Loaded image ID: {}", img.id));
                    }
                    for n in img.names {
                        crate::outln(&format!("Loaded image: {n}"));
                    }
                }
            }
            0
        }
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            1
        }
    }
}

/// `berth history`.
pub async fn history(ctx: &Ctx, args: HistoryArgs) -> i32 {
    let format = match output_format(args.format.as_deref(), args.quiet) {
        Ok(f) => f,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    let resp = match ctx
        .images()
        .history(ctx.req(HistoryRequest {
            reference: args.image.clone(),
        }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    let now = Utc::now();
    let rows: Vec<serde_json::Value> = resp
        .entries
        .iter()
        .map(|h| {
            let id = if args.no_trunc || h.id.starts_with('<') {
                h.id.clone()
            } else {
                short_id(&h.id)
            };
            let at = chrono::DateTime::from_timestamp(h.created, 0)
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                })
                .unwrap_or_default();
            let created_by = h.created_by.replace('\t', " ");
            json!({
                "ID": id,
                "CreatedSince": if args.human { ago_unix(now, h.created) } else { at.clone() },
                "CreatedAt": at,
                "CreatedBy": if args.no_trunc { created_by } else { ellipsis(&created_by, 45) },
                "Size": if args.human { human_size(h.size) } else { h.size.to_string() },
                "Comment": h.comment,
            })
        })
        .collect();
    let header = json!({
        "ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
        "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT",
    });
    let default = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}";
    crate::print_rows(format, default, "{{.ID}}", &header, &rows)
}

/// Prints a prune's deleted images in docker's form ("untagged: ...",
/// "deleted: ...").
fn images_report(out: &mut String, deleted: &[berth_proto::gateway::v1::ImageDeleteItem]) {
    if deleted.is_empty() {
        return;
    }
    out.push_str("Deleted Images:\n");
    for d in deleted {
        if !d.untagged.is_empty() {
            out.push_str(&format!("untagged: {}\n", d.untagged));
        }
        if !d.deleted.is_empty() {
            out.push_str(&format!("deleted: {}\n", d.deleted));
        }
    }
    out.push('\n');
}

/// `berth image prune`.
pub async fn prune_images(ctx: &Ctx, args: ImagePruneArgs) -> i32 {
    let mut filters = match parse_filters(&args.filter) {
        Ok(f) => f,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    if args.all {
        filters.insert(
            "dangling".into(),
            StringList {
                values: vec!["false".into()],
            },
        );
    }
    let warning = if args.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !args.force && !confirm(warning) {
        return 0;
    }
    let resp = match ctx
        .images()
        .prune(ctx.req(PruneImagesRequest { filters }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    let mut out = String::new();
    images_report(&mut out, &resp.deleted);
    out.push_str(&format!(
        "Total reclaimed space: {}",
        human_size4(resp.space_reclaimed as i64)
    ));
    crate::outln(&out);
    0
}

/// `berth system prune`: stopped containers, then dangling (or, with -a,
/// unused) images, as docker's client does it, one API call each.
pub async fn prune_system(ctx: &Ctx, args: SystemPruneArgs) -> i32 {
    let filters = match parse_filters(&args.filter) {
        Ok(f) => f,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    if let Some(k) = filters
        .keys()
        .find(|k| !matches!(k.as_str(), "until" | "label" | "label!"))
    {
        eprint_err(&format!("Error response from daemon: invalid filter '{k}'"));
        return 1;
    }
    let images_line = if args.all {
        "  - all images without at least one container associated to them"
    } else {
        "  - all dangling images"
    };
    let volumes_line = if args.volumes {
        "  - all anonymous volumes not used by at least one container\n"
    } else {
        ""
    };
    let warning = format!(
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n{volumes_line}{images_line}\n"
    );
    if !args.force && !confirm(&warning) {
        return 0;
    }
    let containers = match ctx
        .containers()
        .prune(ctx.req(PruneContainersRequest {
            filters: filters.clone(),
        }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    let mut out = String::new();
    crate::cmd::lifecycle::containers_report(&mut out, &containers.deleted);
    let mut total = containers.space_reclaimed;
    if let Err(s) = crate::cmd::networks::prune_into(ctx, filters.clone(), &mut out).await {
        eprint_err(&ctx.describe(&s));
        return 1;
    }
    if args.volumes {
        // Volumes have no creation-time filter.
        let mut vf = filters.clone();
        vf.remove("until");
        match crate::cmd::volumes::prune_into(ctx, false, vf, &mut out).await {
            Ok(freed) => total += freed,
            Err(s) => {
                eprint_err(&ctx.describe(&s));
                return 1;
            }
        }
    }
    let mut image_filters = filters;
    if args.all {
        image_filters.insert(
            "dangling".into(),
            StringList {
                values: vec!["false".into()],
            },
        );
    }
    let images = match ctx
        .images()
        .prune(ctx.req(PruneImagesRequest {
            filters: image_filters,
        }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    images_report(&mut out, &images.deleted);
    total += images.space_reclaimed;
    out.push_str(&format!(
        "Total reclaimed space: {}",
        human_size4(total as i64)
    ));
    crate::outln(&out);
    0
}

/// "SIZE (PCT%)" as docker's df shows reclaimable space.
fn with_percent(part: i64, total: i64) -> String {
    if total > 0 {
        format!("{} ({}%)", human_size4(part), part * 100 / total)
    } else {
        human_size4(part)
    }
}

fn is_active(state: &str) -> bool {
    matches!(state, "running" | "paused" | "restarting")
}

/// `berth system df`.
pub async fn df(ctx: &Ctx, args: DfArgs) -> i32 {
    let du = match ctx.system().disk_usage(ctx.req(Empty {})).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    if !args.verbose {
        let used: i64 = du
            .images
            .iter()
            .filter(|i| i.containers > 0)
            .map(|i| i.size - i.shared_size)
            .sum();
        let total = du.layers_size;
        let c_total: i64 = du.containers.iter().map(|c| c.size_rw).sum();
        let c_reclaim: i64 = du
            .containers
            .iter()
            .filter(|c| !is_active(&c.state))
            .map(|c| c.size_rw)
            .sum();
        let rows = vec![
            vec!["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
                .into_iter()
                .map(String::from)
                .collect(),
            vec![
                "Images".to_string(),
                du.images.len().to_string(),
                du.images
                    .iter()
                    .filter(|i| i.containers > 0)
                    .count()
                    .to_string(),
                human_size4(total),
                with_percent((total - used).max(0), total),
            ],
            vec![
                "Containers".to_string(),
                du.containers.len().to_string(),
                du.containers
                    .iter()
                    .filter(|c| is_active(&c.state))
                    .count()
                    .to_string(),
                human_size4(c_total),
                with_percent(c_reclaim, c_total),
            ],
            {
                let size: i64 = du.volumes.iter().map(|v| v.size.max(0)).sum();
                let unused: i64 = du
                    .volumes
                    .iter()
                    .filter(|v| v.ref_count == 0)
                    .map(|v| v.size.max(0))
                    .sum();
                vec![
                    "Local Volumes".to_string(),
                    du.volumes.len().to_string(),
                    du.volumes
                        .iter()
                        .filter(|v| v.ref_count > 0)
                        .count()
                        .to_string(),
                    human_size4(size),
                    with_percent(unused, size),
                ]
            },
            vec!["Build Cache", "0", "0", "0B", "0B"]
                .into_iter()
                .map(String::from)
                .collect(),
        ];
        crate::outln(crate::render::table(&rows).trim_end());
        return 0;
    }
    // -v: docker's four sections. Container statuses come from the list.
    let statuses: HashMap<String, String> = match ctx
        .containers()
        .list(ctx.req(ListContainersRequest { all: true }))
        .await
    {
        Ok(r) => {
            let now = Utc::now();
            r.into_inner()
                .containers
                .into_iter()
                .map(|c| {
                    let s = ps_status(
                        &StateView {
                            state: &c.state,
                            exit_code: c.exit_code,
                            started_at: berth_common::time::parse_rfc3339(&c.started_at),
                            finished_at: berth_common::time::parse_rfc3339(&c.finished_at),
                        },
                        now,
                    );
                    (c.id, s)
                })
                .collect()
        }
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    let now = Utc::now();
    let mut text = String::from("Images space usage:\n\n");
    let mut rows: Vec<Vec<String>> = vec![[
        "REPOSITORY",
        "TAG",
        "IMAGE ID",
        "CREATED",
        "SIZE",
        "SHARED SIZE",
        "UNIQUE SIZE",
        "CONTAINERS",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()];
    for i in &du.images {
        let tags: Vec<(String, String)> = if i.repo_tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            i.repo_tags
                .iter()
                .map(|t| crate::render::split_repo_tag(t))
                .collect()
        };
        for (repo, tag) in tags {
            rows.push(vec![
                repo,
                tag,
                short_id(&i.id),
                ago_unix(now, i.created),
                human_size4(i.size),
                human_size4(i.shared_size),
                human_size4(i.size - i.shared_size),
                i.containers.to_string(),
            ]);
        }
    }
    text.push_str(&crate::render::table(&rows));
    text.push_str("\nContainers space usage:\n\n");
    let mut rows: Vec<Vec<String>> = vec![[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "LOCAL VOLUMES",
        "SIZE",
        "CREATED",
        "STATUS",
        "NAMES",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()];
    for c in &du.containers {
        let image = if c.image.starts_with("sha256:") {
            short_id(&c.image)
        } else {
            c.image.clone()
        };
        rows.push(vec![
            short_id(&c.id),
            image,
            ps_command(&c.command, false),
            c.local_volumes.to_string(),
            human_size4(c.size_rw),
            ago_unix(now, c.created),
            statuses
                .get(&c.id)
                .cloned()
                .unwrap_or_else(|| c.state.clone()),
            c.names.join(","),
        ]);
    }
    text.push_str(&crate::render::table(&rows));
    text.push_str("\nLocal Volumes space usage:\n\n");
    let mut rows = vec![vec![
        "VOLUME NAME".to_string(),
        "LINKS".into(),
        "SIZE".into(),
    ]];
    for v in &du.volumes {
        rows.push(vec![
            v.name.clone(),
            v.ref_count.to_string(),
            human_size4(v.size.max(0)),
        ]);
    }
    text.push_str(&crate::render::table(&rows));
    text.push_str("\nBuild cache usage: 0B\n\n");
    text.push_str(&crate::render::table(&[[
        "CACHE ID",
        "CACHE TYPE",
        "SIZE",
        "CREATED",
        "LAST USED",
        "USAGE",
        "SHARED",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()]));
    crate::outln(text.trim_end());
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let f =
            parse_filters(&["until=48h".into(), "label!=a=b".into(), "label=c".into()]).unwrap();
        assert_eq!(f["until"].values, vec!["48h"]);
        assert_eq!(f["label!"].values, vec!["a=b"]);
        assert_eq!(f["label"].values, vec!["c"]);
        assert!(parse_filters(&["nope".into()]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size4(0), "0B");
        assert_eq!(human_size4(4_261_000), "4.261MB");
        assert_eq!(with_percent(50, 200), "50B (25%)");
        assert_eq!(with_percent(0, 0), "0B");
    }
}
