//! `berth-shim exec --pid PID --bundle DIR --process JSON`: run one more
//! process inside a running container.
//!
//! The exec shim opens the init's namespaces and cgroup.procs files, joins
//! the namespaces (mount last), forks (so the child is in the pid
//! namespace), and the child joins the cgroup, takes its stdio (pipes, or a
//! pty opened in the container's own /dev/pts), sets user, capabilities,
//! environment and working directory from the container's config.json plus
//! the request, and execs. The shim stays outside the cgroup and relays:
//! frames on its stdin (`frame::STDIN`, `CLOSE_STDIN`, `RESIZE`) go to the
//! process, its output comes back as `STDOUT`/`STDERR` frames on stdout,
//! preceded by `STARTED` and followed by one `EXIT` frame. It then exits 0.
//! When its stdout is closed the output is discarded and the process runs on.

use berth_runtime::error::{EXIT_CANNOT_EXECUTE, EXIT_SETUP_FAILED};
use berth_runtime::frame::{self, Decoder};
use berth_runtime::status::exit_status_from_raw;
use berth_runtime::sys::{pipe_cloexec, read_to_end, write_all};
use berth_runtime::{caps, process, pty, rlimits, Error, Result};
use oci_spec::runtime::{Spec, User, UserBuilder};
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to run, as given by berth-tasks.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ExecProcess {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub terminal: bool,
    pub stdin: bool,
    pub rows: u16,
    pub cols: u16,
}

#[derive(Serialize, Deserialize)]
struct ChildError {
    code: i32,
    message: String,
}

struct Args {
    pid: i32,
    bundle: PathBuf,
    process: ExecProcess,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> std::result::Result<Args, String> {
    let (mut pid, mut bundle, mut process) = (None, None, None);
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let value = inline
            .or_else(|| it.next())
            .ok_or(format!("{key} needs a value"))?;
        match key.as_str() {
            "--pid" => pid = Some(value.parse::<i32>().map_err(|e| format!("--pid: {e}"))?),
            "--bundle" => bundle = Some(PathBuf::from(value)),
            "--process" => {
                process = Some(
                    serde_json::from_str::<ExecProcess>(&value)
                        .map_err(|e| format!("--process: {e}"))?,
                )
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let process: ExecProcess = process.ok_or("--process is required")?;
    if process.args.is_empty() {
        return Err("no command given".into());
    }
    Ok(Args {
        pid: pid.filter(|p| *p > 0).ok_or("--pid is required")?,
        bundle: bundle.ok_or("--bundle is required")?,
        process,
    })
}

fn send(out: RawFd, dead: &mut bool, data: &[u8]) {
    if !*dead && write_all(out, data).is_err() {
        *dead = true;
    }
}

/// Entry point; returns the shim's exit code (0 when an EXIT frame was sent).
pub fn main(args: impl Iterator<Item = String>) -> i32 {
    // SAFETY: ignoring SIGPIPE: a closed stdout shows up as EPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let mut dead = false;
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            let msg = format!("usage: berth-shim exec --pid PID --bundle DIR --process JSON: {e}");
            send(1, &mut dead, &frame::exit(EXIT_SETUP_FAILED, &msg));
            return 0;
        }
    };
    match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            send(1, &mut dead, &frame::exit(e.exit_code(), &e.to_string()));
            0
        }
    }
}

/// Namespaces joined, in order (mount last: the others are opened by path
/// under the host's /proc).
const NAMESPACES: [(&str, libc::c_int); 6] = [
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
];

fn open_namespaces(pid: i32) -> Result<Vec<(OwnedFd, libc::c_int, &'static str)>> {
    let mut out = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let md = std::fs::metadata(&theirs).map_err(|e| Error::os(format!("stat {theirs}"), e))?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}")).ok();
        if ours.is_some_and(|o| o.ino() == md.ino() && o.dev() == md.dev()) {
            continue;
        }
        let f = std::fs::File::open(&theirs).map_err(|e| Error::os(format!("open {theirs}"), e))?;
        out.push((OwnedFd::from(f), flag, name));
    }
    Ok(out)
}

