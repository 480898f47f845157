//! berth-shim: one small single-threaded process per container.
//!
//! `berth-shim --id ID --bundle DIR [--log FILE [--log-max-size BYTES [--log-max-files N]]] [--stdin]`
//! `berth-shim exec --pid PID --bundle DIR --process JSON` (see `exec.rs`)
//!
//! The launcher forks a daemon (new session, subreaper, stdio on /dev/null)
//! that creates the container and stays its parent. The launcher prints one
//! JSON line: `{"pid":N}` or `{"error":"...","exit_code":N}` and exits 0.
//! When the init exits the daemon drains its output into the json-file log,
//! removes the cgroup and writes `DIR/exit` atomically.
//!
//! With `--stdin` the init gets a stdin pipe; with `process.terminal` a pty
//! (opened inside the container, master passed back). Either way the daemon
//! listens on `DIR/attach.sock` for framed input (stdin bytes, close stdin,
//! resize; see `berth_runtime::frame`). Output always goes to the log.

mod exec;

use berth_runtime::cgroups::Cgroup;
use berth_runtime::container::{create_with, Io};
use berth_runtime::error::EXIT_SETUP_FAILED;
use berth_runtime::frame::{self, Decoder};
use berth_runtime::logs::{LineSplitter, LogWriter};
use berth_runtime::status::exit_status_from_raw;
use berth_runtime::sys::{pipe_cloexec, read_to_end, write_all};
use berth_runtime::{time, Bundle, Error};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Args {
    id: String,
    bundle: PathBuf,
    log: Option<PathBuf>,
    /// Rotate the log before it grows past this many bytes.
    log_max_size: Option<u64>,
    /// Log files kept, the current one included.
    log_max_files: u32,
    stdin: bool,
}

#[derive(Serialize)]
struct Started {
    pid: i32,
}

#[derive(Serialize)]
struct Failed<'a> {
    error: &'a str,
    exit_code: i32,
}

#[derive(Serialize)]
struct ExitFile<'a> {
    exit_status: i32,
    exited_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    /// The kernel OOM-killed a process of the container during this run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    oom_killed: bool,
    /// How many (the memory cgroup's `oom_kill` counter).
    #[serde(skip_serializing_if = "is_zero")]
    oom_kills: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn parse_args() -> Result<Args, String> {
    parse_args_from(std::env::args().skip(1))
}

fn parse_args_from(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut id = None;
    let mut bundle = None;
    let mut log = None;
    let mut log_max_size = None;
    let mut log_max_files = 1;
    let mut stdin = false;
    while let Some(a) = it.next() {
        if a == "--stdin" {
            stdin = true;
            continue;
        }
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{key} needs a value"))
        };
        match key.as_str() {
            "--id" => id = Some(value()?),
            "--bundle" => bundle = Some(PathBuf::from(value()?)),
            "--log" => log = Some(PathBuf::from(value()?)),
            "--log-max-size" => {
                let v = value()?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("--log-max-size: invalid size {v:?}"))?;
                log_max_size = (n > 0).then_some(n);
            }
            "--log-max-files" => {
                let v = value()?;
                log_max_files = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or(format!("--log-max-files: invalid count {v:?}"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let cwd = std::env::current_dir().map_err(|e| format!("getcwd: {e}"))?;
    Ok(Args {
        id: id.ok_or("--id is required")?,
        bundle: cwd.join(bundle.ok_or("--bundle is required")?),
        log: log.map(|l| cwd.join(l)),
        log_max_size,
        log_max_files,
        stdin,
    })
}

fn failed_line(msg: &str, code: i32) -> String {
    serde_json::to_string(&Failed {
        error: msg,
        exit_code: code,
    })
    .unwrap_or_else(|_| format!("{{\"error\":\"shim error\",\"exit_code\":{code}}}"))
}

fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.trim_end().as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("exec") {
        std::process::exit(exec::main(std::env::args().skip(2)));
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            print_line(&failed_line(
                &format!("usage: berth-shim --id ID --bundle DIR [--log FILE [--log-max-size BYTES] [--log-max-files N]] [--stdin]: {e}"),
                EXIT_SETUP_FAILED,
            ));
            std::process::exit(0);
        }
    };
    let (rd, wr) = match pipe_cloexec() {
        Ok(p) => p,
        Err(e) => {
            print_line(&failed_line(&e.to_string(), EXIT_SETUP_FAILED));
            std::process::exit(0);
        }
    };
    // SAFETY: single-threaded; the child only runs the daemon and exits.
    match unsafe { libc::fork() } {
        -1 => {
            let e = std::io::Error::last_os_error();
            print_line(&failed_line(
                &format!("fork shim daemon: {e}"),
                EXIT_SETUP_FAILED,
            ));
            std::process::exit(0);
        }
        0 => {
            drop(rd);
            daemon(&args, wr);
            std::process::exit(0);
        }
        _ => {
            drop(wr);
            let report = read_to_end(&rd).unwrap_or_default();
            let line = String::from_utf8_lossy(&report);
            if line.trim().is_empty() {
                print_line(&failed_line(
                    "shim daemon exited before reporting",
                    EXIT_SETUP_FAILED,
                ));
            } else {
                print_line(&line);
            }
            std::process::exit(0);
        }
    }
}

/// Write `DIR/name` via `name.tmp`, fsync and rename.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_exit(dir: &Path, status: i32, error: Option<&str>, oom_kills: u64) {
    let ef = ExitFile {
        exit_status: status,
        exited_at: time::now_rfc3339_nanos(),
        error,
        oom_killed: oom_kills > 0,
        oom_kills,
    };
    if let Ok(data) = serde_json::to_vec(&ef) {
        let _ = write_atomic(dir, "exit", &data);
    }
}

