//! Resource limits from `process.rlimits`, clamped to what the host allows.

use crate::error::{Error, Result};
use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

pub fn resource_of(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// Clamp a wanted (soft, hard) pair to the current hard limit: the hard
/// limit can never be raised without CAP_SYS_RESOURCE, and soft <= hard.
pub fn clamp(want_soft: u64, want_hard: u64, host_hard: u64) -> (u64, u64) {
    let hard = want_hard.min(host_hard);
    let soft = want_soft.min(hard);
    (soft, hard)
}

fn set(res: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: lim is a valid rlimit.
    if unsafe { libc::setrlimit(res, &lim) } == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Apply the spec's rlimits. When raising fails with EPERM, clamp to the
/// current hard limit instead of failing.
pub fn apply(rlimits: &[PosixRlimit]) -> Result<()> {
    for rl in rlimits {
        let res = resource_of(rl.typ());
        match set(res, rl.soft(), rl.hard()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                let mut cur = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: cur is a valid out pointer.
                if unsafe { libc::getrlimit(res, &mut cur) } == -1 {
                    return Err(Error::last_os(format!("getrlimit {:?}", rl.typ())));
                }
                let (soft, hard) = clamp(rl.soft(), rl.hard(), cur.rlim_max);
                set(res, soft, hard)
                    .map_err(|e| Error::os(format!("setrlimit {:?} {soft}/{hard}", rl.typ()), e))?;
            }
            Err(e) => {
                return Err(Error::os(
                    format!("setrlimit {:?} {}/{}", rl.typ(), rl.soft(), rl.hard()),
                    e,
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_to_host_hard() {
        assert_eq!(clamp(1_048_576, 1_048_576, 20_000), (20_000, 20_000));
        assert_eq!(clamp(1024, 1_048_576, 20_000), (1024, 20_000));
        assert_eq!(clamp(100, 200, 20_000), (100, 200));
        assert_eq!(clamp(300, 200, 20_000), (200, 200));
        assert_eq!(clamp(u64::MAX, u64::MAX, u64::MAX), (u64::MAX, u64::MAX));
    }

    #[test]
    fn maps_nofile() {
        assert_eq!(
            resource_of(PosixRlimitType::RlimitNofile),
            libc::RLIMIT_NOFILE
        );
    }
}
