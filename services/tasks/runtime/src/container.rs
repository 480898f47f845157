//! Creating a container: clone the init into its namespaces, put it into its
//! cgroup, let it set up its rootfs and exec, and learn through a CLOEXEC
//! pipe whether exec succeeded (EOF) or what failed.

use crate::cgroups::Cgroup;
use crate::error::{Context, Error, Result, EXIT_SETUP_FAILED};
use crate::namespaces::{self, NamespacePlan};
use crate::rootpath::Root;
use crate::spec::Bundle;
use crate::sys::{pipe_cloexec, read_some, read_to_end, write_all};
use crate::{caps, devices, mount, net, process, rlimits};
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// How the init's stdio is set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Io {
    /// Give the init a stdin pipe and return its write end (else stdin is
    /// /dev/null).
    pub stdin: bool,
    /// Give the init a terminal: a pty opened inside the container (so it
    /// names the container's own /dev/pts), the slave as controlling
    /// terminal and stdio; the master is returned.
    pub terminal: bool,
}

/// A created (and exec'd) container init.
#[derive(Debug)]
pub struct Container {
    /// Host pid of the init.
    pub pid: i32,
    /// Read end of the init's stdout (None with a terminal).
    pub stdout: Option<OwnedFd>,
    /// Read end of the init's stderr (None with a terminal).
    pub stderr: Option<OwnedFd>,
    /// Write end of the init's stdin (with `Io::stdin`).
    pub stdin: Option<OwnedFd>,
    /// Master of the init's terminal (with `Io::terminal`).
    pub console: Option<OwnedFd>,
    /// The container's cgroup (remove it after the init exited).
    pub cgroup: Option<Cgroup>,
}

/// What the child reports when it fails before exec.
#[derive(Debug, Serialize, Deserialize)]
struct ChildError {
    code: i32,
    message: String,
}

/// The cgroup path for the spec, defaulting to `/berth/<id>`.
fn cgroups_path(bundle: &Bundle, id: &str) -> PathBuf {
    bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_else(|| PathBuf::from(format!("/berth/{id}")))
}

/// Create the container described by `bundle` and start its init.
///
/// Must be called from a single-threaded process that has SIGCHLD blocked
/// or handled; the caller reaps the init. On error nothing is left behind:
/// the child is killed and reaped and the cgroup removed.
pub fn create(bundle: &Bundle, id: &str) -> Result<Container> {
    create_with(bundle, id, Io::default())
}

/// [`create`] with the given stdio setup.
pub fn create_with(bundle: &Bundle, id: &str, io: Io) -> Result<Container> {
    let linux = bundle
        .spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::Spec("no linux section".into()))?;
    let plan = namespaces::plan(linux.namespaces().as_deref().unwrap_or(&[]))?;

    let cgroup = Cgroup::create(&cgroups_path(bundle, id), linux.resources().as_ref())?;
    match spawn(bundle, &plan, &cgroup, io) {
        Ok(Spawned {
            pid,
            stdout,
            stderr,
            stdin,
            console,
        }) => Ok(Container {
            pid,
            stdout,
            stderr,
            stdin,
            console,
            cgroup: Some(cgroup),
        }),
        Err(e) => {
            cgroup.remove();
            Err(e)
        }
    }
}

fn kill_and_reap(pid: i32) {
    // SAFETY: plain syscalls on our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut st = 0;
        while libc::waitpid(pid, &mut st, 0) == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
}

struct Spawned {
    pid: i32,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    console: Option<OwnedFd>,
}

/// A connected pair of unix stream sockets (close-on-exec).
fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two fds that we then own.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } == -1
    {
        return Err(Error::last_os("socketpair for the terminal"));
    }
    // SAFETY: fresh fds.
    unsafe { Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))) }
}