fn redirect_stdio_to_null() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: plain dup2 onto the standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// Listen on `DIR/attach.sock` (bound from inside DIR: the full path may
/// be longer than a socket address allows).
fn listen_attach(dir: &Path) -> Result<UnixListener, Error> {
    let _ = std::fs::remove_file(dir.join("attach.sock"));
    std::env::set_current_dir(dir).map_err(|e| Error::os(format!("chdir {}", dir.display()), e))?;
    let l = UnixListener::bind("attach.sock");
    let _ = std::env::set_current_dir("/");
    let l = l.map_err(|e| Error::os(format!("listen on {}/attach.sock", dir.display()), e))?;
    l.set_nonblocking(true)
        .map_err(|e| Error::os("set attach.sock non-blocking", e))?;
    Ok(l)
}

/// Block SIGCHLD and return a signalfd for it.
fn sigchld_fd() -> Result<OwnedFd, Error> {
    // SAFETY: sigset operations on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) == -1 {
            return Err(Error::last_os("block SIGCHLD"));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd == -1 {
            return Err(Error::last_os("signalfd SIGCHLD"));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Close every inherited descriptor except stdio and `keep`, so that no
/// pipe of the caller (berth-tasks) stays open in the long-lived daemon.
fn close_inherited_fds(keep: RawFd) {
    // SAFETY: close_range on descriptor ranges; `keep` is outside them.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
    }
}

/// Move `fd` above the standard descriptors (it could be 0..2 when the
/// shim was started with closed stdio).
fn above_stdio(fd: OwnedFd) -> OwnedFd {
    if fd.as_raw_fd() > 2 {
        return fd;
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a fresh fd that we then own.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return fd;
    }
    // SAFETY: fresh fd.
    unsafe { OwnedFd::from_raw_fd(new) }
}

fn daemon(args: &Args, report: OwnedFd) {
    let report = above_stdio(report);
    close_inherited_fds(report.as_raw_fd());
    // SAFETY: plain syscalls.
    unsafe { libc::setsid() };
    redirect_stdio_to_null();
    let _ = std::env::set_current_dir("/");
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let dir = &args.bundle;

    let fail = |e: &Error, report: &OwnedFd| {
        let msg = e.to_string();
        write_exit(dir, e.exit_code(), Some(&msg), 0);
        let _ = write_all(
            report.as_raw_fd(),
            failed_line(&msg, e.exit_code()).as_bytes(),
        );
    };

    if let Err(e) = write_atomic(dir, "shim.pid", std::process::id().to_string().as_bytes()) {
        fail(
            &Error::os(format!("write {}/shim.pid", dir.display()), e),
            &report,
        );
        return;
    }
    let sigfd = match sigchld_fd() {
        Ok(fd) => fd,
        Err(e) => return fail(&e, &report),
    };
    let mut log = match &args.log {
        Some(p) => match LogWriter::open(p, args.log_max_size, args.log_max_files) {
            Ok(f) => Some(f),
            Err(e) => return fail(&Error::os(format!("open log {}", p.display()), e), &report),
        },
        None => None,
    };
    let bundle = match Bundle::load(dir) {
        Ok(b) => b,
        Err(e) => return fail(&e, &report),
    };
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let io = Io {
        stdin: args.stdin && !terminal,
        terminal,
    };
    let listener = match listen_attach(dir) {
        Ok(l) => l,
        Err(e) => return fail(&e, &report),
    };
    let container = match create_with(&bundle, &args.id, io) {
        Ok(c) => c,
        Err(e) => return fail(&e, &report),
    };
    drop(bundle);
    let io = ContainerIo {
        stdout: container.stdout.as_ref().map(|f| f.as_raw_fd()),
        stderr: container.stderr.as_ref().map(|f| f.as_raw_fd()),
        stdin: container.stdin.as_ref().map(|f| f.as_raw_fd()),
        console: container.console.as_ref().map(|f| f.as_raw_fd()),
        listener: Some(&listener),
    };
    let pid = container.pid;
    if let Err(e) = write_atomic(dir, "init.pid", pid.to_string().as_bytes()) {
        // The container is running but nobody could find it: tear it down.
        // SAFETY: plain kill on our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let err = Error::os(format!("write {}/init.pid", dir.display()), e);
        let _ = wait_and_collect(&sigfd, pid, &io, None, None);
        if let Some(cg) = &container.cgroup {
            cg.remove();
        }
        return fail(&err, &report);
    }
    let line = serde_json::to_string(&Started { pid }).unwrap_or_default();
    let _ = write_all(report.as_raw_fd(), line.as_bytes());
    drop(report);
    // The shim lives as long as the container: let go of the set-up code's
    // pages and of what the set-up allocated (the spec above all).
    drop_setup_pages();
    // SAFETY: plain glibc call.
    unsafe { libc::malloc_trim(0) };

    let status = wait_and_collect(&sigfd, pid, &io, log.as_mut(), container.cgroup.as_ref());
    drop(listener);
    let _ = std::fs::remove_file(dir.join("attach.sock"));
    // Read before the cgroup goes: kills of the init and of any other
    // process of the container during this run.
    let oom_kills = container
        .cgroup
        .as_ref()
        .and_then(|cg| cg.oom_kills())
        .unwrap_or(0);
    if let Some(cg) = &container.cgroup {
        cg.kill_all();
        cg.remove();
    }
    reap_all();
    write_exit(dir, status, None, oom_kills);
}

/// Unmaps the read-only, unmodified pages of the shim's own binary (code
/// and constants) from this process: most are set-up code that a
/// supervising shim never runs again. They stay in the page cache, shared,
/// and what the supervision loop needs is mapped again on first use.
/// Mappings holding any private (anonymous) page, such as RELRO data
/// written at start-up, are left alone.
fn drop_setup_pages() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut candidate: Option<(usize, usize)> = None;
    let mut found = Vec::new();
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Anonymous:") {
            if let Some(range) = candidate.take() {
                if kb.trim() == "0 kB" {
                    found.push(range);
                }
            }
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue; // a field line, not a mapping header
        };
        let ours = f.nth(3) == exe.to_str();
        let read_only = perms.starts_with('r') && perms.as_bytes().get(1) == Some(&b'-');
        candidate = (ours && read_only).then_some((a, b));
    }
    for (a, b) in found {
        // SAFETY: a read-only mapping of our binary without private pages:
        // dropping its pages loses nothing, they fault in again from the
        // file.
        unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED) };
    }
}

