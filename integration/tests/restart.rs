//! Containers outlive the daemons: the shim keeps each container's output
//! and exit status while berthd is down.

use std::time::Duration;

use berth_integration::hang::HungFile;
use berth_integration::{require_root, Mode, Stack};
use berth_proto::tasks::v1::Status as TaskStatus;

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

/// Whether `berth ps` lists a container `name` as up (and paused when
/// `paused`).
fn listed_up(s: &Stack, name: &str, paused: bool) -> bool {
    let ps = s.berth(&["ps"]);
    ps.code == 0
        && ps.stdout.lines().any(|l| {
            l.split_whitespace().last() == Some(name)
                && l.contains("Up ")
                && l.contains("(Paused)") == paused
        })
}

fn inspect(s: &Stack, name: &str, format: &str) -> String {
    s.berth(&["inspect", "-f", format, name])
        .ok()
        .trim()
        .to_string()
}

/// One shim whose check hangs (a read of its /proc/PID/cmdline that never
/// returns, as while its mm lock is held by a thread in D state) does not
/// keep berth-tasks from serving the other containers after a restart; it
/// is reported as UNKNOWN until the check finishes, then found running.
#[test]
fn a_hung_shim_check_does_not_hold_up_start_up() {
    require_root!();
    let mut s = Stack::start_with_env(Mode::AllInOne, &[("BERTH_SHIM_CHECK_DEADLINE_MS", "300")]);
    s.import_busybox("busybox");
    for name in ["stuck", "one", "two"] {
        s.berth(&["run", "-d", "--name", name, "busybox", "sleep", "1000"])
            .ok();
    }
    let stuck = s.id_of("stuck");
    let stuck_pid = inspect(&s, "stuck", "{{.State.Pid}}");
    let shim_pid = std::fs::read_to_string(s.bundle(&stuck).join("shim.pid")).unwrap();
    let cmdline = std::path::PathBuf::from(format!("/proc/{}/cmdline", shim_pid.trim()));

    s.kill9();
    // While mounted, whoever reads this file (ps, other tests scanning /proc)
    // waits too; it is released as soon as the checks below are done, and
    // on drop (before the stack's own clean-up, which reads /proc).
    let mut hung = HungFile::mount_over(&cmdline);
    // Start-up itself must not wait for the hung check.
    s.restart();

    s.wait_until("the other containers are listed as up", || {
        listed_up(&s, "one", false) && listed_up(&s, "two", false)
    });
    // berth-tasks serves them: exec, kill and wait, and new containers.
    assert_eq!(s.berth(&["exec", "one", "echo", "hi"]).ok(), "hi\n");
    s.berth(&["kill", "two"]).ok();
    assert_eq!(s.berth(&["wait", "two"]).ok().trim(), "137");
    assert_eq!(s.run(&["busybox", "echo", "new"]).ok(), "new\n");
    s.wait_until("the deadline of the hung check is logged", || {
        s.daemon_logs().contains("did not finish within")
    });
    // The hung one: UNKNOWN in berth-tasks, still running for the gateway,
    // and not signalled blindly.
    assert_eq!(s.task_state(&stuck).status, TaskStatus::Unknown as i32);
    assert_eq!(inspect(&s, "stuck", "{{.State.Status}}"), "running");
    let kill = s.berth(&["kill", "stuck"]);
    assert_ne!(kill.code, 0, "{kill:?}");
    assert!(kill.stderr.contains("not known yet"), "{kill:?}");

    hung.release();
    s.wait_until("the hung task is found running", || {
        s.task_state(&stuck).status == TaskStatus::Running as i32
    });
    assert_eq!(s.task_state(&stuck).pid.to_string(), stuck_pid);
    assert_eq!(inspect(&s, "stuck", "{{.State.Pid}}"), stuck_pid);
    s.berth(&["kill", "stuck"]).ok();
    assert_eq!(s.berth(&["wait", "stuck"]).ok().trim(), "137");
    s.berth(&["rm", "-f", "stuck", "one", "two"]).ok();
}

/// Waits until the shim of container `id` has recorded its exit.
fn wait_exit_recorded(s: &Stack, id: &str) {
    let exit = s.bundle(id).join("exit");
    s.wait_until(&format!("{} exists", exit.display()), || exit.exists());
}

