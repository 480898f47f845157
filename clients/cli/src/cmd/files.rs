//! cp, diff, export, commit.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use berth_proto::gateway::v1::container_files_client::ContainerFilesClient;
use berth_proto::gateway::v1::{
    copy_from_response, copy_to_request, CommitRequest, ContainerRef, CopyFromRequest,
    CopyToHeader, CopyToRequest, PathStat,
};
use clap::Args;
use tonic::transport::Channel;

use crate::ctx::Ctx;
use crate::eprint_err;

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short = 'a', long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Suppress progress output during copy
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(value_name = "SRC")]
    pub src: String,
    #[arg(value_name = "DEST")]
    pub dest: String,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long = "output", value_name = "string")]
    pub output: Option<String>,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short = 'a', long, value_name = "string")]
    pub author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change", value_name = "list")]
    pub change: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long, value_name = "string")]
    pub message: Option<String>,
    /// Pause container during commit
    #[arg(short = 'p', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub pause: bool,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
}

fn client(ctx: &Ctx) -> ContainerFilesClient<Channel> {
    ctx.files().max_decoding_message_size(64 << 20)
}

/// docker's `splitCpArg`: "CONTAINER:PATH" or a local path.
fn split_cp_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.starts_with('.') && !c.is_empty() => (Some(c), p),
        _ => (None, arg),
    }
}

fn is_dir_mode(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFDIR
}

/// `berth cp`.
pub async fn cp(ctx: &Ctx, args: CpArgs) -> i32 {
    let (src_c, src_p) = split_cp_arg(&args.src);
    let (dst_c, dst_p) = split_cp_arg(&args.dest);
    let res = match (src_c, dst_c) {
        (Some(_), Some(_)) => Err("copying between containers is not supported".to_string()),
        (None, None) => Err("must specify at least one container source".to_string()),
        (Some(c), None) => copy_from(ctx, c, src_p, dst_p, args.archive, args.follow_link).await,
        (None, Some(c)) => copy_to(ctx, src_p, c, dst_p, args.archive, args.follow_link).await,
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprint_err(&e);
            1
        }
    }
}

/// Opens CopyFrom and reads the stat of the path.
async fn stat_in_container(
    ctx: &Ctx,
    container: &str,
    path: &str,
) -> Result<
    Option<(
        PathStat,
        tonic::Streaming<berth_proto::gateway::v1::CopyFromResponse>,
    )>,
    String,
> {
    let req = ctx.req(CopyFromRequest {
        id: container.to_string(),
        path: path.to_string(),
    });
    let mut stream = match client(ctx).copy_from(req).await {
        Ok(s) => s.into_inner(),
        Err(s)
            if s.code() == tonic::Code::NotFound && s.message().starts_with("Could not find") =>
        {
            return Ok(None)
        }
        Err(s) => return Err(ctx.describe(&s)),
    };
    match stream.message().await {
        Ok(Some(m)) => match m.payload {
            Some(copy_from_response::Payload::Stat(st)) => Ok(Some((st, stream))),
            _ => Err("Error: the daemon sent no file information".into()),
        },
        Ok(None) => Err("Error: the daemon sent no file information".into()),
        Err(s) => Err(ctx.describe(&s)),
    }
}

/// A blocking `Read` over chunks sent from the async side.
struct ChanReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// How archive entries map to host paths.
enum Mapping {
    /// Entry paths as they are, under `dir`.
    Into(PathBuf),
    /// The first component replaced by `name`, under `dir`.
    Rename(PathBuf, String),
    /// The first component dropped, under `dir`.
    Strip(PathBuf),
}

fn plain(p: &Path) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return Err(format!("invalid path in archive: {}", p.display())),
        }
    }
    Ok(out)
}

