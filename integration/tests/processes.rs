//! End-to-end: interactive I/O (-i, -t, attach, detach keys), exec, pause,
//! top and stats through the real CLI, all-in-one.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_integration::{require_root, unique, Mode, Stack};

fn stack_with_busybox() -> Stack {
    let s = Stack::start(Mode::AllInOne);
    s.import_busybox("busybox");
    s
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn inspect(s: &Stack, name: &str, field: &str) -> String {
    s.berth(&["inspect", "--format", &format!("{{{{{field}}}}}"), name])
        .ok()
        .trim()
        .to_string()
}

/// `berth ARGS` with a pseudo-terminal as stdin, stdout and stderr.
struct PtyCli {
    master: std::fs::File,
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
}

impl PtyCli {
    fn spawn(s: &Stack, args: &[&str]) -> PtyCli {
        // A known size, which the CLI passes on to the container's terminal.
        let size = nix::pty::Winsize {
            ws_row: 31,
            ws_col: 97,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let child = s
            .cmd()
            .args(args)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .expect("spawn berth");
        let master = std::fs::File::from(pty.master);
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        PtyCli { master, child, out }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn expect(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "never saw {needle:?} in {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, data: &[u8]) {
        self.master.write_all(data).unwrap();
    }

    fn wait(mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "berth did not exit: {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn stdin_is_piped_with_run_i() {
    require_root!();
    let s = stack_with_busybox();
    let r = s.berth_stdin(&["run", "--rm", "-i", "busybox", "cat"], b"hi\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "hi\n");
    // Larger input, several lines, and the exit code of the container.
    let input: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let r = s.berth_stdin(
        &["run", "--rm", "-i", "busybox", "sh", "-c", "wc -l; exit 4"],
        input.as_bytes(),
    );
    assert_eq!(r.code, 4, "{r:?}");
    assert_eq!(r.stdout.trim(), "2000");
    // Without -i the container's stdin is empty.
    let r = s.berth_stdin(&["run", "--rm", "busybox", "cat"], b"ignored\n");
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
    // start -a -i of a created (and later of an exited) container.
    let name = unique("sai");
    s.berth(&["create", "-i", "--name", &name, "busybox", "cat"])
        .ok();
    for word in ["first\n", "second\n"] {
        let r = s.berth_stdin(&["start", "-a", "-i", &name], word.as_bytes());
        assert_eq!((r.code, r.stdout.as_str()), (0, word), "{r:?}");
    }
    s.berth(&["rm", &name]).ok();
    // A command that cannot run: the exit code, nothing left waiting.
    let r = s.berth_stdin(&["run", "--rm", "-i", "busybox", "nosuchcmd"], b"x\n");
    assert_eq!(r.code, 127, "{r:?}");
    // inspect shows the flags.
    let name = unique("cfg");
    s.berth(&["create", "-i", "-t", "--name", &name, "busybox", "sh"])
        .ok();
    assert_eq!(inspect(&s, &name, ".Config.Tty"), "true");
    assert_eq!(inspect(&s, &name, ".Config.OpenStdin"), "true");
    s.berth(&["rm", &name]).ok();
}

#[test]
fn run_it_with_a_real_terminal() {
    require_root!();
    let s = stack_with_busybox();
    let name = unique("tty");
    let mut cli = PtyCli::spawn(
        &s,
        &["run", "-it", "--rm", "--name", &name, "busybox", "sh"],
    );
    cli.expect("# ");
    cli.send(b"echo $((6*7))\n");
    cli.expect("42");
    cli.send(b"tty\n");
    cli.expect("/dev/pts/0");
    // The local terminal's size reached the container.
    cli.send(b"stty size\n");
    cli.expect("31 97");
    cli.send(b"exit 3\n");
    assert_eq!(cli.wait(), Some(3));
}

#[test]
fn detach_keys_leave_the_container_running() {
    require_root!();
    let s = stack_with_busybox();
    let name = unique("detach");
    s.berth(&["run", "-dit", "--name", &name, "busybox", "sh"])
        .ok();
    let mut cli = PtyCli::spawn(&s, &["attach", &name]);
    cli.send(b"echo one$((1+1))\n");
    cli.expect("one2");
    cli.send(&[0x10, 0x11]); // ctrl-p ctrl-q
    assert_eq!(cli.wait(), Some(0));
    assert_eq!(inspect(&s, &name, ".State.Running"), "true");
    // Attach again, with other keys.
    let mut cli = PtyCli::spawn(&s, &["attach", "--detach-keys", "ctrl-x,y", &name]);
    cli.send(b"echo two$((2+3))\n");
    cli.expect("two5");
    cli.send(&[0x18, b'y']);
    assert_eq!(cli.wait(), Some(0));
    assert_eq!(inspect(&s, &name, ".State.Running"), "true");
    // Attach to a stopped container: docker's message.
    s.berth(&["kill", &name]).ok();
    wait_until("the container to stop", || {
        inspect(&s, &name, ".State.Running") == "false"
    });
    let r = s.berth(&["attach", &name]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("You cannot attach to a stopped container, start it first"),
        "{r:?}"
    );
    s.berth(&["rm", "-f", &name]).ok();
}

#[test]
fn exec_runs_in_the_container() {
    require_root!();
    let s = stack_with_busybox();
    let name = unique("exec");
    s.berth(&["run", "-d", "--name", &name, "busybox", "sleep", "1000"])
        .ok();
    let r = s.berth(&["exec", &name, "echo", "hi"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "hi\n"), "{r:?}");
    // Same pid namespace: the init is PID 1.
    assert!(s.berth(&["exec", &name, "ps"]).ok().contains("sleep 1000"));
    let r = s.berth(&["exec", "-e", "FOO=bar", &name, "sh", "-c", "echo $FOO"]);
    assert_eq!(r.stdout, "bar\n", "{r:?}");
    assert_eq!(
        s.berth(&["exec", "-w", "/tmp", &name, "pwd"]).ok(),
        "/tmp\n"
    );
    assert_eq!(
        s.berth(&["exec", "-u", "nobody", &name, "id", "-u"]).ok(),
        "65534\n"
    );
    assert_eq!(
        s.berth(&["exec", "-u", "app:staff", &name, "id", "-g"])
            .ok(),
        "50\n"
    );
    assert_eq!(s.berth(&["exec", &name, "sh", "-c", "exit 3"]).code, 3);
    let r = s.berth(&["exec", &name, "/etc/passwd"]);
    assert_eq!(r.code, 126, "{r:?}");
    assert!(r.stderr.contains("permission denied"), "{r:?}");
    let r = s.berth(&["exec", &name, "nosuchcmd"]);
    assert_eq!(r.code, 127, "{r:?}");
    assert!(
        r.stderr.contains("executable file not found in $PATH"),
        "{r:?}"
    );
    // stderr apart from stdout.
    let r = s.berth(&["exec", &name, "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(r.stdout, "out\n");
    assert!(r.stderr.contains("err"), "{r:?}");
    // stdin with -i.
    let r = s.berth_stdin(&["exec", "-i", &name, "cat"], b"piped\n");
    assert_eq!(r.stdout, "piped\n", "{r:?}");
    // -d returns at once; the process runs on.
    let r = s.berth(&[
        "exec",
        "-d",
        &name,
        "sh",
        "-c",
        "sleep 0.3; touch /tmp/done",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    wait_until("the detached exec", || {
        s.berth(&["exec", &name, "ls", "/tmp/done"]).code == 0
    });
    // A terminal of its own.
    let mut cli = PtyCli::spawn(&s, &["exec", "-it", &name, "sh"]);
    cli.send(b"tty; stty size; exit 5\n");
    cli.expect("/dev/pts/");
    cli.expect("31 97");
    assert_eq!(cli.wait(), Some(5));
    // Detaching from an exec with a terminal leaves its process running.
    let mut cli = PtyCli::spawn(&s, &["exec", "-it", &name, "sh"]);
    cli.send(b"sleep 777\n");
    wait_until("the exec's sleep", || {
        s.berth(&["top", &name]).stdout.contains("sleep 777")
    });
    cli.send(&[0x10, 0x11]);
    assert_eq!(cli.wait(), Some(0));
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.berth(&["top", &name]).ok().contains("sleep 777"));
    // Other detach keys; the default ones are then plain input.
    let mut cli = PtyCli::spawn(
        &s,
        &["exec", "-it", "--detach-keys", "ctrl-x,y", &name, "sh"],
    );
    cli.send(b"echo go$((4+4))\n");
    cli.expect("go8");
    // (ctrl-p recalls the last line in busybox's sh; ctrl-c drops it.)
    cli.send(&[0x10, 0x11]);
    std::thread::sleep(Duration::from_millis(200));
    cli.send(&[0x03]);
    cli.send(b"sleep 778\n");
    wait_until("the second exec's sleep", || {
        s.berth(&["top", &name]).stdout.contains("sleep 778")
    });
    cli.send(&[0x18, b'y']);
    assert_eq!(cli.wait(), Some(0));
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.berth(&["top", &name]).ok().contains("sleep 778"));
    let r = s.berth(&["exec", "-it", "--detach-keys", "ctrl-1", &name, "true"]);
    assert_eq!(r.code, 1, "{r:?}");
    let r = s.berth(&["exec", "-i", "--detach-keys", "ctrl-1", &name, "true"]);
    assert!(
        r.stderr.contains("Invalid detach keys (ctrl-1) provided"),
        "{r:?}"
    );
    // A stopped container.
    s.berth(&["kill", &name]).ok();
    wait_until("the container to stop", || {
        inspect(&s, &name, ".State.Running") == "false"
    });
    let r = s.berth(&["exec", &name, "echo", "hi"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not running"), "{r:?}");
    s.berth(&["rm", "-f", &name]).ok();
}

#[test]
fn killing_the_cli_does_not_stop_the_container() {
    require_root!();
    let s = stack_with_busybox();
    let name = unique("k9");
    let cli = PtyCli::spawn(&s, &["run", "-it", "--name", &name, "busybox", "sh"]);
    cli.expect("# ");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cli.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = cli.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(inspect(&s, &name, ".State.Running"), "true");
    // An exec's CLI killed mid-way.
    let mut exec = s
        .cmd()
        .args(["exec", "-i", &name, "sleep", "1000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the exec to run", || {
        s.berth(&["top", &name]).stdout.contains("sleep 1000")
    });
    exec.kill().unwrap();
    let _ = exec.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(inspect(&s, &name, ".State.Running"), "true");
    assert_eq!(s.berth(&["exec", &name, "echo", "ok"]).ok(), "ok\n");
    s.berth(&["rm", "-f", &name]).ok();
}

#[test]
fn pause_and_unpause() {
    require_root!();
    let s = stack_with_busybox();
    let name = unique("pause");
    s.berth(&[
        "run",
        "-d",
        "--name",
        &name,
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done",
    ])
    .ok();
    let lines = || s.berth(&["logs", &name]).stdout.lines().count();
    wait_until("output", || lines() > 2);
    let pid = inspect(&s, &name, ".State.Pid");
    let r = s.berth(&["pause", &name]);
    assert_eq!((r.code, r.stdout.trim()), (0, name.as_str()), "{r:?}");
    assert_eq!(inspect(&s, &name, ".State.Paused"), "true");
    assert_eq!(inspect(&s, &name, ".State.Status"), "paused");
    let ps = s.berth(&["ps", "--filter", &format!("name={name}")]).ok();
    assert!(ps.contains("(Paused)"), "{ps}");
    // Frozen: no more output (after what was already in the pipe).
    std::thread::sleep(Duration::from_millis(200));
    let before = lines();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(), before, "a paused container kept running");
    // exec and pause again are refused.
    let r = s.berth(&["exec", &name, "echo", "hi"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("is paused, unpause the container before exec"),
        "{r:?}"
    );
    assert_eq!(s.berth(&["pause", &name]).code, 1);
    // Thawed: the same processes go on.
    s.berth(&["unpause", &name]).ok();
    assert_eq!(inspect(&s, &name, ".State.Status"), "running");
    assert_eq!(inspect(&s, &name, ".State.Pid"), pid);
    wait_until("output after unpause", || lines() > before + 2);
    let r = s.berth(&["unpause", &name]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not paused"), "{r:?}");
    // kill of a paused container works.
    s.berth(&["pause", &name]).ok();
    s.berth(&["kill", &name]).ok();
    assert_eq!(s.berth(&["wait", &name]).ok().trim(), "137");
    let r = s.berth(&["pause", &name]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not running"), "{r:?}");
    s.berth(&["rm", "-f", &name]).ok();
}

#[test]
fn top_and_stats() {
    require_root!();
    let s = stack_with_busybox();
    let name = unique("top");
    s.berth(&["run", "-d", "--name", &name, "busybox", "sleep", "1000"])
        .ok();
    let top = s.berth(&["top", &name]).ok();
    let mut lines = top.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    let pid = inspect(&s, &name, ".State.Pid");
    let row = lines.find(|l| l.contains("sleep 1000")).expect(&top);
    assert!(row.starts_with("root"), "{top}");
    assert_eq!(row.split_whitespace().nth(1), Some(pid.as_str()), "{top}");
    // ps options are passed to ps and filtered to the container.
    let top = s.berth(&["top", &name, "-o", "pid,comm"]).ok();
    assert!(top.contains("sleep"), "{top}");
    assert_eq!(top.lines().count(), 2, "{top}");

    let st = s.berth(&["stats", "--no-stream", &name]).ok();
    let mut lines = st.lines();
    let header = lines.next().unwrap();
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        assert!(header.contains(col), "{st}");
    }
    let row = lines.next().expect(&st);
    assert!(row.contains(&name), "{st}");
    assert!(row.contains('%'), "{st}");
    let mem = row.split("   ").find(|c| c.contains(" / ")).expect(&st);
    assert!(mem.trim().ends_with("iB"), "a memory limit: {st}");
    assert!(row.trim().ends_with('1'), "one process: {st}");
    let r = s.berth(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}}",
        &name,
    ]);
    assert_eq!(r.ok().trim(), format!("{name} 1"));
    s.berth(&["rm", "-f", &name]).ok();
}

#[test]
fn attach_without_a_terminal_follows_output_and_exit_code() {
    berth_integration::require_root!();
    let s = berth_integration::Stack::start(berth_integration::Mode::AllInOne);
    s.import_busybox("busybox");
    s.berth(&[
        "run",
        "-d",
        "--name",
        "plain",
        "busybox",
        "sh",
        "-c",
        "sleep 2; for i in 1 2 3; do echo line$i; sleep 0.2; done; exit 3",
    ])
    .ok();
    // stdin is /dev/null (not a terminal) and the container has no tty.
    let r = s.berth(&["attach", "plain"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.stdout, "line1\nline2\nline3\n");
    s.berth(&["rm", "plain"]).ok();
}