/// cgroup.procs of every hierarchy the init is in, opened for writing.
fn open_cgroup_procs(pid: i32) -> Result<Vec<OwnedFd>> {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| Error::os(format!("read /proc/{pid}/cgroup"), e))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::os("read /proc/self/mountinfo", e))?;
    let dirs = berth_runtime::cgroupfs::cgroup_dirs(&cg, &mountinfo);
    // On hybrid hosts the cgroup2 hierarchy holds no controller we use.
    let v1 = dirs.iter().any(|(c, _)| !c.is_empty());
    let mut out = Vec::new();
    for (ctrls, dir) in dirs {
        if v1 && ctrls.is_empty() {
            continue;
        }
        let p = dir.join("cgroup.procs");
        if let Ok(f) = OpenOptions::new().write(true).open(&p) {
            out.push(OwnedFd::from(f));
        }
    }
    Ok(out)
}

fn run(args: &Args) -> Result<()> {
    let spec_path = args.bundle.join("config.json");
    let spec = Spec::load(&spec_path)
        .map_err(|e| Error::Spec(format!("load {}: {e}", spec_path.display())))?;
    let p = &args.process;
    let namespaces = open_namespaces(args.pid)?;
    let cgroup_procs = open_cgroup_procs(args.pid)?;
    let null = OpenOptions::new()
        .read(true)
        .open("/dev/null")
        .map_err(|e| Error::os("open /dev/null", e))?;
    let sigfd = crate::sigchld_fd()?;
    for (fd, flag, name) in &namespaces {
        // SAFETY: setns on an fd we opened; this process is single-threaded.
        if unsafe { libc::setns(fd.as_raw_fd(), *flag) } < 0 {
            return Err(Error::last_os(format!(
                "join {name} namespace of {}",
                args.pid
            )));
        }
    }
    drop(namespaces);

    // stdio of the process: a pty in the container's devpts, or pipes.
    let mut slave_path = None;
    let (master, out_r, out_w, err_r, err_w, in_r, in_w) = if p.terminal {
        let (m, path) = pty::open_master()?;
        if p.rows > 0 && p.cols > 0 {
            pty::set_size(m.as_raw_fd(), p.rows, p.cols)?;
        }
        slave_path = Some(path);
        (Some(m), None, None, None, None, None, None)
    } else {
        let (or, ow) = pipe_cloexec()?;
        let (er, ew) = pipe_cloexec()?;
        let (ir, iw) = if p.stdin {
            let (r, w) = pipe_cloexec()?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        (None, Some(or), Some(ow), Some(er), Some(ew), ir, iw)
    };
    let (report_r, report_w) = pipe_cloexec()?;

    // SAFETY: single-threaded; the child only sets up and execs.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(Error::last_os("fork exec process"));
    }
    if child == 0 {
        drop(report_r);
        let e = match child_setup(
            &spec,
            p,
            &cgroup_procs,
            slave_path.as_deref(),
            in_r.as_ref().map_or(null.as_raw_fd(), |f| f.as_raw_fd()),
            out_w.as_ref().map(|f| f.as_raw_fd()),
            err_w.as_ref().map(|f| f.as_raw_fd()),
        ) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        let rep = ChildError {
            code: e.exit_code(),
            message: e.to_string(),
        };
        let _ = write_all(
            report_w.as_raw_fd(),
            &serde_json::to_vec(&rep).unwrap_or_default(),
        );
        // SAFETY: leave the forked child without destructors.
        unsafe { libc::_exit(rep.code) };
    }
    drop(report_w);
    drop(out_w);
    drop(err_w);
    drop(in_r);
    drop(null);
    drop(cgroup_procs);
    let report = read_to_end(&report_r)?;
    let mut dead = false;
    if !report.is_empty() {
        let ce: ChildError = serde_json::from_slice(&report).unwrap_or(ChildError {
            code: EXIT_SETUP_FAILED,
            message: String::from_utf8_lossy(&report).into_owned(),
        });
        let mut st = 0;
        // SAFETY: reap our child.
        unsafe { libc::waitpid(child, &mut st, 0) };
        send(1, &mut dead, &frame::exit(ce.code, &ce.message));
        return Ok(());
    }
    send(
        1,
        &mut dead,
        &frame::encode(frame::STARTED, &(child as u32).to_be_bytes()),
    );
    let status = relay(child, &sigfd, master, out_r, err_r, in_w, &mut dead);
    send(1, &mut dead, &frame::exit(status, ""));
    Ok(())
}

