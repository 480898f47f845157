//! End-to-end with every service in its own process.

use berth_integration::{require_root, Mode, Stack};

#[test]
fn split_mode_runs_containers() {
    require_root!();
    let s = Stack::start(Mode::Split);
    s.import_busybox("busybox");
    assert_eq!(s.run(&["busybox", "echo", "split"]).ok(), "split\n");
    assert_eq!(s.run(&["busybox", "sh", "-c", "exit 4"]).code, 4);
    s.berth(&["run", "-d", "--name", "bg", "busybox", "sleep", "1000"])
        .ok();
    s.berth(&["kill", "bg"]).ok();
    assert_eq!(s.berth(&["wait", "bg"]).ok().trim(), "137");
    s.berth(&["rm", "bg"]).ok();
}
