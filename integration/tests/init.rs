//! End-to-end: `--init`, a reaper as PID 1 that forwards signals, reaps
//! orphans and passes the command's exit status on.

use std::time::{Duration, Instant};

use berth_integration::{require_root, Mode, Stack};

fn stack_with_busybox() -> Stack {
    let s = Stack::start(Mode::AllInOne);
    s.import_busybox("busybox");
    s
}

#[test]
fn init_is_pid_1_and_the_command_its_child() {
    require_root!();
    let s = stack_with_busybox();
    let r = s.run(&[
        "--init",
        "busybox",
        "sh",
        "-c",
        "cat /proc/1/comm; tr '\\0' ' ' </proc/1/cmdline; echo; echo ppid=$PPID pid=$$",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "berth-init", "{r:?}");
    // The command line names the command, never a host path of the shim.
    assert!(
        lines[1].starts_with("berth-init -- sh -c cat /proc/1/comm"),
        "{r:?}"
    );
    assert!(!lines[1].contains("--bundle"), "{r:?}");
    assert_eq!(lines[2], "ppid=1 pid=2", "{r:?}");

    // Without --init the command is PID 1 itself.
    let r = s.run(&["busybox", "sh", "-c", "echo $$; cat /proc/1/comm; true"]);
    assert_eq!(r.stdout, "1\nsh\n", "{r:?}");
}

#[test]
fn init_passes_on_exit_codes_and_exec_errors() {
    require_root!();
    let s = stack_with_busybox();
    let r = s.run(&["--init", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(r.code, 3, "{r:?}");
    // Killed by a signal: 128+N, as docker-init reports it.
    let r = s.run(&["--init", "busybox", "sh", "-c", "kill -9 $$"]);
    assert_eq!(r.code, 137, "{r:?}");
    // A command that cannot be found fails the start like without --init.
    let r = s.run(&["--init", "busybox", "no-such-command"]);
    assert_eq!(r.code, 127, "{r:?}");
    assert!(
        r.stderr
            .contains("exec: \"no-such-command\": executable file not found in $PATH"),
        "{r:?}"
    );
}

#[test]
fn init_forwards_stop_signals_to_the_command() {
    require_root!();
    let s = stack_with_busybox();
    // `sleep` as PID 1 would ignore SIGTERM (no handler in PID 1 of a pid
    // namespace) and be killed after the timeout with 137; under the init
    // it is a normal process, gets the forwarded SIGTERM and dies of it.
    s.berth(&[
        "run", "-d", "--init", "--name", "fwd", "busybox", "sleep", "1000",
    ])
    .ok();
    let t = Instant::now();
    s.berth(&["stop", "-t", "30", "fwd"]).ok();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "stop waited for the timeout: the signal was not forwarded"
    );
    let code = s
        .berth(&["inspect", "-f", "{{.State.ExitCode}}", "fwd"])
        .ok();
    assert_eq!(code.trim(), "143");
    let init = s
        .berth(&["inspect", "-f", "{{.HostConfig.Init}}", "fwd"])
        .ok();
    assert_eq!(init.trim(), "true");

    // Without --init, stop needs SIGKILL after the timeout.
    s.berth(&["run", "-d", "--name", "nofwd", "busybox", "sleep", "1000"])
        .ok();
    s.berth(&["stop", "-t", "1", "nofwd"]).ok();
    let code = s
        .berth(&["inspect", "-f", "{{.State.ExitCode}}", "nofwd"])
        .ok();
    assert_eq!(code.trim(), "137");
    let init = s
        .berth(&["inspect", "-f", "{{json .HostConfig.Init}}", "nofwd"])
        .ok();
    assert_eq!(init.trim(), "null");
}

#[test]
fn init_reaps_orphans() {
    require_root!();
    let s = stack_with_busybox();
    // The inner shell backgrounds a sleep and execs a shorter one: the
    // background sleep is orphaned, re-parented to PID 1 and, when it exits,
    // must be reaped by the init rather than stay a zombie.
    let r = s.run(&[
        "--init",
        "busybox",
        "sh",
        "-c",
        "sh -c 'sleep 0.3 & exec true'; sleep 1.5; \
         for p in /proc/[0-9]*; do s=$(cut -d' ' -f3 $p/stat); echo \"$(basename $p) $s\"; done",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        !r.stdout.lines().any(|l| l.ends_with(" Z")),
        "zombie left: {r:?}"
    );
    // The check sees the processes it expects: the init and the shell.
    assert!(r.stdout.lines().any(|l| l == "1 S"), "{r:?}");
}

#[test]
fn init_with_a_terminal_and_exec() {
    require_root!();
    let s = stack_with_busybox();
    // The command owns the terminal as its foreground process group.
    let r = s.berth(&[
        "run",
        "--rm",
        "-t",
        "--init",
        "busybox",
        "sh",
        "-c",
        "tty; [ \"$(cut -d' ' -f8 /proc/$$/stat)\" = \"$(cut -d' ' -f5 /proc/$$/stat)\" ] && echo foreground",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("/dev/pts/0"), "{r:?}");
    assert!(r.stdout.contains("foreground"), "{r:?}");

    s.berth(&[
        "run", "-d", "--init", "--name", "ex", "busybox", "sleep", "1000",
    ])
    .ok();
    let r = s.berth(&["exec", "ex", "sh", "-c", "cat /proc/1/comm; exit 4"]);
    assert_eq!(r.code, 4, "{r:?}");
    assert_eq!(r.stdout, "berth-init\n", "{r:?}");
    s.berth(&["rm", "-f", "ex"]).ok();
}