fn extract_host<R: Read>(input: R, map: &Mapping, keep_owner: bool) -> Result<(), String> {
    let (base, _) = match map {
        Mapping::Into(d) | Mapping::Strip(d) | Mapping::Rename(d, _) => (d.clone(), ()),
    };
    let base_real = base
        .canonicalize()
        .map_err(|e| format!("{}: {e}", base.display()))?;
    let mut ar = tar::Archive::new(input);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(keep_owner);
    ar.set_overwrite(true);
    for entry in ar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        // The archive's top entry is "." for a directory's contents.
        let mut comps = plain(&path)?;
        let top_is_dot = path.components().next() == Some(Component::CurDir);
        let rel: Vec<String> = match map {
            Mapping::Into(_) => comps,
            Mapping::Strip(_) if top_is_dot => comps,
            Mapping::Strip(_) => {
                if comps.is_empty() {
                    continue;
                }
                comps.remove(0);
                comps
            }
            Mapping::Rename(_, name) => {
                if !top_is_dot && !comps.is_empty() {
                    comps.remove(0);
                }
                std::iter::once(name.clone()).chain(comps).collect()
            }
        };
        if rel.is_empty() {
            continue;
        }
        let target: PathBuf = rel.iter().fold(base.clone(), |p, c| p.join(c));
        let parent = target.parent().unwrap_or(&base).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let parent_real = parent
            .canonicalize()
            .map_err(|e| format!("{}: {e}", parent.display()))?;
        if !parent_real.starts_with(&base_real) {
            return Err(format!(
                "refusing to write {} outside {}",
                target.display(),
                base.display()
            ));
        }
        if let Ok(md) = std::fs::symlink_metadata(&target) {
            if !md.is_dir() || !entry.header().entry_type().is_dir() {
                if md.is_dir() {
                    let _ = std::fs::remove_dir(&target);
                } else {
                    let _ = std::fs::remove_file(&target);
                }
            }
        }
        entry
            .unpack(&target)
            .map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}

async fn copy_from(
    ctx: &Ctx,
    container: &str,
    src: &str,
    dest: &str,
    keep_owner: bool,
    follow_link: bool,
) -> Result<(), String> {
    let missing = |p: &str| {
        format!("Error response from daemon: Could not find the file {p} in container {container}")
    };
    let Some((mut stat, mut stream)) = stat_in_container(ctx, container, src).await? else {
        return Err(missing(src));
    };
    // -L: copy what the link points to, under the link's name.
    let link_name = Path::new(src)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let mut followed = false;
    let mut path = src.to_string();
    let mut hops = 0;
    while follow_link && stat.mode & libc::S_IFMT == libc::S_IFLNK {
        hops += 1;
        if hops > 40 {
            return Err(format!("too many levels of symbolic links: {src}"));
        }
        let target = stat.link_target.clone();
        path = if target.starts_with('/') {
            target
        } else {
            let parent = Path::new(&path).parent().unwrap_or(Path::new("/"));
            parent.join(&target).to_string_lossy().into_owned()
        };
        let Some((st, s2)) = stat_in_container(ctx, container, &path).await? else {
            return Err(missing(&path));
        };
        stat = st;
        stream = s2;
        followed = true;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    let worker: std::thread::JoinHandle<Result<(), String>> = if dest == "-" {
        std::thread::spawn(move || {
            let mut out = std::io::stdout().lock();
            for chunk in rx {
                out.write_all(&chunk).map_err(|e| e.to_string())?;
            }
            out.flush().map_err(|e| e.to_string())
        })
    } else {
        let dest_path = PathBuf::from(dest);
        let src_is_dir = is_dir_mode(stat.mode);
        let contents = src.ends_with("/.") || stat.name == ".";
        let map = match std::fs::metadata(&dest_path) {
            Ok(md) if md.is_dir() => match (&link_name, contents) {
                (_, true) => Mapping::Strip(dest_path),
                (Some(n), false) if followed => Mapping::Rename(dest_path, n.clone()),
                _ => Mapping::Into(dest_path),
            },
            Ok(_) if src_is_dir => {
                return Err(format!(
                    "cannot overwrite non-directory \"{dest}\" with directory \"{container}:{src}\""
                ))
            }
            Ok(_) => rename_map(&dest_path)?,
            Err(_) if dest.ends_with('/') => {
                return Err(format!("destination directory \"{dest}\" must exist"))
            }
            Err(_) if src_is_dir => {
                let parent = dest_path.parent().filter(|p| !p.as_os_str().is_empty());
                if let Some(p) = parent {
                    if !p.is_dir() {
                        return Err(format!("lstat {}: no such file or directory", p.display()));
                    }
                }
                rename_map(&dest_path)?
            }
            Err(_) => rename_map(&dest_path)?,
        };
        std::thread::spawn(move || {
            extract_host(
                ChanReader {
                    rx,
                    cur: Vec::new(),
                    pos: 0,
                },
                &map,
                keep_owner,
            )
        })
    };
    let mut failure = None;
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                if let Some(copy_from_response::Payload::Data(d)) = m.payload {
                    if tx.send(d).is_err() {
                        break;
                    }
                }
            }
            Ok(None) => break,
            Err(s) => {
                failure = Some(ctx.describe(&s));
                break;
            }
        }
    }
    drop(tx);
    let res = worker
        .join()
        .map_err(|_| "the copy thread failed".to_string())?;
    if let Some(f) = failure {
        return Err(f);
    }
    res
}