fn spawn(bundle: &Bundle, plan: &NamespacePlan, cgroup: &Cgroup, io: Io) -> Result<Spawned> {
    let (go_rd, go_wr) = pipe_cloexec()?;
    let (err_rd, err_wr) = pipe_cloexec()?;
    let (out_rd, out_wr) = pipe_cloexec()?;
    let (errout_rd, errout_wr) = pipe_cloexec()?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .open("/dev/null")
        .ctx("open /dev/null")?;
    let (stdin_rd, stdin_wr) = if io.stdin {
        let (r, w) = pipe_cloexec()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let (console_parent, console_child) = if io.terminal {
        let (p, c) = socketpair()?;
        (Some(p), Some(c))
    } else {
        (None, None)
    };

    if let Some(p) = &plan.join_pid {
        namespaces::join(CloneFlags::CLONE_NEWPID, p)?;
    }

    let flags = plan.clone_flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a fork-like clone (no new stack) in a single-threaded process;
    // the child only runs child_main and never returns.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if ret < 0 {
        return Err(Error::last_os(format!(
            "clone init with flags {:?}",
            plan.clone_flags
        )));
    }
    if ret == 0 {
        drop(go_wr);
        drop(err_rd);
        drop(out_rd);
        drop(errout_rd);
        drop(stdin_wr);
        drop(console_parent);
        let fds = ChildFds {
            go: go_rd.as_raw_fd(),
            err: err_wr.as_raw_fd(),
            stdin: stdin_rd
                .as_ref()
                .map_or(null.as_raw_fd(), |f| f.as_raw_fd()),
            stdout: out_wr.as_raw_fd(),
            stderr: errout_wr.as_raw_fd(),
            console: console_child.as_ref().map(|f| f.as_raw_fd()),
        };
        child_main(bundle, plan, fds);
    }
    let pid = ret as i32;
    drop(go_rd);
    drop(err_wr);
    drop(out_wr);
    drop(errout_wr);
    drop(null);
    drop(stdin_rd);
    drop(console_child);

    if let Err(e) = cgroup.add_pid(pid) {
        kill_and_reap(pid);
        return Err(e);
    }
    if let Err(e) = write_all(go_wr.as_raw_fd(), b"g") {
        kill_and_reap(pid);
        return Err(e);
    }
    drop(go_wr);
    let report = match read_to_end(&err_rd) {
        Ok(r) => r,
        Err(e) => {
            kill_and_reap(pid);
            return Err(e);
        }
    };
    if !report.is_empty() {
        kill_and_reap(pid);
        let ce: ChildError = serde_json::from_slice(&report).unwrap_or_else(|_| ChildError {
            code: EXIT_SETUP_FAILED,
            message: String::from_utf8_lossy(&report).into_owned(),
        });
        return Err(Error::Child {
            code: ce.code,
            message: ce.message,
        });
    }
    let console = match &console_parent {
        Some(sock) => match crate::pty::recv_fd(sock.as_raw_fd()) {
            Ok(Some(m)) => Some(m),
            Ok(None) => {
                kill_and_reap(pid);
                return Err(Error::Spec(
                    "the container did not send its terminal".into(),
                ));
            }
            Err(e) => {
                kill_and_reap(pid);
                return Err(e);
            }
        },
        None => None,
    };
    // With a terminal the output comes from the master; the pipes were
    // only the child's stdio until it took the terminal.
    let (stdout, stderr) = if io.terminal {
        (None, None)
    } else {
        (Some(out_rd), Some(errout_rd))
    };
    Ok(Spawned {
        pid,
        stdout,
        stderr,
        stdin: stdin_wr,
        console,
    })
}

struct ChildFds {
    go: RawFd,
    err: RawFd,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    /// Socket to send the terminal's master over (with a terminal).
    console: Option<RawFd>,
}

fn child_main(bundle: &Bundle, plan: &NamespacePlan, fds: ChildFds) -> ! {
    let err_fd = fds.err;
    let e = match child_setup(bundle, plan, &fds) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    let report = ChildError {
        code: e.exit_code(),
        message: e.to_string(),
    };
    let data = serde_json::to_vec(&report).unwrap_or_default();
    let _ = write_all(err_fd, &data);
    // SAFETY: leave the forked child without running any destructors.
    unsafe { libc::_exit(report.code) }
}

fn reset_signals() -> Result<()> {
    // SAFETY: sigset operations on a local set; signal() with SIG_DFL.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) == -1 {
            return Err(Error::last_os("sigprocmask"));
        }
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
    Ok(())
}

fn dup_onto(from: RawFd, to: RawFd, what: &str) -> Result<()> {
    // SAFETY: plain dup2.
    if unsafe { libc::dup2(from, to) } == -1 {
        return Err(Error::last_os(format!("dup2 {what}")));
    }
    Ok(())
}

