//! End-to-end: events, restart policies, restart, rename, prune, env files,
//! read-only root filesystems, logs --since/--until, ps before=/since=.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_integration::{require_root, Mode, Stack};

fn stack_with_busybox() -> Stack {
    let s = Stack::start(Mode::AllInOne);
    s.import_busybox("busybox");
    s
}

fn inspect(s: &Stack, format: &str, c: &str) -> String {
    s.berth(&["inspect", "-f", format, c])
        .ok()
        .trim()
        .to_string()
}

/// Now as Unix seconds with nanoseconds ("1700000000.123456789").
fn unix_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Polls `f` until it returns true; panics with `what` after a minute.
#[track_caller]
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn events_record_a_containers_life_and_image_changes() {
    require_root!();
    let s = stack_with_busybox();
    let since = unix_now();
    let r = s.run(&[
        "--name", "ev1", "-l", "team=a", "busybox", "sh", "-c", "exit 3",
    ]);
    assert_eq!(r.code, 3, "{r:?}");
    s.berth(&["tag", "busybox", "evtag:1"]).ok();
    s.berth(&["rmi", "evtag:1"]).ok();
    let until = unix_now();

    let out = s
        .berth(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "container=ev1",
        ])
        .ok();
    let lines: Vec<&str> = out.lines().collect();
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l.split(' ').nth(2).unwrap_or(""))
        .collect();
    assert_eq!(actions, ["create", "start", "die", "destroy"], "{out}");
    for l in &lines {
        // "2024-01-02T03:04:05.123456789Z container start <id> (...)"
        let time = l.split(' ').next().unwrap();
        assert_eq!(time.len(), 30, "{l}");
        assert!(time.ends_with('Z'), "{l}");
        assert!(l.contains(" container "), "{l}");
        assert!(l.contains("image=busybox"), "{l}");
        assert!(l.contains("name=ev1"), "{l}");
        assert!(l.contains("team=a"), "{l}");
    }
    assert!(lines[2].contains("exitCode=3"), "{out}");

    // Filters by type and event; templates.
    let out = s
        .berth(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "type=image",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
        ])
        .ok();
    assert_eq!(out, "image tag evtag:1\nimage untag evtag:1\n");
    let out = s
        .berth(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "event=die",
            "--filter",
            "label=team=a",
            "--format",
            "{{.Action}} {{.Actor.Attributes.exitCode}}",
        ])
        .ok();
    assert_eq!(out, "die 3\n");
    // Nothing before `since`.
    let out = s
        .berth(&["events", "--since", &until, "--until", &unix_now()])
        .ok();
    assert_eq!(out, "");
    // Without --until the stream stays open and goes on with live events.
    let live_since = unix_now();
    let mut child = s
        .cmd()
        .args([
            "events",
            "--since",
            &live_since,
            "--filter",
            "container=live1",
            "--format",
            "{{.Action}}",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    s.run(&["--name", "live1", "busybox", "true"]).ok();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("destroy") {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(seen, ["create", "start", "die", "destroy"]);

    let r = s.berth(&["events", "--filter", "bogus=1", "--until", &until]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("invalid filter 'bogus'"), "{r:?}");
}

#[test]
fn on_failure_restarts_up_to_the_limit() {
    require_root!();
    let s = stack_with_busybox();
    s.berth(&[
        "run",
        "-d",
        "--name",
        "rf",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "exit 1",
    ])
    .ok();
    assert_eq!(
        inspect(
            &s,
            "{{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}",
            "rf"
        ),
        "on-failure:2"
    );
    eventually("two restarts, then exited", || {
        inspect(&s, "{{.State.Status}} {{.RestartCount}}", "rf") == "exited 2"
    });
    // wait sees the final exit, and no third restart follows.
    assert_eq!(s.berth(&["wait", "rf"]).ok().trim(), "1");
    assert_eq!(inspect(&s, "{{.RestartCount}}", "rf"), "2");
    let r = s.berth(&["run", "--rm", "--restart", "always", "busybox", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        r.stderr.contains("Conflicting options: --restart and --rm"),
        "{r:?}"
    );
    let r = s.berth(&["create", "--restart", "sometimes", "busybox", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("invalid restart policy"), "{r:?}");
    s.berth(&["rm", "rf"]).ok();
}

#[test]
fn always_restarts_until_stopped() {
    require_root!();
    let s = stack_with_busybox();
    s.berth(&[
        "run",
        "-d",
        "--name",
        "al",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "echo up; exit 0",
    ])
    .ok();
    eventually("two restarts", || {
        inspect(&s, "{{.RestartCount}}", "al")
            .parse::<u32>()
            .is_ok_and(|n| n >= 2)
    });
    s.berth(&["stop", "-t", "1", "al"]).ok();
    assert_eq!(inspect(&s, "{{.State.Status}}", "al"), "exited");
    let count = inspect(&s, "{{.RestartCount}}", "al");
    // A stop is final: the policy does not bring it back.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inspect(&s, "{{.State.Status}}", "al"), "exited");
    assert_eq!(inspect(&s, "{{.RestartCount}}", "al"), count);
    // The events show the restarts as starts and dies.
    let out = s
        .berth(&[
            "events",
            "--since",
            "1h",
            "--until",
            &unix_now(),
            "--filter",
            "container=al",
            "--filter",
            "event=start",
            "--format",
            "{{.Action}}",
        ])
        .ok();
    assert!(out.lines().count() >= 2, "{out}");
    s.berth(&["rm", "-f", "al"]).ok();

    // rm -f of a container that keeps restarting: it is gone for good.
    s.berth(&[
        "run",
        "-d",
        "--name",
        "al2",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "exit 2",
    ])
    .ok();
    eventually("a restart", || {
        inspect(&s, "{{.RestartCount}}", "al2") != "0"
    });
    s.berth(&["rm", "-f", "al2"]).ok();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.berth(&["inspect", "al2"]).code, 1);
    assert!(!s.berth(&["ps", "-a"]).ok().contains("al2"));
    // A wait through restarts ends when the container is stopped.
    s.berth(&[
        "run",
        "-d",
        "--name",
        "al4",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "exit 2",
    ])
    .ok();
    let waiter = s
        .cmd()
        .args(["wait", "al4"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("a restart", || {
        inspect(&s, "{{.RestartCount}}", "al4") != "0"
    });
    s.berth(&["stop", "al4"]).ok();
    let mut waiter = waiter;
    let deadline = Instant::now() + Duration::from_secs(60);
    while waiter.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = waiter.kill();
            panic!("`wait` did not return after `stop`");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(["2", "137", "143"].contains(&code.as_str()), "{code}");
    s.berth(&["rm", "al4"]).ok();
    // kill ends the restarts too.
    s.berth(&[
        "run",
        "-d",
        "--name",
        "al3",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    s.berth(&["kill", "al3"]).ok();
    assert_eq!(s.berth(&["wait", "al3"]).ok().trim(), "137");
    assert_eq!(
        inspect(&s, "{{.State.Status}} {{.RestartCount}}", "al3"),
        "exited 0"
    );
    s.berth(&["rm", "al3"]).ok();
}

#[test]
fn policies_apply_when_the_daemon_starts_again() {
    require_root!();
    let mut s = stack_with_busybox();
    for (name, policy) in [("pa", "always"), ("pu", "unless-stopped")] {
        s.berth(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            policy,
            "busybox",
            "sleep",
            "1000",
        ])
        .ok();
        s.berth(&["stop", "-t", "0", name]).ok();
    }
    s.kill9_and_restart();
    eventually("the always container running again", || {
        inspect(&s, "{{.State.Status}}", "pa") == "running"
    });
    assert_eq!(inspect(&s, "{{.State.Status}}", "pu"), "exited");
    s.berth(&["rm", "-f", "pa", "pu"]).ok();
}

#[test]
fn restart_rename_and_prune() {
    require_root!();
    let s = stack_with_busybox();
    s.berth(&["run", "-d", "--name", "rs", "busybox", "sleep", "1000"])
        .ok();
    let pid = inspect(&s, "{{.State.Pid}}", "rs");
    assert_eq!(s.berth(&["restart", "-t", "1", "rs"]).ok(), "rs\n");
    assert_eq!(inspect(&s, "{{.State.Status}}", "rs"), "running");
    assert_ne!(inspect(&s, "{{.State.Pid}}", "rs"), pid);
    let r = s.berth(&["restart", "nosuch"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("No such container: nosuch"), "{r:?}");

    // rename
    s.berth(&["create", "--name", "ra", "busybox", "true"]).ok();
    let rb = s.berth(&["create", "--name", "rb", "busybox", "true"]).ok();
    s.berth(&["rename", "ra", "rc"]).ok();
    assert_eq!(inspect(&s, "{{.Name}}", "rc"), "/rc");
    assert_eq!(s.berth(&["inspect", "ra"]).code, 1);
    let r = s.berth(&["rename", "rc", "rb"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "Error response from daemon: Conflict. The container name \"/rb\" is already in use by container \"{}\"",
            rb.trim()
        )),
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains("Error: failed to rename container named rc"),
        "{r:?}"
    );

    // prune: only stopped containers with the label go.
    s.berth(&["run", "--name", "p1", "-l", "prune=yes", "busybox", "true"])
        .ok();
    let p1 = inspect(&s, "{{.Id}}", "p1");
    s.berth(&["run", "--name", "p2", "busybox", "true"]).ok();
    s.berth(&[
        "run",
        "-d",
        "--name",
        "p3",
        "-l",
        "prune=yes",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    let out = s
        .berth(&["container", "prune", "-f", "--filter", "label=prune=yes"])
        .ok();
    assert!(
        out.starts_with(&format!(
            "Deleted Containers:\n{p1}\n\nTotal reclaimed space: "
        )),
        "{out}"
    );
    assert_eq!(s.berth(&["inspect", "p1"]).code, 1);
    assert_eq!(inspect(&s, "{{.State.Status}}", "p2"), "exited");
    assert_eq!(inspect(&s, "{{.State.Status}}", "p3"), "running");
    let out = s
        .berth(&["container", "prune", "-f", "--filter", "label=nothing"])
        .ok();
    assert_eq!(out, "Total reclaimed space: 0B\n");
    s.berth(&["rm", "-f", "rs", "rc", "rb", "p2", "p3"]).ok();
}

#[test]
fn env_file_read_only_logs_window_and_ps_order() {
    require_root!();
    let s = stack_with_busybox();
    let env_file = s.dir.join("app.env");
    std::fs::write(&env_file, "# settings\nA=1\n\n  B=from file\nC=x=y\n").unwrap();
    let out = s
        .run(&[
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            "B=flag",
            "busybox",
            "env",
        ])
        .ok();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"A=1"), "{out}");
    assert!(lines.contains(&"B=flag"), "{out}");
    assert!(lines.contains(&"C=x=y"), "{out}");
    assert!(!out.contains("settings"), "{out}");
    let r = s.run(&["--env-file", "/nonexistent/env", "busybox", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        r.stderr
            .contains("open /nonexistent/env: no such file or directory"),
        "{r:?}"
    );

    // --read-only: the root file system refuses writes.
    let r = s.run(&["--read-only", "busybox", "touch", "/x"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("Read-only file system"), "{r:?}");
    let r = s.run(&["--read-only", "busybox", "touch", "/tmp/x"]);
    assert_eq!(r.code, 1, "{r:?}");
    s.berth(&["create", "--name", "ro", "--read-only", "busybox", "true"])
        .ok();
    assert_eq!(inspect(&s, "{{.HostConfig.ReadonlyRootfs}}", "ro"), "true");
    assert_eq!(s.run(&["busybox", "touch", "/x"]).code, 0);

    // logs --since / --until
    s.berth(&["run", "--name", "lg", "busybox", "echo", "line"])
        .ok();
    let between = unix_now();
    s.berth(&["start", "-a", "lg"]).ok();
    assert_eq!(s.berth(&["logs", "lg"]).ok(), "line\nline\n");
    assert_eq!(s.berth(&["logs", "--since", &between, "lg"]).ok(), "line\n");
    assert_eq!(s.berth(&["logs", "--until", &between, "lg"]).ok(), "line\n");
    assert_eq!(
        s.berth(&["logs", "--since", "1h", "lg"]).ok(),
        "line\nline\n"
    );
    let r = s.berth(&["logs", "--since", "tomorrow", "lg"]);
    assert_eq!(r.code, 1, "{r:?}");

    // ps --filter before= / since=
    for n in ["o1", "o2", "o3"] {
        s.berth(&["create", "--name", n, "busybox", "true"]).ok();
    }
    let names = |f: &str| {
        s.berth(&["ps", "-a", "--filter", f, "--format", "{{.Names}}"])
            .ok()
            .lines()
            .filter(|l| l.starts_with('o'))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(names("since=o1"), ["o3", "o2"]);
    assert_eq!(names("before=o3"), ["o2", "o1"]);
    s.berth(&["rm", "ro", "lg", "o1", "o2", "o3"]).ok();
}