fn rename_map(dest: &Path) -> Result<Mapping, String> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("invalid destination {}", dest.display()))?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(Mapping::Rename(parent, name))
}

/// A `Write` that sends chunks to the async side.
struct ChanWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf);
        self.tx
            .blocking_send(data)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload stopped"))
    }
}

/// Archives host `src` as `name` (its contents when `name` is None).
fn archive_host(src: &Path, name: Option<&str>, w: ChanWriter) -> std::io::Result<()> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    let md = std::fs::symlink_metadata(src)?;
    match name {
        Some(n) if md.is_dir() => b.append_dir_all(n, src)?,
        Some(n) => b.append_path_with_name(src, n)?,
        None => {
            let mut names: Vec<_> = std::fs::read_dir(src)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()?;
            names.sort();
            for n in names {
                let p = src.join(&n);
                if std::fs::symlink_metadata(&p)?.is_dir() {
                    b.append_dir_all(&n, &p)?;
                } else {
                    b.append_path_with_name(&p, &n)?;
                }
            }
        }
    }
    let mut w = b.into_inner()?;
    w.flush()
}

async fn copy_to(
    ctx: &Ctx,
    src: &str,
    container: &str,
    dest: &str,
    keep_owner: bool,
    follow_link: bool,
) -> Result<(), String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let (dir, worker) = if src == "-" {
        match stat_in_container(ctx, container, dest).await? {
            Some((st, _)) if is_dir_mode(st.mode) => {}
            Some(_) => return Err(format!("destination \"{container}:{dest}\" must be a directory")),
            None => {
                return Err(format!(
                    "Error response from daemon: Could not find the file {dest} in container {container}"
                ))
            }
        }
        let worker = std::thread::spawn(move || -> std::io::Result<()> {
            let mut input = std::io::stdin().lock();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = input.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                if tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return Ok(());
                }
            }
        });
        (dest.to_string(), worker)
    } else {
        let given = PathBuf::from(src);
        let src_md = std::fs::symlink_metadata(&given)
            .map_err(|_| format!("lstat {src}: no such file or directory"))?;
        // -L: archive what the link points to (under the link's name).
        let (src_path, src_md) = if follow_link && src_md.file_type().is_symlink() {
            let real = given.canonicalize().map_err(|e| format!("{src}: {e}"))?;
            let md = std::fs::metadata(&real).map_err(|e| format!("{src}: {e}"))?;
            (real, md)
        } else {
            (given.clone(), src_md)
        };
        let contents = src.ends_with("/.");
        let base = given
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ".".into());
        let dest_stat = stat_in_container(ctx, container, dest)
            .await?
            .map(|(s, _)| s);
        let (dir, name) = match dest_stat {
            Some(st) if is_dir_mode(st.mode) => {
                (dest.to_string(), if contents { None } else { Some(base) })
            }
            Some(_) if src_md.is_dir() => {
                return Err(format!(
                    "cannot overwrite non-directory \"{container}:{dest}\" with directory \"{src}\""
                ))
            }
            _ => {
                if dest.ends_with('/') && dest_stat.is_none() {
                    return Err(format!(
                        "Error response from daemon: Could not find the file {dest} in container {container}"
                    ));
                }
                let p = Path::new(dest);
                let parent = p
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "/".into());
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| format!("invalid destination {dest}"))?;
                (parent, Some(name))
            }
        };
        let worker = std::thread::spawn(move || {
            archive_host(
                &src_path,
                name.as_deref(),
                ChanWriter {
                    tx,
                    buf: Vec::new(),
                },
            )
        });
        (dir, worker)
    };
    let header = CopyToRequest {
        payload: Some(copy_to_request::Payload::Header(CopyToHeader {
            id: container.to_string(),
            path: dir,
            no_overwrite_dir_non_dir: true,
            copy_uid_gid: keep_owner,
        })),
    };
    let (btx, brx) = tokio::sync::mpsc::channel::<CopyToRequest>(8);
    tokio::spawn(async move {
        if btx.send(header).await.is_err() {
            return;
        }
        while let Some(data) = rx.recv().await {
            let msg = CopyToRequest {
                payload: Some(copy_to_request::Payload::Data(data)),
            };
            if btx.send(msg).await.is_err() {
                return;
            }
        }
    });
    let body = tokio_stream::wrappers::ReceiverStream::new(brx);
    let res = client(ctx).copy_to(ctx.req(body)).await;
    let local = worker
        .join()
        .map_err(|_| "the archive thread failed".to_string())?;
    res.map_err(|s| ctx.describe(&s))?;
    local.map_err(|e| e.to_string())
}

