//! Image commands: import, images, image inspect, tag, rmi.

use berth_proto::gateway::v1::{
    import_request, ImportHeader, ImportRequest, InspectImageRequest, ListImagesRequest,
    RemoveImageRequest, TagRequest,
};
use chrono::Utc;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::cli::{ImageInspectArgs, ImagesArgs, ImportArgs, RmiArgs, TagArgs};
use crate::ctx::Ctx;
use crate::render::{ago_unix, human_size, short_id, split_repo_tag};
use crate::{eprint_err, output_format};

/// Size of the data messages of an import stream.
pub const CHUNK: usize = 256 * 1024;

/// `berth import` / `berth image import`.
pub async fn import(ctx: &Ctx, args: ImportArgs) -> i32 {
    // A URL is fetched by the daemon, as docker's daemon does: only the
    // header is sent.
    let is_url = args.file.starts_with("http://") || args.file.starts_with("https://");
    let mut reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if is_url {
        Box::new(tokio::io::empty())
    } else if args.file == "-" {
        Box::new(tokio::io::stdin())
    } else {
        if args.file.contains("://") {
            eprint_err(&format!(
                "Error: unsupported URL {}: only http:// and https:// can be imported",
                args.file
            ));
            return 1;
        }
        match tokio::fs::File::open(&args.file).await {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprint_err(&format!("Error: open {}: {e}", args.file));
                return 1;
            }
        }
    };
    let header = ImportHeader {
        reference: args.reference.clone().unwrap_or_default(),
        changes: args.change.clone(),
        message: args.message.clone().unwrap_or_default(),
        source: args.file.clone(),
        url: if is_url {
            args.file.clone()
        } else {
            String::new()
        },
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<ImportRequest>(4);
    let (err_tx, mut err_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
    let reading = tokio::spawn(async move {
        let first = ImportRequest {
            payload: Some(import_request::Payload::Header(header)),
        };
        if tx.send(first).await.is_err() {
            return;
        }
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            // Fill whole chunks (stdin gives short reads).
            while filled < CHUNK {
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
            let msg = ImportRequest {
                payload: Some(import_request::Payload::Data(buf)),
            };
            if tx.send(msg).await.is_err() || filled < CHUNK {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut images = ctx.images();
    let call = images.import(ctx.req(stream));
    // A read error aborts the call, so the daemon never sees a short tarball
    // as a complete one.
    let result = tokio::select! {
        r = call => r,
        Ok(e) = &mut err_rx => {
            eprint_err(&format!("Error: read {}: {e}", args.file));
            reading.abort();
            return 1;
        }
    };
    match result {
        Ok(resp) => {
            crate::outln(&resp.into_inner().id);
            0
        }
        Err(status) => {
            if let Ok(e) = err_rx.try_recv() {
                eprint_err(&format!("Error: read {}: {e}", args.file));
            } else {
                eprint_err(&ctx.describe(&status));
            }
            1
        }
    }
}

/// `images --filter`: dangling=true|false, reference=PATTERN (docker's
/// glob on NAME or NAME:TAG), label=KEY[=VALUE], before=IMAGE and
/// since=IMAGE (created before / after that image).
#[derive(Debug, Default)]
pub struct ImageFilter {
    dangling: Option<bool>,
    references: Vec<String>,
    labels: Vec<String>,
    before: Vec<String>,
    since: Vec<String>,
}

/// The image a `before=`/`since=` filter names: by NAME[:TAG] or ID
/// (prefix), as docker resolves it.
fn find_image<'a>(
    images: &'a [berth_proto::gateway::v1::ImageSummary],
    name: &str,
) -> Option<&'a berth_proto::gateway::v1::ImageSummary> {
    let with_tag = if name.rsplit('/').next().is_some_and(|l| l.contains(':')) {
        name.to_string()
    } else {
        format!("{name}:latest")
    };
    images
        .iter()
        .find(|i| i.repo_tags.contains(&with_tag))
        .or_else(|| {
            let hex = name.strip_prefix("sha256:").unwrap_or(name);
            if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            images
                .iter()
                .find(|i| i.id.trim_start_matches("sha256:").starts_with(hex))
        })
}

impl ImageFilter {
    pub fn parse(specs: &[String]) -> Result<ImageFilter, String> {
        let mut f = ImageFilter::default();
        for spec in specs {
            let Some((k, v)) = spec.split_once('=') else {
                return Err(format!(
                    "bad format of filter (expected name=value): {spec}"
                ));
            };
            match k.trim().to_lowercase().as_str() {
                "dangling" => match v.to_lowercase().as_str() {
                    "true" | "1" => f.dangling = Some(true),
                    "false" | "0" => f.dangling = Some(false),
                    _ => return Err(format!("invalid filter 'dangling={v}'")),
                },
                "reference" => f.references.push(v.to_string()),
                "label" => f.labels.push(v.to_string()),
                "before" => f.before.push(v.to_string()),
                "since" => f.since.push(v.to_string()),
                other => return Err(format!("invalid filter '{other}'")),
            }
        }
        Ok(f)
    }

    fn image_matches(
        &self,
        dangling: bool,
        labels: &std::collections::HashMap<String, String>,
    ) -> bool {
        if self.dangling.is_some_and(|d| d != dangling) {
            return false;
        }
        if dangling && !self.references.is_empty() {
            return false;
        }
        self.labels.iter().all(|l| match l.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
            None => labels.contains_key(l.as_str()),
        })
    }

    fn tag_matches(&self, repo: &str, tag: &str) -> bool {
        if repo == "<none>" {
            return true;
        }
        let full = format!("{repo}:{tag}");
        self.references.is_empty()
            || self
                .references
                .iter()
                .any(|p| glob(p, repo) || glob(p, &full))
    }
}

/// Go's `path.Match` subset: `*` (not across '/'), `?`, literal text.
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != '/')
                .any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => n.first().is_some_and(|c| *c != '/') && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// `berth images` / `berth image ls`.
pub async fn list(ctx: &Ctx, args: ImagesArgs) -> i32 {
    let format = match output_format(args.format.as_deref(), args.quiet) {
        Ok(f) => f,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    let mut filter = match ImageFilter::parse(&args.filter) {
        Ok(f) => f,
        Err(e) => {
            eprint_err(&format!("Error response from daemon: {e}"));
            return 1;
        }
    };
    if let Some(r) = &args.reference {
        filter.references.push(r.clone());
    }
    let resp = match ctx
        .images()
        .list(ctx.req(ListImagesRequest { all: args.all }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    let mut images = resp.images;
    images.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    // before=/since=: bounds on the creation time, from the named images.
    let mut created_before = i64::MAX;
    let mut created_after = i64::MIN;
    for (names, before) in [(&filter.before, true), (&filter.since, false)] {
        for n in names {
            let Some(img) = find_image(&images, n) else {
                eprint_err(&format!("Error response from daemon: No such image: {n}"));
                return 1;
            };
            if before {
                created_before = created_before.min(img.created);
            } else {
                created_after = created_after.max(img.created);
            }
        }
    }
    images.retain(|i| i.created < created_before && i.created > created_after);
    let now = Utc::now();
    let mut rows = Vec::new();
    for img in &images {
        let mut tags: Vec<(String, String)> = img
            .repo_tags
            .iter()
            .filter(|t| t.as_str() != "<none>:<none>")
            .map(|t| split_repo_tag(t))
            .collect();
        let dangling = tags.is_empty();
        if !filter.image_matches(dangling, &img.labels) {
            continue;
        }
        if dangling {
            tags.push(("<none>".into(), "<none>".into()));
        }
        for (repo, tag) in tags {
            if !filter.tag_matches(&repo, &tag) {
                continue;
            }
            let id = if args.no_trunc {
                img.id.clone()
            } else {
                short_id(&img.id)
            };
            let digest = img
                .repo_digests
                .iter()
                .filter_map(|d| d.split_once('@'))
                .find(|(name, _)| *name == repo)
                .map_or("<none>".to_string(), |(_, d)| d.to_string());
            rows.push(json!({
                "Containers": "N/A",
                "CreatedAt": chrono::DateTime::from_timestamp(img.created, 0)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
                    .unwrap_or_default(),
                "CreatedSince": ago_unix(now, img.created),
                "Digest": digest,
                "ID": id,
                "Repository": repo,
                "SharedSize": "N/A",
                "Size": human_size(img.size),
                "Tag": tag,
                "UniqueSize": "N/A",
                "VirtualSize": human_size(img.size),
            }));
        }
    }
    let header = json!({
        "Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID",
        "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
        "Digest": "DIGEST", "VirtualSize": "VIRTUAL SIZE", "Containers": "CONTAINERS",
        "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE",
    });
    let default = if args.digests {
        "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    crate::print_rows(format, default, "{{.ID}}", &header, &rows)
}

/// Fetches one image's inspect document.
pub async fn inspect_one(ctx: &Ctx, name: &str) -> Result<Value, tonic::Status> {
    let resp = ctx
        .images()
        .inspect(ctx.req(InspectImageRequest {
            reference: name.to_string(),
        }))
        .await?
        .into_inner();
    serde_json::from_str(&resp.json)
        .map_err(|e| tonic::Status::internal(format!("bad inspect document from daemon: {e}")))
}

/// `berth image inspect`.
pub async fn inspect(ctx: &Ctx, args: ImageInspectArgs) -> i32 {
    crate::cmd::inspect::run(
        ctx,
        &args.names,
        args.format.as_deref(),
        Some(crate::cmd::inspect::Kind::Image),
    )
    .await
}

/// `berth tag`.
pub async fn tag(ctx: &Ctx, args: TagArgs) -> i32 {
    match ctx
        .images()
        .tag(ctx.req(TagRequest {
            source: args.source,
            target: args.target,
        }))
        .await
    {
        Ok(_) => 0,
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            1
        }
    }
}

/// `berth rmi` / `berth image rm`.
pub async fn rmi(ctx: &Ctx, args: RmiArgs) -> i32 {
    let mut failed = false;
    for image in &args.images {
        match ctx
            .images()
            .remove(ctx.req(RemoveImageRequest {
                reference: image.clone(),
                force: args.force,
            }))
            .await
        {
            Ok(resp) => {
                let resp = resp.into_inner();
                for u in resp.untagged {
                    crate::outln(&format!("Untagged: {u}"));
                }
                for d in resp.deleted {
                    crate::outln(&format!("Deleted: {d}"));
                }
            }
            Err(s) => {
                eprint_err(&ctx.describe(&s));
                failed = true;
            }
        }
    }
    i32::from(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("busybox", "busybox"));
        assert!(glob("busy*", "busybox"));
        assert!(glob("busybox:*", "busybox:latest"));
        assert!(glob("b?sybox", "busybox"));
        assert!(!glob("busy", "busybox"));
        assert!(!glob("*", "library/busybox"));
        assert!(glob("*/busybox", "library/busybox"));
    }

    #[test]
    fn image_filters() {
        let f = ImageFilter::parse(&["dangling=true".into()]).unwrap();
        assert!(f.image_matches(true, &Default::default()));
        assert!(!f.image_matches(false, &Default::default()));
        let f = ImageFilter::parse(&["reference=busy*".into(), "label=a=1".into()]).unwrap();
        let labels = [("a".to_string(), "1".to_string())].into();
        assert!(f.image_matches(false, &labels));
        assert!(!f.image_matches(false, &Default::default()));
        assert!(f.tag_matches("busybox", "latest"));
        assert!(!f.tag_matches("alpine", "latest"));
        let f = ImageFilter::parse(&["reference=busybox:1".into()]).unwrap();
        assert!(f.tag_matches("busybox", "1"));
        assert!(!f.tag_matches("busybox", "latest"));
        assert!(ImageFilter::parse(&["dangling=maybe".into()]).is_err());
        assert!(ImageFilter::parse(&["nope=1".into()]).is_err());
    }
}