fn set_nonblock(fd: RawFd) {
    // SAFETY: fcntl flag update on a valid fd.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// Relay until the process exited and its output is drained; returns its
/// exit status.
fn relay(
    child: i32,
    sigfd: &OwnedFd,
    master: Option<OwnedFd>,
    out_r: Option<OwnedFd>,
    err_r: Option<OwnedFd>,
    mut in_w: Option<OwnedFd>,
    dead: &mut bool,
) -> i32 {
    let terminal = master.is_some();
    // Output sources: (fd, frame kind).
    let mut outputs: Vec<(RawFd, u8, bool)> = Vec::new();
    if let Some(m) = &master {
        set_nonblock(m.as_raw_fd());
        outputs.push((m.as_raw_fd(), frame::STDOUT, true));
    }
    if let Some(o) = &out_r {
        outputs.push((o.as_raw_fd(), frame::STDOUT, true));
    }
    if let Some(e) = &err_r {
        outputs.push((e.as_raw_fd(), frame::STDERR, true));
    }
    if let Some(w) = &in_w {
        set_nonblock(w.as_raw_fd());
    }
    let input_fd = |in_w: &Option<OwnedFd>| -> Option<RawFd> {
        match &master {
            Some(m) => Some(m.as_raw_fd()),
            None => in_w.as_ref().map(|w| w.as_raw_fd()),
        }
    };
    let mut ctl_open = true;
    let mut decoder = Decoder::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut close_after_flush = false;
    let mut status: Option<i32> = None;
    let mut exited_at: Option<Instant> = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if status.is_some() && outputs.iter().all(|o| !o.2) {
            break;
        }
        if let Some(t) = exited_at {
            let limit = if terminal { 500 } else { 2000 };
            if t.elapsed() > Duration::from_millis(limit) {
                break;
            }
        }
        let in_fd = input_fd(&in_w);
        let mut pfds = vec![
            libc::pollfd {
                fd: sigfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // Stop reading input while some is still waiting to go out.
                fd: if ctl_open && pending.is_empty() {
                    0
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if !pending.is_empty() {
                    in_fd.unwrap_or(-1)
                } else {
                    -1
                },
                events: libc::POLLOUT,
                revents: 0,
            },
        ];
        for o in &outputs {
            pfds.push(libc::pollfd {
                fd: if o.2 { o.0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = if exited_at.is_some() { 100 } else { -1 };
        // SAFETY: valid pollfd array.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if pfds[0].revents != 0 {
            let mut info = [0u8; 128];
            // SAFETY: draining the non-blocking signalfd.
            while unsafe { libc::read(sigfd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) } > 0
            {
            }
        }
        loop {
            let mut st = 0;
            // SAFETY: plain waitpid.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r <= 0 {
                break;
            }
            if r == child {
                if let Some(code) = exit_status_from_raw(st) {
                    status = Some(code);
                    exited_at = Some(Instant::now());
                }
            }
        }
        if pfds[1].revents != 0 {
            // SAFETY: valid buffer.
            let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if r > 0 {
                decoder.push(&buf[..r as usize]);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(f)) => match f.kind {
                            frame::STDIN => pending.extend_from_slice(&f.payload),
                            frame::CLOSE_STDIN => close_after_flush = true,
                            frame::RESIZE => {
                                if let (Some(m), Some((rows, cols))) =
                                    (&master, frame::parse_resize(&f.payload))
                                {
                                    let _ = pty::set_size(m.as_raw_fd(), rows, cols);
                                }
                            }
                            _ => {}
                        },
                        Ok(None) => break,
                        Err(_) => {
                            ctl_open = false;
                            break;
                        }
                    }
                }
            } else if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
            {
                ctl_open = false;
            }
        }
        if !pending.is_empty() {
            if let Some(fd) = input_fd(&in_w) {
                // SAFETY: valid buffer; fd is non-blocking.
                let r = unsafe { libc::write(fd, pending.as_ptr().cast(), pending.len()) };
                if r > 0 {
                    pending.drain(..r as usize);
                } else if r < 0 {
                    let errno = std::io::Error::last_os_error().raw_os_error();
                    if errno != Some(libc::EAGAIN) && errno != Some(libc::EINTR) {
                        pending.clear();
                        in_w = None;
                    }
                }
            } else {
                pending.clear();
            }
        }
        if close_after_flush && pending.is_empty() && !terminal {
            in_w = None;
        }
        for (i, o) in outputs.iter_mut().enumerate() {
            if !o.2 || pfds[i + 3].revents == 0 {
                continue;
            }
            // SAFETY: valid buffer.
            let r = unsafe { libc::read(o.0, buf.as_mut_ptr().cast(), buf.len()) };
            if r > 0 {
                send(1, dead, &frame::encode(o.1, &buf[..r as usize]));
            } else {
                let errno = std::io::Error::last_os_error().raw_os_error();
                if r == 0 || (errno != Some(libc::EINTR) && errno != Some(libc::EAGAIN)) {
                    o.2 = false;
                }
            }
        }
    }
    drop(in_w);
    status.unwrap_or(EXIT_SETUP_FAILED)
}

