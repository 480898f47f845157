//! Interactive I/O and processes of running containers: `run -i/-t`,
//! `start -a -i`, `attach`, `exec`, `pause`, `unpause`, `top`, `stats`.

use std::io::Write;
use std::os::fd::AsRawFd;

use berth_proto::gateway::v1::container_processes_client::ContainerProcessesClient;
use berth_proto::gateway::v1::{
    attach_io_request, attach_io_response, exec_request, exec_response, AttachIoRequest,
    AttachIoStart, ContainerRef, ContainerStats, ExecRequest, ExecStart, ListContainersRequest,
    LogEntry, ResizeRequest, StatsRequest, Stream, TopRequest,
};
use clap::Args;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::ctx::{exit_code_of, is_connect_error, Ctx};
use crate::eprint_err;
use crate::render::{go_fmt_g, human_size, short_id};

fn client(ctx: &Ctx) -> ContainerProcessesClient<Channel> {
    ctx.processes()
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys", value_name = "string")]
    pub detach_keys: Option<String>,
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// Proxy all received signals to the process
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys", value_name = "string")]
    pub detach_keys: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env", value_name = "list")]
    pub env: Vec<String>,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give extended privileges to the command
    #[arg(long)]
    pub privileged: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short = 'u', long = "user", value_name = "string")]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir", value_name = "string")]
    pub workdir: Option<String>,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// COMMAND [ARG...]
    #[arg(
        value_name = "COMMAND",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// [ps OPTIONS]
    #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    #[arg(value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

/// The local terminal in raw mode; restored on drop.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enable() -> Option<RawTerminal> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        // Keep output post-processing so "\n" from our own messages works.
        raw.output_flags |= nix::sys::termios::OutputFlags::OPOST;
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty has no preconditions.
    unsafe { libc::isatty(fd) == 1 }
}

/// Rows and columns of our terminal (stdout, else stdin).
fn term_size() -> Option<(u32, u32)> {
    for fd in [std::io::stdout().as_raw_fd(), std::io::stdin().as_raw_fd()] {
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ fills a winsize.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some((ws.ws_row as u32, ws.ws_col as u32));
        }
    }
    None
}

enum Input {
    Data(Vec<u8>),
    Eof,
    Resize(u32, u32),
}