fn reap_all() {
    loop {
        let mut st = 0;
        // SAFETY: plain waitpid.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r <= 0 {
            break;
        }
    }
}

/// Reap children; returns the init's exit status if it exited.
fn reap(init: i32) -> Option<i32> {
    let mut result = None;
    loop {
        let mut st = 0;
        // SAFETY: plain waitpid.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r <= 0 {
            break;
        }
        if r == init {
            if let Some(code) = exit_status_from_raw(st) {
                result = Some(code);
            }
        }
    }
    result
}

/// The init's stdio as seen by the daemon (fds owned by the caller).
struct ContainerIo<'a> {
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
    /// Write end of the init's stdin pipe.
    stdin: Option<RawFd>,
    /// Master of the init's terminal (output is read from it too).
    console: Option<RawFd>,
    listener: Option<&'a UnixListener>,
}

/// One output source of the container.
struct Stream {
    fd: RawFd,
    open: bool,
    raw: bool,
    split: LineSplitter,
}

/// A connected attach client.
struct Client {
    sock: UnixStream,
    decoder: Decoder,
}

/// Most stdin bytes buffered before clients are no longer read.
const MAX_PENDING_INPUT: usize = 256 * 1024;

fn set_nonblock(fd: RawFd) {
    // SAFETY: fcntl flag update on a valid fd.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

fn errno() -> Option<i32> {
    std::io::Error::last_os_error().raw_os_error()
}

/// Poll the output, attach clients and SIGCHLD until the init exited and
/// its output reached EOF. Returns the init's exit status.
fn wait_and_collect(
    sigfd: &OwnedFd,
    init: i32,
    io: &ContainerIo,
    log: Option<&mut LogWriter>,
    cgroup: Option<&Cgroup>,
) -> i32 {
    let mut streams = Vec::new();
    if let Some(fd) = io.console {
        set_nonblock(fd);
        streams.push(Stream {
            fd,
            open: true,
            raw: true,
            split: LineSplitter::new("stdout"),
        });
    }
    for (fd, name) in [(io.stdout, "stdout"), (io.stderr, "stderr")] {
        if let Some(fd) = fd {
            streams.push(Stream {
                fd,
                open: true,
                raw: false,
                split: LineSplitter::new(name),
            });
        }
    }
    // Where stdin bytes go: the terminal or the stdin pipe.
    let mut input: Option<RawFd> = io.console.or(io.stdin);
    if let Some(fd) = io.stdin {
        set_nonblock(fd);
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut close_after_flush = false;
    let mut clients: Vec<Client> = Vec::new();
    let mut status: Option<i32> = None;
    let mut exited_at: Option<Instant> = None;
    let mut killed_rest = false;
    let mut buf = vec![0u8; 64 * 1024];
    let mut log_file = log;
    loop {
        if status.is_some() && streams.iter().all(|s| !s.open) {
            break;
        }
        // After the init exited, anything still holding the pipes is killed
        // (as the kernel does for a pid namespace); give up after a while.
        if let Some(t) = exited_at {
            if !killed_rest {
                if let Some(cg) = cgroup {
                    cg.kill_all();
                }
                killed_rest = true;
            }
            if t.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        let accepting = status.is_none();
        let read_clients = pending.len() < MAX_PENDING_INPUT && accepting;
        let mut pfds = vec![
            libc::pollfd {
                fd: sigfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: match io.listener {
                    Some(l) if accepting => l.as_raw_fd(),
                    _ => -1,
                },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if pending.is_empty() {
                    -1
                } else {
                    input.unwrap_or(-1)
                },
                events: libc::POLLOUT,
                revents: 0,
            },
        ];
        for s in &streams {
            pfds.push(libc::pollfd {
                fd: if s.open { s.fd } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for c in &clients {
            pfds.push(libc::pollfd {
                fd: if read_clients { c.sock.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = if exited_at.is_some() { 200 } else { -1 };
        // SAFETY: valid array of pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if errno() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if pfds[0].revents != 0 {
            let mut info = [0u8; 128];
            // Drain the signalfd (it is non-blocking).
            // SAFETY: valid buffer.
            while unsafe { libc::read(sigfd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) } > 0
            {
            }
        }
        // Always try reaping: SIGCHLDs coalesce.
        if let Some(st) = reap(init) {
            status = Some(st);
            exited_at = Some(Instant::now());
        }
        let nstreams = streams.len();
        let mut gone = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            if pfds[3 + nstreams + i].revents == 0 {
                continue;
            }
            match c.sock.read(&mut buf) {
                Ok(0) => gone.push(i),
                Ok(r) => {
                    c.decoder.push(&buf[..r]);
                    loop {
                        match c.decoder.next_frame() {
                            Ok(Some(f)) => match f.kind {
                                frame::STDIN => pending.extend_from_slice(&f.payload),
                                frame::CLOSE_STDIN => close_after_flush = true,
                                frame::RESIZE => {
                                    if let (Some(m), Some((rows, cols))) =
                                        (io.console, frame::parse_resize(&f.payload))
                                    {
                                        let _ = berth_runtime::pty::set_size(m, rows, cols);
                                    }
                                }
                                _ => {}
                            },
                            Ok(None) => break,
                            Err(_) => {
                                gone.push(i);
                                break;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => gone.push(i),
            }
        }
        for i in gone.into_iter().rev() {
            clients.remove(i);
        }
        // New clients join after the ones polled above (pfds has no slot
        // for them yet).
        if pfds[1].revents != 0 {
            if let Some(l) = io.listener {
                while let Ok((sock, _)) = l.accept() {
                    let _ = sock.set_nonblocking(true);
                    clients.push(Client {
                        sock,
                        decoder: Decoder::new(),
                    });
                }
            }
        }
        if !pending.is_empty() {
            match input {
                Some(fd) => {
                    // SAFETY: valid buffer; the fd is non-blocking.
                    let r = unsafe { libc::write(fd, pending.as_ptr().cast(), pending.len()) };
                    if r > 0 {
                        pending.drain(..r as usize);
                    } else if r < 0 && !matches!(errno(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                        // The reader is gone.
                        pending.clear();
                        if io.console.is_none() {
                            input = None;
                        }
                    }
                }
                None => pending.clear(),
            }
        }
        if close_after_flush && pending.is_empty() && io.console.is_none() {
            if let Some(fd) = io.stdin {
                if input.is_some() {
                    // Replacing our only write end gives the init EOF.
                    input = None;
                    close_stdin(fd);
                }
            }
        }
        for (i, s) in streams.iter_mut().enumerate() {
            if !s.open || pfds[i + 3].revents == 0 {
                continue;
            }
            // SAFETY: valid buffer.
            let r = unsafe { libc::read(s.fd, buf.as_mut_ptr().cast(), buf.len()) };
            let now = time::now_rfc3339_go_nano();
            if r > 0 {
                let data = &buf[..r as usize];
                let recs = if s.raw {
                    s.split.feed_raw(data, &now)
                } else {
                    s.split.feed(data, &now)
                };
                if let Some(f) = log_file.as_mut() {
                    let _ = f.write_records(&recs);
                }
            } else if r == 0 || !matches!(errno(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
                // EOF, or EIO from a terminal whose last slave closed.
                s.open = false;
                if let Some(rec) = s.split.finish(&now) {
                    if let Some(f) = log_file.as_mut() {
                        let _ = f.write_records(&[rec]);
                    }
                }
            }
        }
    }
    drop(clients);
    // Flush partial lines of streams we stopped waiting for.
    let now = time::now_rfc3339_go_nano();
    for s in streams.iter_mut().filter(|s| s.open) {
        if let Some(rec) = s.split.finish(&now) {
            if let Some(f) = log_file.as_mut() {
                let _ = f.write_records(&[rec]);
            }
        }
    }
    if let Some(f) = log_file {
        f.sync();
    }
    status.unwrap_or(EXIT_SETUP_FAILED)
}

/// Give the init EOF on stdin: replace our write end with /dev/null, so
/// the descriptor number stays valid for its owner.
fn close_stdin(fd: RawFd) {
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 over a descriptor we own; the old pipe end closes.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Result<Args, String> {
        parse_args_from(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn log_rotation_args() {
        let a = parse(&["--id", "c", "--bundle", "/b", "--log", "/l"]).unwrap();
        assert_eq!((a.log_max_size, a.log_max_files), (None, 1));
        let a = parse(&[
            "--id=c",
            "--bundle=/b",
            "--log=/l",
            "--log-max-size",
            "2048",
            "--log-max-files=3",
        ])
        .unwrap();
        assert_eq!(a.log.as_deref(), Some(Path::new("/l")));
        assert_eq!((a.log_max_size, a.log_max_files), (Some(2048), 3));
        let a = parse(&["--id=c", "--bundle=/b", "--log-max-size=0"]).unwrap();
        assert_eq!(a.log_max_size, None);
        assert!(parse(&["--id=c", "--bundle=/b", "--log-max-size=2k"]).is_err());
        assert!(parse(&["--id=c", "--bundle=/b", "--log-max-files=0"]).is_err());
        assert!(parse(&["--id=c", "--bundle=/b", "--log-max-files", "x"]).is_err());
    }
}