/// `berth diff`.
pub async fn diff(ctx: &Ctx, args: DiffArgs) -> i32 {
    let req = ctx.req(ContainerRef {
        id: args.container.clone(),
    });
    match client(ctx).diff(req).await {
        Ok(r) => {
            for c in r.into_inner().changes {
                let k = match c.kind {
                    0 => "C",
                    1 => "A",
                    _ => "D",
                };
                crate::outln(&format!("{k} {}", c.path));
            }
            0
        }
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            1
        }
    }
}

/// `berth export`.
pub async fn export(ctx: &Ctx, args: ExportArgs) -> i32 {
    use std::io::IsTerminal;
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprint_err(&format!("failed to export container: {p}: {e}"));
                return 1;
            }
        },
        None => {
            if std::io::stdout().is_terminal() {
                eprint_err("cowardly refusing to save to a terminal. Use the -o flag or redirect");
                return 1;
            }
            Box::new(std::io::stdout())
        }
    };
    let req = ctx.req(ContainerRef {
        id: args.container.clone(),
    });
    let mut stream = match client(ctx).export(req).await {
        Ok(s) => s.into_inner(),
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(c)) => {
                if let Err(e) = out.write_all(&c.data) {
                    eprint_err(&format!("failed to export container: {e}"));
                    return 1;
                }
            }
            Ok(None) => break,
            Err(s) => {
                eprint_err(&ctx.describe(&s));
                return 1;
            }
        }
    }
    match out.flush() {
        Ok(()) => 0,
        Err(e) => {
            eprint_err(&format!("failed to export container: {e}"));
            1
        }
    }
}

/// `berth commit`.
pub async fn commit(ctx: &Ctx, args: CommitArgs) -> i32 {
    let req = ctx.req(CommitRequest {
        id: args.container.clone(),
        reference: args.reference.clone().unwrap_or_default(),
        comment: args.message.clone().unwrap_or_default(),
        author: args.author.clone().unwrap_or_default(),
        changes: args.change.clone(),
        pause: args.pause,
    });
    match client(ctx).commit(req).await {
        Ok(r) => {
            crate::outln(&r.into_inner().id);
            0
        }
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_args() {
        assert_eq!(split_cp_arg("c1:/etc"), (Some("c1"), "/etc"));
        assert_eq!(split_cp_arg("/abs:x"), (None, "/abs:x"));
        assert_eq!(split_cp_arg("./a:b"), (None, "./a:b"));
        assert_eq!(split_cp_arg("file"), (None, "file"));
        assert_eq!(split_cp_arg("-"), (None, "-"));
    }
}
