//! `--init`: the container's PID 1 stays behind as a tiny reaper and runs
//! the command as its child, like Docker's docker-init (tini).
//!
//! The reaper is the runtime's own child process, already inside the
//! container (after pivot_root, with the container's user and
//! capabilities), so no binary has to be put into the container. It
//! forwards every signal it receives to the command, reaps every process
//! that is re-parented to it, and exits with the command's status (128+N
//! when the command was killed by signal N). It makes itself non-dumpable so
//! that processes in the container cannot ptrace it or open its
//! /proc/1/exe, and it rewrites its command line to
//! `berth-init -- COMMAND...` so that no host path shows in `ps`.

use crate::error::{Error, Result};
use crate::process::{exec_error, ExecArgs};
use crate::status::exit_status_from_raw;
use std::convert::Infallible;

/// The annotation in config.json that asks for the reaper (`"true"`).
pub const ANNOTATION: &str = "org.berth.init";

/// Whether the spec's annotations ask for the reaper.
pub fn requested(spec: &oci_spec::runtime::Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .is_some_and(|v| v == "true")
}

fn sigset_all() -> libc::sigset_t {
    // SAFETY: sigfillset initialises the local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        set
    }
}

fn set_mask(set: &libc::sigset_t, old: Option<&mut libc::sigset_t>) -> Result<()> {
    let old = old.map_or(std::ptr::null_mut(), |o| o as *mut _);
    // SAFETY: valid sigset pointers.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, set, old) } == -1 {
        return Err(Error::last_os("sigprocmask"));
    }
    Ok(())
}

/// Forks; the child execs `exec` (reporting failure as an error, like a
/// direct exec), the parent becomes the reaper and never returns.
///
/// `terminal`: stdin is the container's terminal; the command gets its own
/// process group as the terminal's foreground group, so that ^C and
/// SIGWINCH reach it rather than the reaper.
///
/// Must be called last in the container's setup, when every fd but stdio is
/// marked close-on-exec.
pub fn exec_under_reaper(exec: &ExecArgs, cmd: &str, terminal: bool) -> Result<Infallible> {
    let all = sigset_all();
    // SAFETY: zeroed is a valid (empty) sigset.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    set_mask(&all, Some(&mut old))?;
    // SAFETY: fork in the single-threaded container setup process.
    let child = unsafe { libc::fork() };
    if child == -1 {
        let e = Error::last_os("fork the command under the init");
        let _ = set_mask(&old, None);
        return Err(e);
    }
    if child == 0 {
        // SAFETY: plain process-group and terminal calls on ourselves; the
        // signals (SIGTTOU among them) are still blocked, so tcsetpgrp
        // from what is now a background group succeeds.
        unsafe {
            libc::setpgid(0, 0);
            if terminal {
                libc::tcsetpgrp(0, libc::getpid());
            }
        }
        set_mask(&old, None)?;
        let errno = exec.exec();
        return Err(exec_error(cmd, errno));
    }
    reap(child, exec)
}

/// Rewrites this process's command line (the memory /proc/self/cmdline
/// reads) to `title`, truncated to the space the original had.
fn set_title(title: &str) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the parenthesised comm; arg_start and arg_end are the
    // 48th and 49th fields of the whole line.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let (Some(start), Some(end)) = (
        fields.get(45).and_then(|s| s.parse::<usize>().ok()),
        fields.get(46).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        return;
    };
    if end <= start + 2 {
        return;
    }
    let len = end - start;
    let bytes = title.as_bytes();
    let n = bytes.len().min(len - 2);
    // SAFETY: [start, end) is this process's own argument area, mapped and
    // writable (the initial stack); nothing reads argv after this point.
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, len);
        area[..n].copy_from_slice(&bytes[..n]);
        area[n..].fill(0);
        // A non-NUL last byte tells the kernel the area holds one title
        // string (setproctitle style): cmdline then ends at the first NUL.
        area[len - 1] = b' ';
    }
}

fn reap(child: i32, exec: &ExecArgs) -> Result<Infallible> {
    // Nothing of the set-up is needed any more: keep stdio only, so the
    // shim sees its sync pipe close when the command execs.
    // SAFETY: close_range on our own fds.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    // SAFETY: prctl on ourselves with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"berth-init".as_ptr(), 0, 0, 0);
    }
    let mut title = String::from("berth-init --");
    for a in &exec.argv {
        title.push(' ');
        title.push_str(&a.to_string_lossy());
    }
    set_title(&title);

    let all = sigset_all();
    loop {
        // SAFETY: waiting for one of the (all blocked) signals.
        let sig = unsafe { libc::sigwaitinfo(&all, std::ptr::null_mut()) };
        match sig {
            -1 => continue, // EINTR
            libc::SIGCHLD => {
                // Reap everything that is dead; leave when the command is.
                loop {
                    let mut status = 0;
                    // SAFETY: plain waitpid.
                    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                    if pid <= 0 {
                        break;
                    }
                    if pid == child {
                        if let Some(code) = exit_status_from_raw(status) {
                            // SAFETY: leaving without running destructors,
                            // like the exec'd process would.
                            unsafe { libc::_exit(code) };
                        }
                    }
                }
            }
            s => {
                // SAFETY: forwarding a signal to our child.
                unsafe { libc::kill(child, s) };
            }
        }
    }
}
