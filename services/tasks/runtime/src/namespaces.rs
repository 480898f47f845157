//! Namespaces from `linux.namespaces`: new ones become clone flags, ones with
//! a `path` are joined with setns.

use crate::error::{Context, Error, Result};
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};
use std::os::fd::AsFd;
use std::path::PathBuf;

/// The namespace plan for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePlan {
    /// Flags passed to clone(2) for the init.
    pub clone_flags: CloneFlags,
    /// A new cgroup namespace, unshared by the init after it joined its cgroup.
    pub new_cgroup: bool,
    /// Joined by the parent before clone (pid namespaces apply to children).
    pub join_pid: Option<PathBuf>,
    /// Joined by the child right after clone.
    pub join: Vec<(CloneFlags, PathBuf)>,
}

impl NamespacePlan {
    pub fn new_net(&self) -> bool {
        self.clone_flags.contains(CloneFlags::CLONE_NEWNET)
    }
    pub fn new_uts(&self) -> bool {
        self.clone_flags.contains(CloneFlags::CLONE_NEWUTS)
            || self
                .join
                .iter()
                .any(|(f, _)| *f == CloneFlags::CLONE_NEWUTS)
    }
}

pub fn flag_of(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Build the plan. A new mount namespace is always used (the rootfs mounts
/// must never land in the host's namespace); user namespaces are not supported.
pub fn plan(namespaces: &[LinuxNamespace]) -> Result<NamespacePlan> {
    let mut p = NamespacePlan {
        clone_flags: CloneFlags::CLONE_NEWNS,
        new_cgroup: false,
        join_pid: None,
        join: Vec::new(),
    };
    for ns in namespaces {
        let flag = flag_of(ns.typ());
        if flag == CloneFlags::CLONE_NEWUSER {
            return Err(Error::Spec("user namespaces are not supported".into()));
        }
        match ns.path() {
            Some(path) if !path.as_os_str().is_empty() => {
                if flag == CloneFlags::CLONE_NEWPID {
                    p.join_pid = Some(path.clone());
                } else if flag == CloneFlags::CLONE_NEWNS {
                    return Err(Error::Spec(
                        "joining a mount namespace is not supported".into(),
                    ));
                } else {
                    p.join.push((flag, path.clone()));
                }
            }
            _ => {
                if flag == CloneFlags::CLONE_NEWCGROUP {
                    p.new_cgroup = true;
                } else {
                    p.clone_flags.insert(flag);
                }
            }
        }
    }
    Ok(p)
}

/// setns into the namespace file at `path`.
pub fn join(flag: CloneFlags, path: &std::path::Path) -> Result<()> {
    let f = std::fs::File::open(path).with_ctx(|| format!("open namespace {}", path.display()))?;
    nix::sched::setns(f.as_fd(), flag).with_ctx(|| format!("setns {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceBuilder;

    fn ns(t: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut b = LinuxNamespaceBuilder::default().typ(t);
        if let Some(p) = path {
            b = b.path(p);
        }
        b.build().unwrap()
    }

    #[test]
    fn plans_new_and_joined() {
        let p = plan(&[
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Network, Some("/run/netns/x")),
            ns(LinuxNamespaceType::Uts, None),
            ns(LinuxNamespaceType::Cgroup, None),
        ])
        .unwrap();
        assert!(p.clone_flags.contains(
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS
        ));
        assert!(!p.clone_flags.contains(CloneFlags::CLONE_NEWNET));
        assert!(!p.new_net());
        assert!(p.new_cgroup);
        assert_eq!(
            p.join,
            vec![(CloneFlags::CLONE_NEWNET, PathBuf::from("/run/netns/x"))]
        );
        let p = plan(&[ns(LinuxNamespaceType::Pid, Some("/proc/1/ns/pid"))]).unwrap();
        assert_eq!(p.join_pid, Some(PathBuf::from("/proc/1/ns/pid")));
        assert!(plan(&[ns(LinuxNamespaceType::User, None)]).is_err());
    }
}