/// Reads our stdin on a thread (blocking reads) and watches SIGWINCH.
fn spawn_input(stdin: bool, tty: bool) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(64);
    if stdin {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                // SAFETY: read into a valid buffer.
                let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    if tx
                        .blocking_send(Input::Data(buf[..n as usize].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                } else if n == 0
                    || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
                {
                    let _ = tx.blocking_send(Input::Eof);
                    return;
                }
            }
        });
    }
    if tty {
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut winch) = signal(SignalKind::window_change()) else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((r, c)) = term_size() {
                    if tx.send(Input::Resize(r, c)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    rx
}

fn write_output(entry: &LogEntry) {
    let write = |w: &mut dyn Write| {
        let _ = w.write_all(&entry.data);
        let _ = w.flush();
    };
    if entry.stream == Stream::Stderr as i32 {
        write(&mut std::io::stderr().lock());
    } else {
        write(&mut std::io::stdout().lock());
    }
}

/// What an interactive session does.
pub struct Session {
    pub id: String,
    pub stdin: bool,
    pub tty: bool,
    pub detach_keys: String,
    /// Start the container after attaching (run, start -a).
    pub start: bool,
    /// Errors as `berth: ...`/125 (run) rather than plain/1.
    pub run_style: bool,
}

/// Attaches (stdin, output, resizes, detach keys), optionally starts the
/// container, and returns its exit code (0 when detached).
pub async fn session(ctx: &Ctx, s: Session) -> i32 {
    let fail = |st: &tonic::Status| {
        if s.run_style {
            eprint_err(&format!(
                "berth: {}.",
                ctx.describe(st).trim_end_matches('.')
            ));
            exit_code_of(st).unwrap_or(125)
        } else {
            eprint_err(&ctx.describe(st));
            exit_code_of(st).unwrap_or(1)
        }
    };
    if s.stdin && s.tty && !is_tty(0) {
        eprint_err("the input device is not a TTY");
        return 1;
    }
    let (req_tx, req_rx) = mpsc::channel::<AttachIoRequest>(64);
    let msg = |p| AttachIoRequest { payload: Some(p) };
    let _ = req_tx
        .send(msg(attach_io_request::Payload::Start(AttachIoStart {
            id: s.id.clone(),
            stdin: s.stdin,
            stdout: true,
            stderr: true,
            detach_keys: s.detach_keys.clone(),
        })))
        .await;
    let mut stream = match client(ctx)
        .attach(ctx.req(ReceiverStream::new(req_rx)))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(st) => return fail(&st),
    };
    if s.start {
        if let Err(st) = ctx
            .containers()
            .start(ctx.req(ContainerRef { id: s.id.clone() }))
            .await
        {
            return fail(&st);
        }
    }
    let raw = if s.tty && s.stdin && is_tty(0) {
        RawTerminal::enable()
    } else {
        None
    };
    if s.tty {
        if let Some((rows, cols)) = term_size() {
            let _ = req_tx
                .send(msg(attach_io_request::Payload::Resize(ResizeRequest {
                    id: s.id.clone(),
                    exec_id: String::new(),
                    rows,
                    cols,
                })))
                .await;
        }
    }
    let proxy = if !s.tty {
        crate::cmd::containers::spawn_signal_proxy(ctx.clone(), s.id.clone())
    } else {
        Vec::new()
    };
    let mut input = spawn_input(s.stdin, s.tty);
    let id = s.id.clone();
    let forward = tokio::spawn(async move {
        while let Some(i) = input.recv().await {
            let p = match i {
                Input::Data(d) => attach_io_request::Payload::Stdin(d),
                Input::Eof => attach_io_request::Payload::CloseStdin(true),
                Input::Resize(rows, cols) => attach_io_request::Payload::Resize(ResizeRequest {
                    id: id.clone(),
                    exec_id: String::new(),
                    rows,
                    cols,
                }),
            };
            let eof = matches!(p, attach_io_request::Payload::CloseStdin(_));
            if req_tx.send(msg(p)).await.is_err() {
                return;
            }
            if eof {
                // Keep the request stream open: closing it would end the
                // attach before the output is through.
                std::future::pending::<()>().await;
            }
        }
        std::future::pending::<()>().await;
    });
    let code = loop {
        match stream.message().await {
            Ok(Some(m)) => match m.payload {
                Some(attach_io_response::Payload::Output(e)) => write_output(&e),
                Some(attach_io_response::Payload::Exit(st)) => {
                    if !st.error.is_empty() {
                        eprint_err(&st.error);
                    }
                    break st.status_code as i32;
                }
                Some(attach_io_response::Payload::Detached(_)) => break 0,
                None => {}
            },
            Ok(None) => {
                let w = ctx
                    .containers()
                    .wait(ctx.req(berth_proto::gateway::v1::WaitContainerRequest {
                        id: s.id.clone(),
                        condition: String::new(),
                    }))
                    .await;
                match w {
                    Ok(r) => break r.into_inner().status_code as i32,
                    Err(st) => break fail(&st),
                }
            }
            Err(st) => break fail(&st),
        }
    };
    forward.abort();
    crate::cmd::containers::stop_signal_proxy(proxy).await;
    drop(raw);
    code
}

