//! Network fixtures for the tests: subnets no other test uses at the same
//! time, "other hosts" (network namespaces joined to the host by a veth
//! pair), and the clean-up of what a stack's berth-network made.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A /24 reserved for one test on this host (a file under /run/lock,
/// naming the owning process; a dead owner's reservation is taken over).
/// Released on drop.
pub struct SubnetLease {
    /// e.g. 10.77.3.0
    pub base: Ipv4Addr,
    path: PathBuf,
}

fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Whether the host routes anything inside `base`/24.
fn routed(base: Ipv4Addr) -> bool {
    let Ok(out) = Command::new("ip")
        .args(["-4", "-o", "route", "show"])
        .output()
    else {
        return false;
    };
    let want = u32::from(base) >> 8;
    String::from_utf8_lossy(&out.stdout).lines().any(|l| {
        let dst = l.split_whitespace().next().unwrap_or("");
        let (ip, len) = dst.split_once('/').unwrap_or((dst, "32"));
        let (Ok(ip), Ok(len)) = (ip.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
            return false;
        };
        if len == 0 {
            return false;
        }
        let ip = u32::from(ip);
        if len >= 24 {
            ip >> 8 == want
        } else {
            let mask = !0u32 << (32 - len);
            (want << 8) & mask == ip & mask
        }
    })
}

impl SubnetLease {
    /// Reserves a free 10.x.y.0/24 (x in 64..=254).
    pub fn take() -> SubnetLease {
        let dir = PathBuf::from("/run/lock/berth-test-subnets");
        fs::create_dir_all(&dir).expect("create the subnet lease directory");
        let start: u32 = rand::random::<u32>() % (191 * 256);
        for i in 0..(191 * 256) {
            let n = (start + i) % (191 * 256);
            let base = Ipv4Addr::new(10, 64 + (n / 256) as u8, (n % 256) as u8, 0);
            let path = dir.join(base.to_string());
            if let Ok(old) = fs::read_to_string(&path) {
                match old.trim().parse::<i32>() {
                    Ok(pid) if !pid_alive(pid) => {
                        let _ = fs::remove_file(&path);
                    }
                    _ => continue,
                }
            }
            let Ok(mut f) = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            else {
                continue;
            };
            let _ = write!(f, "{}", std::process::id());
            if routed(base) {
                // Someone else's; leave the mark while we look on, then drop it.
                let _ = fs::remove_file(&path);
                continue;
            }
            return SubnetLease { base, path };
        }
        panic!("no free 10.x.y.0/24 for a test network");
    }

    /// "10.x.y.0/24".
    pub fn cidr(&self) -> String {
        format!("{}/24", self.base)
    }

    /// The address with host part `n` (1..=254).
    pub fn ip(&self, n: u8) -> Ipv4Addr {
        let o = self.base.octets();
        Ipv4Addr::new(o[0], o[1], o[2], n)
    }
}

impl Drop for SubnetLease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Runs a command, panicking with its output when it fails.
#[track_caller]
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Another host as the tests see it: a network namespace joined to the
/// host by a veth pair on its own /24 (host side .1, the peer .2). Removed
/// on drop.
pub struct OtherHost {
    pub name: String,
    host_if: String,
    pub lease: SubnetLease,
}

impl OtherHost {
    pub fn new() -> OtherHost {
        let tag = format!("{:x}", rand::random::<u32>() & 0xff_ffff);
        let name = format!("bt-oh-{tag}");
        let host_if = format!("vo{tag}");
        let lease = SubnetLease::take();
        let me = OtherHost {
            name: name.clone(),
            host_if: host_if.clone(),
            lease,
        };
        sh(&["ip", "netns", "add", &name]);
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        let host_ip = format!("{}/24", me.lease.ip(1));
        let peer_ip = format!("{}/24", me.lease.ip(2));
        sh(&["ip", "addr", "add", &host_ip, "dev", &host_if]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        me.exec(&["ip", "addr", "add", &peer_ip, "dev", "eth0"]);
        me.exec(&["ip", "link", "set", "eth0", "up"]);
        me.exec(&["ip", "link", "set", "lo", "up"]);
        me
    }

    /// The host's address as this host sees it.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.lease.ip(1)
    }

    /// Its own address.
    pub fn ip(&self) -> Ipv4Addr {
        self.lease.ip(2)
    }

    /// A command inside it.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Runs a command inside it and asserts success.
    #[track_caller]
    pub fn exec(&self, args: &[&str]) -> String {
        let mut a = vec!["ip", "netns", "exec", &self.name];
        a.extend_from_slice(args);
        sh(&a)
    }
}

impl Default for OtherHost {
    fn default() -> Self {
        OtherHost::new()
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Deletes what a stack's berth-network left: the nftables table, its
/// default bridge and the links it made (bridges carry the alias
/// "berth:<table>").
pub fn remove_stack_network(table: &str, bridge: &str) {
    let _ = Command::new("ip").args(["link", "del", bridge]).output();
    let _ = Command::new("nft")
        .args(["delete", "table", "inet", table])
        .stderr(Stdio::null())
        .output();
    let alias = format!("berth:{table}");
    for e in fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
    {
        let a = fs::read_to_string(e.path().join("ifalias")).unwrap_or_default();
        if a.trim() == alias {
            let _ = Command::new("ip")
                .args(["link", "del", &e.file_name().to_string_lossy()])
                .output();
        }
    }
}