fn signal(pid: &str, sig: nix::sys::signal::Signal) {
    let pid: i32 = pid.parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

/// After kill -9 of the daemons, every container is found in the state it
/// is really in: running, paused, exited during the downtime (code kept),
/// restarted by its policy, created, or exited before (code kept, also for
/// an exit handled just before the kill).
fn recovers_every_state(mode: Mode) {
    use nix::sys::signal::Signal;
    let mut s = Stack::start(mode);
    s.import_busybox("busybox");
    let run = |args: &[&str]| {
        let mut a = vec!["run", "-d"];
        a.extend_from_slice(args);
        s.berth(&a).ok();
    };
    run(&["--name", "up", "busybox", "sleep", "1000"]);
    run(&["--name", "paused", "busybox", "sleep", "1000"]);
    s.berth(&["pause", "paused"]).ok();
    let trap = "trap 'exit 3' TERM; while true; do sleep 0.1; done";
    run(&["--name", "exit3", "busybox", "sh", "-c", trap]);
    run(&["--name", "killed", "busybox", "sleep", "1000"]);
    run(&[
        "--name",
        "always",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "1000",
    ]);
    s.berth(&["create", "--name", "created", "busybox", "true"])
        .ok();
    // Its exit is handled (and its task deleted) just before the kill.
    run(&["--name", "done", "busybox", "sh", "-c", "exit 5"]);
    assert_eq!(s.berth(&["wait", "done"]).ok().trim(), "5");

    let pid = |s: &Stack, name: &str| inspect(s, name, "{{.State.Pid}}");
    let (up_pid, paused_pid) = (pid(&s, "up"), pid(&s, "paused"));
    let (exit3_pid, killed_pid, always_pid) =
        (pid(&s, "exit3"), pid(&s, "killed"), pid(&s, "always"));
    let ids: Vec<String> = ["exit3", "killed", "always"]
        .iter()
        .map(|n| s.id_of(n))
        .collect();

    s.kill9();
    // Exits while nothing of berth but the shims runs.
    signal(&exit3_pid, Signal::SIGTERM);
    signal(&killed_pid, Signal::SIGKILL);
    signal(&always_pid, Signal::SIGKILL);
    for id in &ids {
        wait_exit_recorded(&s, id);
    }
    s.restart();

    s.wait_until("the running containers are listed", || {
        listed_up(&s, "up", false) && listed_up(&s, "paused", true)
    });
    assert_eq!(pid(&s, "up"), up_pid);
    assert_eq!(pid(&s, "paused"), paused_pid);
    assert_eq!(inspect(&s, "paused", "{{.State.Status}}"), "paused");
    assert_eq!(s.berth(&["wait", "exit3"]).ok().trim(), "3");
    assert_eq!(s.berth(&["wait", "killed"]).ok().trim(), "137");
    assert_eq!(inspect(&s, "exit3", "{{.State.Status}}"), "exited");
    assert_eq!(inspect(&s, "done", "{{.State.Status}}"), "exited");
    assert_eq!(inspect(&s, "done", "{{.State.ExitCode}}"), "5");
    assert_eq!(inspect(&s, "created", "{{.State.Status}}"), "created");
    s.wait_until("the restart policy starts `always` again", || {
        let p = pid(&s, "always");
        listed_up(&s, "always", false) && p != always_pid && p != "0"
    });

    // Still managed: unpause, exec, kill reach them.
    s.berth(&["unpause", "paused"]).ok();
    assert_eq!(s.berth(&["exec", "paused", "echo", "ok"]).ok(), "ok\n");
    for name in ["up", "paused"] {
        s.berth(&["kill", name]).ok();
        assert_eq!(s.berth(&["wait", name]).ok().trim(), "137");
    }
    s.berth(&[
        "rm", "-f", "up", "paused", "exit3", "killed", "always", "created", "done",
    ])
    .ok();
}

#[test]
fn every_container_state_is_recovered_after_kill9_all_in_one() {
    require_root!();
    recovers_every_state(Mode::AllInOne);
}

#[test]
fn every_container_state_is_recovered_after_kill9_split() {
    require_root!();
    recovers_every_state(Mode::Split);
}

/// A stop signal ends berthd while containers run: the streams that never
/// end by themselves (the gateway's Wait on each running task) are cut after
/// a grace period. The containers keep running and are found again.
fn stops_while_containers_run(mode: Mode) {
    require_root!();
    let mut s = Stack::start(mode);
    s.import_busybox("busybox");
    s.berth(&[
        "run",
        "-d",
        "--name",
        "stays",
        "--network",
        "none",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    let pid = inspect(&s, "stays", "{{.State.Pid}}");
    assert!(
        s.stop_daemons_within(Duration::from_secs(60)),
        "berthd did not exit on SIGTERM while a container ran; logs:\n{}",
        s.daemon_logs()
    );
    let alive = |pid: &str| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid.parse().unwrap()), None).is_ok()
    };
    assert!(alive(&pid), "the container died with berthd");
    s.restart();
    assert!(listed_up(&s, "stays", false));
    assert_eq!(inspect(&s, "stays", "{{.State.Pid}}"), pid);
    s.berth(&["rm", "-f", "stays"]).ok();
}

#[test]
fn sigterm_stops_all_in_one_berthd_while_containers_run() {
    stops_while_containers_run(Mode::AllInOne);
}

#[test]
fn sigterm_stops_split_services_while_containers_run() {
    stops_while_containers_run(Mode::Split);
}
