//! Containers outlive the daemons: the shim keeps each container's output
//! and exit status while berthd is down.

use std::time::Duration;

use berth_integration::{require_root, Mode, Stack};

fn survives(mode: Mode) {
    let mut s = Stack::start(mode);
    s.import_busybox("busybox");
    s.berth(&["run", "-d", "--name", "long", "busybox", "sleep", "1000"])
        .ok();
    s.berth(&[
        "run",
        "-d",
        "--name",
        "short",
        "busybox",
        "sh",
        "-c",
        "echo before; sleep 1; echo after; exit 7",
    ])
    .ok();
    let pid_before = s.berth(&["inspect", "-f", "{{.State.Pid}}", "long"]).ok();

    s.kill9_and_restart();
    // "short" finishes while nothing of berth but its shim is watching.
    std::thread::sleep(Duration::from_millis(1500));

    assert_eq!(s.berth(&["wait", "short"]).ok().trim(), "7");
    assert_eq!(s.berth(&["logs", "short"]).ok(), "before\nafter\n");
    let ps = s.berth(&["ps"]).ok();
    assert!(
        ps.lines().any(|l| l.contains("long") && l.contains("Up ")),
        "{ps}"
    );
    assert_eq!(
        s.berth(&["inspect", "-f", "{{.State.Pid}}", "long"]).ok(),
        pid_before
    );
    // And it is still managed: kill reaches it, the exit is recorded.
    s.berth(&["kill", "long"]).ok();
    assert_eq!(s.berth(&["wait", "long"]).ok().trim(), "137");
    s.berth(&["rm", "long", "short"]).ok();
}

#[test]
fn containers_survive_kill9_of_all_in_one_berthd() {
    require_root!();
    survives(Mode::AllInOne);
}

#[test]
fn containers_survive_kill9_of_split_services() {
    require_root!();
    survives(Mode::Split);
}