fn child_setup(bundle: &Bundle, plan: &NamespacePlan, fds: &ChildFds) -> Result<Infallible> {
    let spec = &bundle.spec;
    dup_onto(fds.stdin, 0, "stdin")?;
    dup_onto(fds.stdout, 1, "stdout")?;
    dup_onto(fds.stderr, 2, "stderr")?;
    reset_signals()?;

    // Wait until the parent has put us into the cgroup.
    let mut b = [0u8; 1];
    match read_some(fds.go, &mut b) {
        Ok(1) => {}
        Ok(_) => return Err(Error::Spec("shim went away before start".into())),
        Err(e) => return Err(Error::os("read start signal", e)),
    }

    if let Some(adj) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
        process::set_oom_score_adj(adj)?;
    }

    for (flag, path) in &plan.join {
        namespaces::join(*flag, path)?;
    }
    if plan.new_cgroup {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).ctx("unshare cgroup namespace")?;
    }

    mount::make_root_slave()?;
    let rootfs = bundle.rootfs();
    mount::mount_overlay_or_bind(&bundle.rootfs_mounts, &rootfs)?;
    let root = Root::open(&rootfs)?;
    if let Some(mounts) = spec.mounts() {
        for m in mounts {
            mount::mount_spec_mount(&root, m)?;
        }
    }
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::Spec("no linux section".into()))?;
    for d in devices::default_devices() {
        devices::create_device(&root, &d)?;
    }
    if let Some(devs) = linux.devices() {
        for d in devs {
            devices::create_device(&root, &devices::from_spec(d)?)?;
        }
    }
    devices::create_symlinks(&root)?;
    drop(root);

    if let Some(h) = spec.hostname() {
        if !h.is_empty() && plan.new_uts() {
            nix::unistd::sethostname(h).with_ctx(|| format!("sethostname {h}"))?;
        }
    }
    if plan.new_net() {
        net::loopback_up()?;
    }

    mount::pivot_root(&rootfs)?;

    if let Some(p) = linux.masked_paths() {
        mount::mask_paths(p)?;
    }
    if let Some(p) = linux.readonly_paths() {
        mount::readonly_paths(p)?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REMOUNT
                | nix::mount::MsFlags::MS_BIND
                | nix::mount::MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .ctx("remount / read-only")?;
    }

    if let Some(sock) = fds.console {
        // The pty is opened here, after pivot_root, so it lives in the
        // container's devpts.
        let (master, slave_path) = crate::pty::open_master()?;
        let slave = crate::pty::open_slave(&slave_path)?;
        crate::pty::send_fd(sock, master.as_raw_fd())?;
        drop(master);
        crate::pty::make_controlling(slave.as_raw_fd())?;
    }

    let proc = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Spec("no process".into()))?;
    if let Some(rl) = proc.rlimits() {
        rlimits::apply(rl)?;
    }
    let user = proc.user();
    let cwd = if proc.cwd().as_os_str().is_empty() {
        PathBuf::from("/")
    } else {
        proc.cwd().clone()
    };
    process::ensure_cwd(&cwd)?;
    if let Some(c) = proc.capabilities() {
        caps::prepare(c)?;
    }
    process::set_user(user)?;
    if let Some(c) = proc.capabilities() {
        caps::apply(c)?;
    }
    if proc.no_new_privileges().unwrap_or(false) {
        // SAFETY: plain prctl.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == -1 {
            return Err(Error::last_os("prctl PR_SET_NO_NEW_PRIVS"));
        }
    }
    std::env::set_current_dir(&cwd).with_ctx(|| format!("chdir {}", cwd.display()))?;

    let args = proc.args().clone().unwrap_or_default();
    let env = proc.env().clone().unwrap_or_default();
    let cmd = args
        .first()
        .ok_or_else(|| Error::Spec("process.args is empty".into()))?;
    let path = process::lookup(cmd, &process::path_from_env(&env))?;
    let exec = process::ExecArgs::new(&path, &args, &env)?;

    // Everything but stdio and the CLOEXEC sync pipes closes on exec.
    // SAFETY: close_range with the CLOEXEC flag only marks fds.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if crate::init::requested(spec) {
        return crate::init::exec_under_reaper(&exec, cmd, fds.console.is_some());
    }
    let errno = exec.exec();
    Err(process::exec_error(cmd, errno))
}