/// `berth attach`.
pub async fn attach(ctx: &Ctx, args: AttachArgs) -> i32 {
    let doc = match ctx
        .containers()
        .inspect(ctx.req(ContainerRef {
            id: args.container.clone(),
        }))
        .await
    {
        Ok(r) => r.into_inner().json,
        Err(st) => {
            eprint_err(&ctx.describe(&st));
            return 1;
        }
    };
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap_or_default();
    if v["State"]["Paused"] == true {
        eprint_err("You cannot attach to a paused container, unpause it first");
        return 1;
    }
    if v["State"]["Running"] != true {
        eprint_err("You cannot attach to a stopped container, start it first");
        return 1;
    }
    let tty = v["Config"]["Tty"] == true;
    let open_stdin = v["Config"]["OpenStdin"] == true;
    let _ = args.sig_proxy;
    session(
        ctx,
        Session {
            id: v["Id"].as_str().unwrap_or(&args.container).to_string(),
            stdin: open_stdin && !args.no_stdin,
            tty,
            detach_keys: args.detach_keys.unwrap_or_default(),
            start: false,
            run_style: false,
        },
    )
    .await
}

/// `berth exec`.
pub async fn exec(ctx: &Ctx, args: ExecArgs) -> i32 {
    let tty = args.tty;
    let stdin = args.interactive;
    if stdin && tty && !args.detach && !is_tty(0) {
        eprint_err("the input device is not a TTY");
        return 1;
    }
    let (rows, cols) = if tty {
        term_size().unwrap_or((0, 0))
    } else {
        (0, 0)
    };
    let (req_tx, req_rx) = mpsc::channel::<ExecRequest>(64);
    let msg = |p| ExecRequest { payload: Some(p) };
    let _ = req_tx
        .send(msg(exec_request::Payload::Start(ExecStart {
            id: args.container.clone(),
            cmd: args.command.clone(),
            env: args.env.clone(),
            working_dir: args.workdir.clone().unwrap_or_default(),
            user: args.user.clone().unwrap_or_default(),
            tty,
            stdin: stdin && !args.detach,
            detach: args.detach,
            privileged: args.privileged,
            rows,
            cols,
            detach_keys: args.detach_keys.clone().unwrap_or_default(),
        })))
        .await;
    let mut stream = match client(ctx).exec(ctx.req(ReceiverStream::new(req_rx))).await {
        Ok(r) => r.into_inner(),
        Err(st) => {
            eprint_err(&ctx.describe(&st));
            return if is_connect_error(&st) {
                1
            } else {
                exit_code_of(&st).unwrap_or(1)
            };
        }
    };
    let raw = if tty && stdin && !args.detach && is_tty(0) {
        RawTerminal::enable()
    } else {
        None
    };
    let mut input = spawn_input(stdin && !args.detach, tty && !args.detach);
    let forward = tokio::spawn(async move {
        while let Some(i) = input.recv().await {
            let p = match i {
                Input::Data(d) => exec_request::Payload::Stdin(d),
                Input::Eof => exec_request::Payload::CloseStdin(true),
                Input::Resize(rows, cols) => exec_request::Payload::Resize(ResizeRequest {
                    id: String::new(),
                    exec_id: String::new(),
                    rows,
                    cols,
                }),
            };
            if req_tx.send(msg(p)).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    });
    let code = loop {
        match stream.message().await {
            Ok(Some(m)) => match m.payload {
                Some(exec_response::Payload::ExecId(_)) => {}
                Some(exec_response::Payload::Output(e)) => write_output(&e),
                Some(exec_response::Payload::Exit(st)) => {
                    if !st.error.is_empty() {
                        eprint_err(&format!(
                            "OCI runtime exec failed: exec failed: unable to start container process: {}: unknown",
                            st.error
                        ));
                    }
                    break st.status_code as i32;
                }
                None => {}
            },
            Ok(None) => break 0, // detached
            Err(st) => {
                eprint_err(&ctx.describe(&st));
                break 1;
            }
        }
    };
    forward.abort();
    drop(raw);
    code
}

async fn each(ctx: &Ctx, containers: &[String], pause: bool) -> i32 {
    let mut failed = false;
    for c in containers {
        let req = ctx.req(ContainerRef { id: c.clone() });
        let r = if pause {
            client(ctx).pause(req).await
        } else {
            client(ctx).unpause(req).await
        };
        match r {
            Ok(_) => crate::outln(c),
            Err(st) => {
                eprint_err(&ctx.describe(&st));
                failed = true;
                if is_connect_error(&st) {
                    return 1;
                }
            }
        }
    }
    i32::from(failed)
}

/// `berth pause`.
pub async fn pause(ctx: &Ctx, args: PauseArgs) -> i32 {
    each(ctx, &args.containers, true).await
}

/// `berth unpause`.
pub async fn unpause(ctx: &Ctx, args: PauseArgs) -> i32 {
    each(ctx, &args.containers, false).await
}

/// Go's tabwriter as `docker top` configures it (minwidth 20, padding 3).
fn top_table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                widths[i] = widths[i].max(cell.chars().count() + 3).max(20);
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                out.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

/// `berth top`.
pub async fn top(ctx: &Ctx, args: TopArgs) -> i32 {
    let r = client(ctx)
        .top(ctx.req(TopRequest {
            id: args.container.clone(),
            ps_args: args.ps_args.join(" "),
        }))
        .await;
    match r {
        Ok(r) => {
            let r = r.into_inner();
            let mut rows = vec![r.titles];
            rows.extend(r.processes.into_iter().map(|p| p.values));
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(top_table(&rows).as_bytes());
            0
        }
        Err(st) => {
            eprint_err(&ctx.describe(&st));
            1
        }
    }
}

/// go-units `BytesSize`: binary units with 4 significant digits
/// ("1.234MiB", "7.772GiB", "0B").
pub fn bytes_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut size = bytes as f64;
    let mut i = 0;
    while size >= 1024.0 && i < UNITS.len() - 1 {
        size /= 1024.0;
        i += 1;
    }
    format!("{}{}", go_fmt_g(size, 4), UNITS[i])
}

