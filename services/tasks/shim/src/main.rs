//! berth-shim: one small single-threaded process per container.
//!
//! `berth-shim --id ID --bundle DIR [--log FILE]`
//!
//! The launcher forks a daemon (new session, subreaper, stdio on /dev/null)
//! that creates the container and stays its parent. The launcher prints one
//! JSON line: `{"pid":N}` or `{"error":"...","exit_code":N}` and exits 0.
//! When the init exits the daemon drains its output into the json-file log,
//! removes the cgroup and writes `DIR/exit` atomically.

use berth_runtime::cgroups::Cgroup;
use berth_runtime::error::EXIT_SETUP_FAILED;
use berth_runtime::logs::{write_records, LineSplitter};
use berth_runtime::status::exit_status_from_raw;
use berth_runtime::sys::{pipe_cloexec, read_to_end, write_all};
use berth_runtime::{time, Bundle, Error};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Args {
    id: String,
    bundle: PathBuf,
    log: Option<PathBuf>,
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
}

fn parse_args() -> Result<Args, String> {
    let mut id = None;
    let mut bundle = None;
    let mut log = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
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
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let cwd = std::env::current_dir().map_err(|e| format!("getcwd: {e}"))?;
    Ok(Args {
        id: id.ok_or("--id is required")?,
        bundle: cwd.join(bundle.ok_or("--bundle is required")?),
        log: log.map(|l| cwd.join(l)),
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
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            print_line(&failed_line(
                &format!("usage: berth-shim --id ID --bundle DIR [--log FILE]: {e}"),
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

fn write_exit(dir: &Path, status: i32, error: Option<&str>) {
    let ef = ExitFile {
        exit_status: status,
        exited_at: time::now_rfc3339_nanos(),
        error,
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
        write_exit(dir, e.exit_code(), Some(&msg));
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
    let log = match &args.log {
        Some(p) => match OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(p)
        {
            Ok(f) => Some(f),
            Err(e) => return fail(&Error::os(format!("open log {}", p.display()), e), &report),
        },
        None => None,
    };
    let bundle = match Bundle::load(dir) {
        Ok(b) => b,
        Err(e) => return fail(&e, &report),
    };
    let container = match berth_runtime::create(&bundle, &args.id) {
        Ok(c) => c,
        Err(e) => return fail(&e, &report),
    };
    drop(bundle);
    let pid = container.pid;
    if let Err(e) = write_atomic(dir, "init.pid", pid.to_string().as_bytes()) {
        // The container is running but nobody could find it: tear it down.
        // SAFETY: plain kill on our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let err = Error::os(format!("write {}/init.pid", dir.display()), e);
        let _ = wait_and_collect(
            &sigfd,
            pid,
            &container.stdout,
            &container.stderr,
            None,
            None,
        );
        if let Some(cg) = &container.cgroup {
            cg.remove();
        }
        return fail(&err, &report);
    }
    let line = serde_json::to_string(&Started { pid }).unwrap_or_default();
    let _ = write_all(report.as_raw_fd(), line.as_bytes());
    drop(report);

    let status = wait_and_collect(
        &sigfd,
        pid,
        &container.stdout,
        &container.stderr,
        log.as_ref(),
        container.cgroup.as_ref(),
    );
    if let Some(cg) = &container.cgroup {
        cg.kill_all();
        cg.remove();
    }
    reap_all();
    write_exit(dir, status, None);
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

/// One output pipe of the container (the fd is owned by the caller).
struct Stream {
    fd: RawFd,
    open: bool,
    split: LineSplitter,
}

/// Poll the output pipes and SIGCHLD until the init exited and both pipes
/// reached EOF. Returns the init's exit status.
fn wait_and_collect(
    sigfd: &OwnedFd,
    init: i32,
    stdout: &OwnedFd,
    stderr: &OwnedFd,
    log: Option<&File>,
    cgroup: Option<&Cgroup>,
) -> i32 {
    let mut streams = [
        Stream {
            fd: stdout.as_raw_fd(),
            open: true,
            split: LineSplitter::new("stdout"),
        },
        Stream {
            fd: stderr.as_raw_fd(),
            open: true,
            split: LineSplitter::new("stderr"),
        },
    ];
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
        let mut pfds = vec![libc::pollfd {
            fd: sigfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for s in &streams {
            pfds.push(libc::pollfd {
                fd: if s.open { s.fd } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = if exited_at.is_some() { 200 } else { -1 };
        // SAFETY: valid array of pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
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
        for (i, s) in streams.iter_mut().enumerate() {
            if !s.open || pfds[i + 1].revents == 0 {
                continue;
            }
            // SAFETY: valid buffer.
            let r = unsafe { libc::read(s.fd, buf.as_mut_ptr().cast(), buf.len()) };
            let now = time::now_rfc3339_go_nano();
            if r > 0 {
                let recs = s.split.feed(&buf[..r as usize], &now);
                if let Some(f) = log_file.as_mut() {
                    let _ = write_records(f, &recs);
                }
            } else if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
            {
                s.open = false;
                if let Some(rec) = s.split.finish(&now) {
                    if let Some(f) = log_file.as_mut() {
                        let _ = write_records(f, &[rec]);
                    }
                }
            }
        }
    }
    // Flush partial lines of streams we stopped waiting for.
    let now = time::now_rfc3339_go_nano();
    for s in streams.iter_mut().filter(|s| s.open) {
        if let Some(rec) = s.split.finish(&now) {
            if let Some(f) = log_file.as_mut() {
                let _ = write_records(f, &[rec]);
            }
        }
    }
    if let Some(f) = log_file {
        let _ = f.sync_data();
    }
    status.unwrap_or(EXIT_SETUP_FAILED)
}
