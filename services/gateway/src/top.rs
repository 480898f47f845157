//! `docker top`: ps-like rows for a container's processes (host pids),
//! read from /proc, or from `ps ARGS` filtered to the container's pids (as
//! docker does) when ps options are given.

use std::collections::HashSet;

use berth_proto::gateway::v1::{top_response, TopResponse};
use chrono::{Local, TimeZone};

use crate::error::{Error, Result};

const TITLES: [&str; 8] = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];

/// Fields of /proc/PID/stat after the command name.
struct Stat {
    ppid: u64,
    tty_nr: u64,
    utime: u64,
    stime: u64,
    start: u64,
}

fn parse_stat(text: &str) -> Option<(String, Stat)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let f: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // f[0] is field 3 (state).
    let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some((
        comm,
        Stat {
            ppid: n(4)?,
            tty_nr: n(7)?,
            utime: n(14)?,
            stime: n(15)?,
            start: n(22)?,
        },
    ))
}

/// Terminal name from a tty_nr ("pts/0", "tty1", "?").
pub fn tty_name(tty_nr: u64) -> String {
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match major {
        0 => "?".into(),
        4 => format!("tty{minor}"),
        136..=143 => format!("pts/{}", minor + (major - 136) * 256),
        _ => "?".into(),
    }
}

/// CPU time as ps shows it: HH:MM:SS.
pub fn cpu_time(secs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
        })
        .unwrap_or_else(|| uid.to_string())
}

/// Rows like `ps -ef` for the given host pids.
pub fn from_proc(pids: &HashSet<u32>) -> TopResponse {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0);
    let now = Local::now();
    let mut sorted: Vec<u32> = pids.iter().copied().collect();
    sorted.sort_unstable();
    let mut rows = Vec::new();
    for pid in sorted {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // exited meanwhile
        };
        let Some((comm, st)) = parse_stat(&text) else {
            continue;
        };
        let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("Uid:")
                        .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
                })
            })
            .unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = if cmdline.is_empty() {
            format!("[{comm}]")
        } else {
            cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let started = btime + (st.start / hz) as i64;
        let start_local = Local.timestamp_opt(started, 0).single();
        let stime = match start_local {
            Some(t) if t.date_naive() == now.date_naive() => t.format("%H:%M").to_string(),
            Some(t) => t.format("%b%d").to_string(),
            None => "?".into(),
        };
        let cpu_secs = (st.utime + st.stime) / hz;
        let elapsed = (now.timestamp() - started).max(1) as u64;
        let c = (st.utime + st.stime) * 100 / hz / elapsed;
        rows.push(top_response::Row {
            values: vec![
                user_name(uid),
                pid.to_string(),
                st.ppid.to_string(),
                c.to_string(),
                stime,
                tty_name(st.tty_nr),
                cpu_time(cpu_secs),
                cmd,
            ],
        });
    }
    TopResponse {
        titles: TITLES.iter().map(|s| s.to_string()).collect(),
        processes: rows,
    }
}

/// Splits `ps` output into titles and rows, keeping the rows of `pids`
/// (the last column may contain spaces).
pub fn filter_ps(output: &str, pids: &HashSet<u32>) -> Result<TopResponse> {
    let mut lines = output.lines();
    let header = lines.next().unwrap_or_default();
    let titles: Vec<String> = header.split_whitespace().map(str::to_string).collect();
    let pid_col = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| Error::InvalidArgument("Couldn't find PID field in ps output".into()))?;
    let mut processes = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < titles.len() {
            continue;
        }
        let Ok(pid) = f[pid_col].parse::<u32>() else {
            continue;
        };
        if !pids.contains(&pid) {
            continue;
        }
        let mut values: Vec<String> = f[..titles.len() - 1]
            .iter()
            .map(|s| s.to_string())
            .collect();
        values.push(f[titles.len() - 1..].join(" "));
        processes.push(top_response::Row { values });
    }
    Ok(TopResponse { titles, processes })
}

/// Runs `ps ARGS` on the host and keeps the container's rows.
pub async fn from_ps(args: &str, pids: &HashSet<u32>) -> Result<TopResponse> {
    let out = tokio::process::Command::new("ps")
        .args(args.split_whitespace())
        .output()
        .await
        .map_err(Error::io("run ps"))?;
    if !out.status.success() {
        return Err(Error::InvalidArgument(format!(
            "ps: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    filter_ps(&String::from_utf8_lossy(&out.stdout), pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_names() {
        let (comm, st) = parse_stat(
            "42 (sleep 1) S 7 42 42 34816 42 4194304 100 0 0 0 250 50 0 0 20 0 1 0 12345 1000 10",
        )
        .unwrap();
        assert_eq!(comm, "sleep 1");
        assert_eq!(
            (st.ppid, st.tty_nr, st.utime, st.stime, st.start),
            (7, 34816, 250, 50, 12345)
        );
        assert_eq!(tty_name(34816), "pts/0");
        assert_eq!(tty_name(0), "?");
        assert_eq!(cpu_time(3725), "01:02:05");
    }

    #[test]
    fn ps_filtering() {
        let out = "USER PID %CPU COMMAND\nroot 1 0.0 /sbin/init splash\nroot 42 0.0 sleep 100\n";
        let pids: HashSet<u32> = [42].into_iter().collect();
        let r = filter_ps(out, &pids).unwrap();
        assert_eq!(r.titles, vec!["USER", "PID", "%CPU", "COMMAND"]);
        assert_eq!(r.processes.len(), 1);
        assert_eq!(
            r.processes[0].values,
            vec!["root", "42", "0.0", "sleep 100"]
        );
        assert!(filter_ps("A B\n", &pids).is_err());
    }

    #[test]
    fn own_process() {
        let pids: HashSet<u32> = [std::process::id()].into_iter().collect();
        let r = from_proc(&pids);
        assert_eq!(r.titles.len(), 8);
        assert_eq!(r.processes.len(), 1);
        assert_eq!(r.processes[0].values[1], std::process::id().to_string());
    }
}
