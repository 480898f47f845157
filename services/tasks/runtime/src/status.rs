//! Exit statuses: the exit code, or 128 + signal when killed (Docker's rule).

use nix::sys::wait::WaitStatus;

/// Exit status for a wait status: the code, or 128 + signal. Statuses that
/// are not an exit (stopped, continued, still alive) give 255; callers that
/// need to tell them apart use [`exit_status_opt`].
pub fn exit_status_from_wait(ws: WaitStatus) -> i32 {
    exit_status_opt(ws).unwrap_or(255)
}

/// Like [`exit_status_from_wait`], with `None` for statuses that are not an exit.
pub fn exit_status_opt(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// The same for a raw `waitpid` status word; `None` if it is not an exit.
pub fn exit_status_from_raw(status: i32) -> Option<i32> {
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    #[test]
    fn maps_codes_and_signals() {
        let p = Pid::from_raw(1);
        assert_eq!(exit_status_from_wait(WaitStatus::Exited(p, 3)), 3);
        assert_eq!(
            exit_status_from_wait(WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            137
        );
        assert_eq!(
            exit_status_from_wait(WaitStatus::Signaled(p, Signal::SIGTERM, true)),
            143
        );
        assert_eq!(exit_status_opt(WaitStatus::StillAlive), None);
        assert_eq!(exit_status_from_wait(WaitStatus::StillAlive), 255);
    }

    #[test]
    fn maps_raw_status_words() {
        assert_eq!(exit_status_from_raw(3 << 8), Some(3));
        assert_eq!(exit_status_from_raw(9), Some(137));
        assert_eq!(exit_status_from_raw(0x137f), None); // stopped by SIGSTOP
    }
}
