//! End-to-end: json-file log rotation (`--log-opt max-size/max-file`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_integration::{require_root, Mode, Stack};

fn stack_with_busybox() -> Stack {
    let s = Stack::start(Mode::AllInOne);
    s.import_busybox("busybox");
    s
}

/// The container's log file and its rotated siblings that exist.
fn log_files(s: &Stack, name: &str) -> Vec<PathBuf> {
    let path = s
        .berth(&["inspect", "-f", "{{.LogPath}}", name])
        .ok()
        .trim()
        .to_string();
    let mut out = vec![PathBuf::from(&path)];
    for n in 1..10 {
        let p = PathBuf::from(format!("{path}.{n}"));
        if p.exists() {
            out.push(p);
        }
    }
    out
}

fn numbers(out: &str) -> Vec<u32> {
    out.lines()
        .map(|l| {
            l.strip_prefix("line ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?} in {out:?}"))
        })
        .collect()
}

fn assert_consecutive(n: &[u32], out: &str) {
    for w in n.windows(2) {
        assert_eq!(w[1], w[0] + 1, "lines missing or repeated: {out}");
    }
}

const COUNT: &str = "i=1; while [ $i -le 500 ]; do echo line $i; i=$((i+1)); done";

#[test]
fn rotated_logs_keep_the_newest_lines() {
    require_root!();
    let s = stack_with_busybox();
    let id = s
        .berth(&[
            "create",
            "--name",
            "rot",
            "--log-opt",
            "max-size=2k",
            "--log-opt",
            "max-file=3",
            "busybox",
            "sh",
            "-c",
            COUNT,
        ])
        .ok();
    assert_eq!(id.trim().len(), 64);
    let cfg = s
        .berth(&["inspect", "-f", "{{json .HostConfig.LogConfig}}", "rot"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(cfg.trim()).unwrap();
    assert_eq!(v["Type"], "json-file");
    assert_eq!(v["Config"]["max-size"], "2k");
    assert_eq!(v["Config"]["max-file"], "3");

    s.berth(&["start", "-a", "rot"]).ok();
    let files = log_files(&s, "rot");
    assert!(files.len() <= 3, "{files:?}");
    assert!(files.len() >= 2, "never rotated: {files:?}");
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= 2048 + 200, "{} is {len} bytes", f.display());
    }
    assert!(!Path::new(&format!("{}.3", files[0].display())).exists());

    let out = s.berth(&["logs", "rot"]).ok();
    let n = numbers(&out);
    assert_eq!(n.last(), Some(&500), "{out}");
    assert!(n[0] > 1, "old lines were not rotated away: {out}");
    assert_consecutive(&n, &out);

    let out = s.berth(&["logs", "--tail", "5", "rot"]).ok();
    assert_eq!(numbers(&out), vec![496, 497, 498, 499, 500]);

    // max-size alone: max-file 1, the log is truncated in place.
    s.berth(&[
        "run",
        "--name",
        "trunc",
        "--log-opt",
        "max-size=1k",
        "busybox",
        "sh",
        "-c",
        COUNT,
    ])
    .ok();
    let files = log_files(&s, "trunc");
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(std::fs::metadata(&files[0]).unwrap().len() <= 1024);
    let out = s.berth(&["logs", "trunc"]).ok();
    let n = numbers(&out);
    assert_eq!(n.last(), Some(&500), "{out}");
    assert!(n[0] > 1, "{out}");
    assert_consecutive(&n, &out);
}

#[test]
fn follow_survives_rotation() {
    require_root!();
    let s = stack_with_busybox();
    let spawn = |args: &[&str]| {
        let mut child = s
            .cmd()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            stdout.read_to_string(&mut out).unwrap();
            let mut err = String::new();
            stderr.read_to_string(&mut err).unwrap();
            (out, err)
        });
        (child, reader)
    };
    // A foreground run (an attach) and a `logs -f` follow the log while
    // the shim rotates it.
    let run = spawn(&[
        "run",
        "--name",
        "slow",
        "--log-opt",
        "max-size=1k",
        "--log-opt",
        "max-file=2",
        "busybox",
        "sh",
        "-c",
        "sleep 0.5; i=1; while [ $i -le 120 ]; do echo line $i; i=$((i+1)); sleep 0.02; done",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while s
        .berth(&["inspect", "-f", "{{.State.Running}}", "slow"])
        .stdout
        .trim()
        != "true"
    {
        assert!(Instant::now() < deadline, "the container never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs = spawn(&["logs", "-f", "slow"]);
    for (what, (mut child, reader)) in [("run", run), ("logs -f", logs)] {
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "{what} never ended");
            std::thread::sleep(Duration::from_millis(50));
        };
        let (out, err) = reader.join().unwrap();
        assert!(status.success(), "{what}: {status:?} {err}");
        let n = numbers(&out);
        assert_eq!(n.last(), Some(&120), "{what}: {out} {err}");
        assert_consecutive(&n, &out);
        // It followed well past the first file.
        assert!(n.len() > 60, "{what}: {out}");
        if what == "run" {
            assert_eq!(n[0], 1, "{out}");
        }
    }
    assert_eq!(log_files(&s, "slow").len(), 2);
}

#[test]
fn bad_log_opts_are_refused() {
    require_root!();
    let s = stack_with_busybox();
    for (opts, msg) in [
        (&["max-size=abc"][..], "invalid value for log-opt max-size"),
        (&["max-size=10q"][..], "invalid value for log-opt max-size"),
        (
            &["max-size=2k", "max-file=0"][..],
            "max-file cannot be less than 1",
        ),
        (&["max-file=x"][..], "invalid value for log-opt max-file"),
        (
            &["foo=1"][..],
            "unknown log opt 'foo' for json-file log driver",
        ),
    ] {
        for cmd in ["create", "run"] {
            let mut args = vec![cmd];
            for o in opts {
                args.extend(["--log-opt", o]);
            }
            args.extend(["busybox", "true"]);
            let r = s.berth(&args);
            assert_eq!(r.code, 125, "{args:?}: {r:?}");
            assert!(r.stderr.contains(msg), "{args:?}: {r:?}");
        }
    }
    assert_eq!(s.berth(&["ps", "-aq"]).ok().trim(), "");
    assert_eq!(
        std::fs::read_dir(s.root.join("containers"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}