/// CPU % between two samples, as docker computes it.
pub fn cpu_percent(prev: &ContainerStats, cur: &ContainerStats) -> f64 {
    let cpu = cur.cpu_total_ns.saturating_sub(prev.cpu_total_ns) as f64;
    let sys = cur.system_cpu_ns.saturating_sub(prev.system_cpu_ns) as f64;
    if cpu > 0.0 && sys > 0.0 {
        cpu / sys * cur.online_cpus.max(1) as f64 * 100.0
    } else {
        0.0
    }
}

/// One `docker stats` row as template fields.
pub fn stats_row(
    prev: Option<&ContainerStats>,
    s: &ContainerStats,
    no_trunc: bool,
) -> serde_json::Value {
    let cpu = prev.map_or(0.0, |p| cpu_percent(p, s));
    let used = s.memory_usage.saturating_sub(s.memory_cache);
    let mem_pct = if s.memory_limit > 0 {
        used as f64 / s.memory_limit as f64 * 100.0
    } else {
        0.0
    };
    let id = if no_trunc {
        s.id.clone()
    } else {
        short_id(&s.id)
    };
    serde_json::json!({
        "Container": id,
        "ID": id,
        "Name": s.name,
        "CPUPerc": format!("{cpu:.2}%"),
        "MemUsage": format!("{} / {}", bytes_size(used), bytes_size(s.memory_limit)),
        "MemPerc": format!("{mem_pct:.2}%"),
        "NetIO": format!("{} / {}", human_size(s.net_rx_bytes as i64), human_size(s.net_tx_bytes as i64)),
        "BlockIO": format!("{} / {}", human_size(s.blkio_read_bytes as i64), human_size(s.blkio_write_bytes as i64)),
        "PIDs": s.pids.to_string(),
    })
}

const STATS_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

fn stats_header() -> serde_json::Value {
    serde_json::json!({
        "Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %",
        "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O",
        "BlockIO": "BLOCK I/O", "PIDs": "PIDS",
    })
}