fn child_setup(
    spec: &Spec,
    p: &ExecProcess,
    cgroup_procs: &[OwnedFd],
    slave: Option<&str>,
    stdin: RawFd,
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
) -> Result<std::convert::Infallible> {
    for fd in cgroup_procs {
        write_all(fd.as_raw_fd(), b"0")?;
    }
    match slave {
        Some(path) => {
            let s = pty::open_slave(path)?;
            pty::make_controlling(s.as_raw_fd())?;
        }
        None => {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe {
                if libc::setsid() < 0
                    || libc::dup2(stdin, 0) < 0
                    || libc::dup2(stdout.unwrap_or(stdin), 1) < 0
                    || libc::dup2(stderr.unwrap_or(stdin), 2) < 0
                {
                    return Err(Error::last_os("set up stdio"));
                }
            }
        }
    }
    // SAFETY: default signal dispositions and an empty mask for the process.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
    let sp = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Spec("no process in config.json".into()))?;
    let mut env = sp.env().clone().unwrap_or_default();
    for e in &p.env {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    let (user, home) = if p.user.is_empty() {
        (sp.user().clone(), None)
    } else {
        let (user, home) = resolve_user(&p.user)?;
        (user, Some(home))
    };
    if let Some(h) = home {
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={h}"));
        }
    }
    // Execs get the container's oom_score_adj, as runc gives them.
    if let Some(adj) = sp.oom_score_adj() {
        process::set_oom_score_adj(adj)?;
    }
    if let Some(rl) = sp.rlimits() {
        rlimits::apply(rl)?;
    }
    let cwd = if !p.cwd.is_empty() {
        PathBuf::from(&p.cwd)
    } else if sp.cwd().as_os_str().is_empty() {
        PathBuf::from("/")
    } else {
        sp.cwd().clone()
    };
    if let Some(c) = sp.capabilities() {
        caps::prepare(c)?;
    }
    process::set_user(&user)?;
    if let Some(c) = sp.capabilities() {
        caps::apply(c)?;
    }
    if sp.no_new_privileges().unwrap_or(false) {
        // SAFETY: plain prctl.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == -1 {
            return Err(Error::last_os("prctl PR_SET_NO_NEW_PRIVS"));
        }
    }
    std::env::set_current_dir(&cwd).map_err(|e| Error::Exec {
        code: EXIT_CANNOT_EXECUTE,
        message: format!(
            "chdir to cwd (\"{}\") set in config.json failed: {e}",
            cwd.display()
        ),
    })?;
    let cmd = &p.args[0];
    let path = process::lookup(cmd, &process::path_from_env(&env))?;
    let exec = process::ExecArgs::new(&path, &p.args, &env)?;
    // SAFETY: marks every fd above stdio close-on-exec.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    let errno = exec.exec();
    Err(process::exec_error(cmd, errno))
}

/// USER[:GROUP] (names or numbers) against the container's /etc/passwd and
/// /etc/group; returns the user and its home directory.
fn resolve_user(spec: &str) -> Result<(User, String)> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let id =
        berth_runtime::user::resolve(spec, &passwd, &group).map_err(|message| Error::Exec {
            code: EXIT_CANNOT_EXECUTE,
            message,
        })?;
    let user = UserBuilder::default()
        .uid(id.uid)
        .gid(id.gid)
        .additional_gids(id.additional_gids)
        .build()
        .map_err(|e| Error::Spec(format!("user: {e}")))?;
    Ok((user, id.home))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let a = parse_args(
            [
                "--pid",
                "12",
                "--bundle=/b",
                "--process",
                r#"{"args":["sh"],"terminal":true}"#,
            ]
            .iter()
            .map(|s| s.to_string()),
        )
        .unwrap();
        assert_eq!(a.pid, 12);
        assert!(a.process.terminal);
        assert!(parse_args(["--pid", "1"].iter().map(|s| s.to_string())).is_err());
    }
}