/// `berth stats`.
pub async fn stats(ctx: &Ctx, args: StatsArgs) -> i32 {
    let names = if args.containers.is_empty() {
        match ctx
            .containers()
            .list(ctx.req(ListContainersRequest { all: args.all }))
            .await
        {
            Ok(r) => r
                .into_inner()
                .containers
                .into_iter()
                .map(|c| c.id)
                .collect(),
            Err(st) => {
                eprint_err(&ctx.describe(&st));
                return 1;
            }
        }
    } else {
        args.containers.clone()
    };
    let mut streams = Vec::new();
    for n in &names {
        match client(ctx)
            .stats(ctx.req(StatsRequest {
                id: n.clone(),
                stream: true,
            }))
            .await
        {
            Ok(r) => streams.push(r.into_inner()),
            Err(st) => {
                eprint_err(&ctx.describe(&st));
                return 1;
            }
        }
    }
    let mut prev: Vec<Option<ContainerStats>> = vec![None; streams.len()];
    let mut first = true;
    loop {
        let mut rows = Vec::new();
        for (i, s) in streams.iter_mut().enumerate() {
            // Two samples are needed for a CPU %; take the first one early.
            if prev[i].is_none() {
                if let Ok(Some(m)) = s.message().await {
                    prev[i] = Some(m);
                }
            }
            match s.message().await {
                Ok(Some(m)) => {
                    rows.push(stats_row(prev[i].as_ref(), &m, args.no_trunc));
                    prev[i] = Some(m);
                }
                _ => {
                    if let Some(p) = &prev[i] {
                        rows.push(stats_row(None, p, args.no_trunc));
                    }
                }
            }
        }
        let format = match crate::output_format(args.format.as_deref(), false) {
            Ok(f) => f,
            Err(e) => {
                eprint_err(&e);
                return 1;
            }
        };
        if !args.no_stream {
            // Redraw in place, like docker.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(if first { b"\x1b[2J\x1b[H" } else { b"\x1b[H" });
            let _ = out.flush();
        }
        first = false;
        let code = crate::print_rows(format, STATS_TABLE, "{{.ID}}", &stats_header(), &rows);
        if code != 0 || args.no_stream {
            return code;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(bytes_size(0), "0B");
        assert_eq!(bytes_size(656), "656B");
        assert_eq!(bytes_size(1_258_291), "1.2MiB");
        assert_eq!(bytes_size(8_267_812_864), "7.7GiB");
        assert_eq!(bytes_size(1_294_336), "1.234MiB");
        assert_eq!(human_size(656), "656B");
        assert_eq!(human_size(1234), "1.23kB");
    }

    #[test]
    fn cpu_and_rows() {
        let a = ContainerStats {
            cpu_total_ns: 1_000,
            system_cpu_ns: 10_000,
            online_cpus: 2,
            ..Default::default()
        };
        let b = ContainerStats {
            id: "0123456789abcdef".into(),
            name: "web".into(),
            cpu_total_ns: 2_000,
            system_cpu_ns: 20_000,
            online_cpus: 2,
            memory_usage: 2 << 20,
            memory_cache: 1 << 20,
            memory_limit: 1 << 30,
            net_rx_bytes: 656,
            ..Default::default()
        };
        assert!((cpu_percent(&a, &b) - 20.0).abs() < 1e-9);
        let r = stats_row(Some(&a), &b, false);
        assert_eq!(r["ID"], "0123456789ab");
        assert_eq!(r["CPUPerc"], "20.00%");
        assert_eq!(r["MemUsage"], "1MiB / 1GiB");
        assert_eq!(r["MemPerc"], "0.10%");
        assert_eq!(r["NetIO"], "656B / 0B");
        assert_eq!(stats_row(None, &b, false)["CPUPerc"], "0.00%");
    }

    #[test]
    fn top_columns() {
        let t = top_table(&[
            vec!["UID".into(), "PID".into(), "CMD".into()],
            vec!["root".into(), "42".into(), "sleep 100".into()],
        ]);
        assert_eq!(
            t,
            format!(
                "UID{}PID{}CMD\nroot{}42{}sleep 100\n",
                " ".repeat(17),
                " ".repeat(17),
                " ".repeat(16),
                " ".repeat(18)
            )
        );
    }
}
