//! End-to-end: images and containers through the real CLI, all-in-one.

use berth_integration::{require_root, Mode, Stack};

fn stack_with_busybox() -> Stack {
    let s = Stack::start(Mode::AllInOne);
    s.import_busybox("busybox");
    s
}

#[test]
fn run_output_and_exit_codes() {
    require_root!();
    let s = stack_with_busybox();
    let r = s.run(&["busybox", "echo", "hello from berth"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "hello from berth\n");

    // stdout and stderr are kept apart.
    let r = s.run(&["busybox", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(r.stdout, "out\n");
    assert!(r.stderr.contains("err\n"), "{r:?}");

    // The container's own code passes through.
    assert_eq!(s.run(&["busybox", "sh", "-c", "exit 3"]).code, 3);
    // Not found: 127, with Docker's message.
    let r = s.run(&["busybox", "nosuchcmd"]);
    assert_eq!(r.code, 127, "{r:?}");
    assert!(r.stderr.contains("executable file not found"), "{r:?}");
    // Found but not executable: 126.
    let r = s.run(&["busybox", "/etc/passwd"]);
    assert_eq!(r.code, 126, "{r:?}");
    // Killed by a signal: 128+N, passed through a foreground run.
    let fg = s
        .cmd()
        .args(["run", "--rm", "--name", "fg", "busybox", "sleep", "1000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !s
        .berth(&["ps", "-q", "--no-trunc"])
        .stdout
        .contains(char::is_alphanumeric)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s.berth(&["kill", "fg"]).ok();
    assert_eq!(fg.wait_with_output().unwrap().status.code(), Some(137));
    // --rm left nothing behind.
    assert_eq!(s.berth(&["ps", "-aq"]).ok().trim(), "");
}

#[test]
fn inside_the_container() {
    require_root!();
    let s = stack_with_busybox();
    // The command is PID 1 of its own pid namespace.
    assert_eq!(s.run(&["busybox", "sh", "-c", "echo $$"]).ok(), "1\n");
    // Hostname: the short ID by default, -h otherwise.
    let id = s
        .berth(&["create", "--name", "hn", "busybox", "hostname"])
        .ok()
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    assert_eq!(
        s.berth(&["start", "-a", "hn"]).ok(),
        format!("{}\n", &id[..12])
    );
    assert_eq!(
        s.run(&["-h", "myhost", "busybox", "hostname"]).ok(),
        "myhost\n"
    );
    // The default bridge: loopback and eth0, as docker.
    assert_eq!(
        s.run(&["busybox", "ls", "/sys/class/net"])
            .ok()
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec!["eth0", "lo"]
    );
    // --network none: a namespace with only loopback.
    assert_eq!(
        s.run(&["--network", "none", "busybox", "ls", "/sys/class/net"])
            .ok()
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec!["lo"]
    );
    // --network host: the host's interfaces, and the same namespace (other
    // tests add and remove links meanwhile, so the lists are not compared:
    // the namespace's inode is).
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let inner = s
        .run(&[
            "--network",
            "host",
            "busybox",
            "readlink",
            "/proc/self/ns/net",
        ])
        .ok();
    assert_eq!(inner.trim(), host_ns.to_string_lossy());
    let inner = s
        .run(&["--network", "host", "busybox", "ls", "/sys/class/net"])
        .ok();
    let inner: Vec<&str> = inner.split_whitespace().collect();
    assert!(
        inner.contains(&"lo") && inner.contains(&s.bridge.as_str()),
        "{inner:?}"
    );
    // Own mount namespace: overlay root, proc, a private /dev, read-only /sys.
    let mounts = s.run(&["busybox", "cat", "/proc/mounts"]).ok();
    assert!(
        mounts.lines().any(|l| l.starts_with("overlay / overlay")),
        "{mounts}"
    );
    assert!(
        mounts.lines().any(|l| l.contains(" /sys sysfs ro")),
        "{mounts}"
    );
    let dev = s.run(&["busybox", "ls", "/dev"]).ok();
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm",
    ] {
        assert!(
            dev.split_whitespace().any(|x| x == d),
            "/dev lacks {d}: {dev}"
        );
    }
    assert_ne!(s.run(&["busybox", "touch", "/sys/x"]).code, 0);
    assert_eq!(
        s.run(&[
            "busybox",
            "sh",
            "-c",
            "echo hi > /dev/null && head -c 4 /dev/zero | wc -c"
        ])
        .ok()
        .trim(),
        "4"
    );
    // uts and ipc namespaces differ from the host's.
    let host_uts = std::fs::read_link("/proc/self/ns/uts").unwrap();
    let inner_uts = s.run(&["busybox", "readlink", "/proc/self/ns/uts"]).ok();
    assert_ne!(inner_uts.trim(), host_uts.to_string_lossy());
    // A cgroup of its own.
    let cg = s.run(&["busybox", "cat", "/proc/self/cgroup"]).ok();
    assert!(cg.contains("/berth/default/"), "{cg}");
    // rlimits clamped to the host's hard limit instead of failing.
    let host_hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap()
        .1;
    assert_eq!(
        s.run(&["busybox", "sh", "-c", "ulimit -n"]).ok().trim(),
        host_hard.min(1048576).to_string()
    );
}

#[test]
fn env_workdir_user() {
    require_root!();
    let s = Stack::start(Mode::AllInOne);
    let tar = berth_integration::fixtures::busybox_tar_in(&s.dir);
    s.berth(&[
        "image",
        "import",
        "--change",
        "ENV FROM_IMAGE=yes",
        "--change",
        "WORKDIR /srv",
        "--change",
        "CMD [\"pwd\"]",
        tar.to_str().unwrap(),
        "bb:cfg",
    ])
    .ok();
    // The image's Cmd and WorkingDir (created when missing).
    assert_eq!(s.run(&["bb:cfg"]).ok(), "/srv\n");
    let env = s
        .run(&["-e", "A=1", "-e", "FROM_IMAGE=overridden", "bb:cfg", "env"])
        .ok();
    assert!(env.lines().any(|l| l == "A=1"), "{env}");
    assert!(env.lines().any(|l| l == "FROM_IMAGE=overridden"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    assert!(env.lines().any(|l| l.starts_with("HOSTNAME=")), "{env}");
    assert_eq!(
        s.run(&["-w", "/work/dir", "bb:cfg", "pwd"]).ok(),
        "/work/dir\n"
    );
    assert_eq!(
        s.run(&["-u", "1000:50", "bb:cfg", "sh", "-c", "id -u; id -g"])
            .ok(),
        "1000\n50\n"
    );
    assert_eq!(s.run(&["-u", "app", "bb:cfg", "id", "-un"]).ok(), "app\n");
    // Entrypoint from the command line.
    assert_eq!(
        s.run(&["--entrypoint", "echo", "bb:cfg", "via", "entrypoint"])
            .ok(),
        "via entrypoint\n"
    );
    // Unknown user: an engine error.
    let r = s.run(&["-u", "ghost", "bb:cfg", "true"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("ghost"), "{r:?}");
}

#[test]
fn containers_are_isolated_from_each_other_and_the_image() {
    require_root!();
    let s = stack_with_busybox();
    let script = "cat /etc/marker 2>/dev/null; echo mine > /etc/marker";
    assert_eq!(
        s.berth(&["run", "--name", "first", "busybox", "sh", "-c", script])
            .ok(),
        ""
    );
    let r = s.run(&["busybox", "cat", "/etc/marker"]);
    assert_ne!(
        r.code, 0,
        "another container (or the image) sees the first one's file: {r:?}"
    );
    // The first container's file stays in its own layer across restarts.
    assert_eq!(s.berth(&["start", "-a", "first"]).ok(), "mine\n");
}

#[test]
fn lifecycle_ps_logs_stop_kill_rm() {
    require_root!();
    let s = stack_with_busybox();
    let id = s
        .berth(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "1000"])
        .ok()
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    let ps = s.berth(&["ps"]).ok();
    let header = ps.lines().next().unwrap();
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let line = ps
        .lines()
        .find(|l| l.contains("sleeper"))
        .expect("ps lists the container");
    assert!(line.starts_with(&id[..12]), "{line}");
    assert!(line.contains("Up "), "{line}");
    assert_eq!(s.berth(&["ps", "-q"]).ok().trim(), &id[..12]);

    // rm of a running container needs -f.
    let r = s.berth(&["rm", "sleeper"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("running"), "{r:?}");

    // PID 1 ignores SIGTERM without a handler: stop falls back to SIGKILL.
    s.berth(&["stop", "-t", "1", "sleeper"]).ok();
    assert_eq!(s.berth(&["wait", "sleeper"]).ok().trim(), "137");
    let ps = s.berth(&["ps", "-a"]).ok();
    assert!(
        ps.lines()
            .any(|l| l.contains("sleeper") && l.contains("Exited (137)")),
        "{ps}"
    );
    assert_eq!(s.berth(&["ps", "-q"]).ok().trim(), "");

    // A handler for SIGTERM makes stop graceful.
    s.berth(&[
        "run",
        "-d",
        "--name",
        "graceful",
        "busybox",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done",
    ])
    .ok();
    s.berth(&["stop", "graceful"]).ok();
    assert_eq!(s.berth(&["wait", "graceful"]).ok().trim(), "0");
    let logs = s.berth(&["logs", "graceful"]).ok();
    assert_eq!(logs, "ready\nbye\n");

    // kill gives 137; kill -s names a signal.
    s.berth(&["run", "-d", "--name", "k1", "busybox", "sleep", "1000"])
        .ok();
    s.berth(&["kill", "k1"]).ok();
    assert_eq!(s.berth(&["wait", "k1"]).ok().trim(), "137");
    let r = s.berth(&["kill", "k1"]);
    assert_ne!(r.code, 0, "kill of a stopped container must fail");
    s.berth(&[
        "run",
        "-d",
        "--name",
        "k2",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 7' USR1; while true; do sleep 0.1; done",
    ])
    .ok();
    std::thread::sleep(std::time::Duration::from_millis(300));
    s.berth(&["kill", "-s", "USR1", "k2"]).ok();
    assert_eq!(s.berth(&["wait", "k2"]).ok().trim(), "7");

    // create + start + wait, logs of a finished container.
    s.berth(&[
        "create",
        "--name",
        "later",
        "busybox",
        "sh",
        "-c",
        "echo one; echo two >&2; exit 5",
    ])
    .ok();
    let ps = s.berth(&["ps", "-a"]).ok();
    assert!(
        ps.lines()
            .any(|l| l.contains("later") && l.contains("Created")),
        "{ps}"
    );
    s.berth(&["start", "later"]).ok();
    assert_eq!(s.berth(&["wait", "later"]).ok().trim(), "5");
    let r = s.berth(&["logs", "later"]);
    assert_eq!(r.stdout, "one\n");
    assert_eq!(r.stderr, "two\n");
    let doc: serde_json::Value =
        serde_json::from_str(&s.berth(&["inspect", "later"]).ok()).unwrap();
    assert_eq!(doc[0]["State"]["ExitCode"], 5);
    assert_eq!(doc[0]["State"]["Status"], "exited");
    assert_eq!(doc[0]["Name"], "/later");
    assert_eq!(doc[0]["Path"], "sh");

    // logs -f follows until the container exits.
    s.berth(&[
        "run",
        "-d",
        "--name",
        "follow",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo $i; sleep 0.2; done",
    ])
    .ok();
    assert_eq!(s.berth(&["logs", "-f", "follow"]).ok(), "1\n2\n3\n");

    // rm -f kills and removes; names are free again.
    s.berth(&["run", "-d", "--name", "forced", "busybox", "sleep", "1000"])
        .ok();
    s.berth(&["rm", "-f", "forced"]).ok();
    s.berth(&["rm", "sleeper", "graceful", "k1", "k2", "later", "follow"])
        .ok();
    assert_eq!(s.berth(&["ps", "-aq"]).ok().trim(), "");
    s.berth(&["run", "--rm", "--name", "forced", "busybox", "true"])
        .ok();
}

#[test]
fn images_tag_inspect_rmi() {
    require_root!();
    let s = stack_with_busybox();
    let images = s.berth(&["images"]).ok();
    let header = images.lines().next().unwrap();
    for col in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("busybox") && l.contains("latest")),
        "{images}"
    );
    s.berth(&["tag", "busybox", "mine/bb:v1"]).ok();
    let doc: serde_json::Value =
        serde_json::from_str(&s.berth(&["image", "inspect", "mine/bb:v1"]).ok()).unwrap();
    let img = &doc[0];
    assert!(img["Id"].as_str().unwrap().starts_with("sha256:"));
    let mut tags: Vec<&str> = img["RepoTags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, vec!["busybox:latest", "mine/bb:v1"]);
    assert_eq!(img["Os"], "linux");
    assert_eq!(img["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert!(img["Size"].as_i64().unwrap() > 500_000);
    let short = &img["Id"].as_str().unwrap()[7..19];
    // One line per name, like docker.
    let ids = s.berth(&["images", "-q"]).ok();
    assert_eq!(ids.lines().collect::<Vec<_>>(), vec![short, short]);

    // In use by a container: refused unless -f.
    s.berth(&["create", "--name", "user", "busybox", "true"])
        .ok();
    let r = s.berth(&["rmi", "mine/bb:v1"]);
    assert_eq!(r.code, 0, "with two names, rmi only untags: {r:?}");
    assert!(r.stdout.contains("Untagged: mine/bb:v1"), "{r:?}");
    let r = s.berth(&["rmi", "busybox"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is using its referenced image"), "{r:?}");
    // By ID while a stopped container uses it.
    let r = s.berth(&["rmi", short]);
    assert_ne!(r.code, 0);
    s.berth(&["rm", "user"]).ok();
    let r = s.berth(&["rmi", "busybox"]).ok();
    assert!(r.contains("Untagged: busybox:latest"), "{r}");
    assert!(r.contains("Deleted: sha256:"), "{r}");
    assert_eq!(s.berth(&["images", "-q"]).ok().trim(), "");
    // The unpacked layers are gone as well.
    let snaps: Vec<_> = std::fs::read_dir(s.root.join("snapshots/snapshots"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(snaps.is_empty(), "snapshots left: {snaps:?}");
}

#[test]
fn errors_are_clear_and_leave_nothing_behind() {
    require_root!();
    let s = stack_with_busybox();
    // Offline (--pull=never): docker's message for a missing image.
    let r = s.berth(&["run", "--rm", "--pull=never", "nosuchimage", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("No such image"), "{r:?}");
    // Pulled from a registry that is not there: a clear error, nothing kept.
    let r = s.berth(&["run", "--rm", "127.0.0.1:1/nosuchimage", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        r.stderr
            .contains("Unable to find image '127.0.0.1:1/nosuchimage:latest' locally"),
        "{r:?}"
    );
    assert!(r.stderr.contains("onnect"), "{r:?}");
    let r = s.berth(&["run", "--rm", "BadName", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("invalid reference format"), "{r:?}");
    let r = s.berth(&["create", "--name", "bad name", "busybox", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("Invalid container name"), "{r:?}");
    // Name conflict.
    s.berth(&["create", "--name", "dup", "busybox", "true"])
        .ok();
    let r = s.berth(&["create", "--name", "dup", "busybox", "true"]);
    assert_eq!(r.code, 125);
    assert!(r.stderr.contains("already in use"), "{r:?}");
    s.berth(&["rm", "dup"]).ok();
    // Failed starts leave no running process and no container for --rm... but
    // a plain run keeps the container in Created state like docker.
    assert_eq!(s.berth(&["ps", "-aq"]).ok().trim(), "");
    let containers: Vec<_> = std::fs::read_dir(s.root.join("containers"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(containers.is_empty(), "container dirs left: {containers:?}");
    // Importing something that is not a tar fails and stores nothing.
    let junk = s.dir.join("junk.tar");
    std::fs::write(&junk, b"this is not a tarball at all").unwrap();
    let r = s.berth(&["image", "import", junk.to_str().unwrap(), "junk"]);
    assert_ne!(r.code, 0);
    assert!(!s.berth(&["images"]).ok().contains("junk"));
    let r = s.berth(&["image", "import", "/no/such/file.tar", "junk"]);
    assert_ne!(r.code, 0);
}

#[test]
fn import_from_stdin_and_gzip() {
    require_root!();
    let s = Stack::start(Mode::AllInOne);
    let tar = berth_integration::fixtures::busybox_tar_in(&s.dir);
    let data = std::fs::read(&tar).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &data).unwrap();
    let gz = gz.finish().unwrap();
    let id = s.berth_stdin(&["image", "import", "-", "bbgz:1"], &gz).ok();
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(s.run(&["bbgz:1", "echo", "gz"]).ok(), "gz\n");
    let doc: serde_json::Value =
        serde_json::from_str(&s.berth(&["image", "inspect", "bbgz:1"]).ok()).unwrap();
    use sha2::Digest;
    let diff_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)));
    assert_eq!(doc[0]["RootFS"]["Layers"][0], diff_id.as_str());
}

#[test]
fn one_command_is_one_trace_across_services() {
    require_root!();
    let s = Stack::start(Mode::Split);
    let tar = berth_integration::fixtures::busybox_tar_in(&s.dir);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let out = s
        .cmd()
        .env("TRACEPARENT", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .args(["image", "import", tar.to_str().unwrap(), "traced"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The gateway, berth-content and berth-snapshots (separate processes
    // here) all logged spans of the CLI's trace.
    let want = format!("trace_id={trace_id}");
    for (n, svc) in [(0, "content"), (1, "snapshots"), (4, "gateway")] {
        let log = std::fs::read_to_string(s.dir.join(format!("berthd-{n}.log"))).unwrap();
        assert!(
            log.contains(&want),
            "{svc} did not log the CLI's trace id:\n{log}"
        );
    }
}

#[test]
fn inspect_format_and_missing_daemon() {
    require_root!();
    let s = stack_with_busybox();
    s.berth(&[
        "run", "--name", "fmt", "-e", "X=1", "busybox", "sh", "-c", "exit 2",
    ]);
    assert_eq!(
        s.berth(&["inspect", "-f", "{{.State.ExitCode}} {{.Name}}", "fmt"])
            .ok(),
        "2 /fmt\n"
    );
    assert_eq!(
        s.berth(&["inspect", "--format", "{{json .Config.Cmd}}", "fmt"])
            .ok(),
        "[\"sh\",\"-c\",\"exit 2\"]\n"
    );
    let env = s
        .berth(&["inspect", "-f", "{{range .Config.Env}}{{.}},{{end}}", "fmt"])
        .ok();
    assert!(env.contains("X=1,"), "{env}");
    assert_eq!(
        s.berth(&[
            "image",
            "inspect",
            "-f",
            "{{.Os}}/{{.Architecture}}",
            "busybox"
        ])
        .ok()
        .trim(),
        "linux/amd64"
    );
    let r = s.berth(&["inspect", "nosuch"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("No such object: nosuch") || r.stderr.contains("No such"),
        "{r:?}"
    );
    // No daemon behind the socket.
    let r: berth_integration::Run =
        std::process::Command::new(berth_integration::bin_dir().join("berth"))
            .args(["-H", "unix:///nonexistent/berth.sock", "ps"])
            .output()
            .unwrap()
            .into();
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("Cannot connect to the berth daemon"),
        "{r:?}"
    );
    let r: berth_integration::Run =
        std::process::Command::new(berth_integration::bin_dir().join("berth"))
            .args([
                "-H",
                "unix:///nonexistent/berth.sock",
                "run",
                "busybox",
                "true",
            ])
            .output()
            .unwrap()
            .into();
    assert_eq!(r.code, 125);
}

#[test]
fn unnamed_and_replaced_images_show_as_none() {
    require_root!();
    let s = Stack::start(Mode::AllInOne);
    let tar = berth_integration::fixtures::busybox_tar_in(&s.dir);
    let tar = tar.to_str().unwrap();
    // Import without a name: an untagged image, usable by ID.
    let id = s.berth(&["image", "import", tar]).ok().trim().to_string();
    let short = &id[7..19];
    let images = s.berth(&["images"]).ok();
    let line = images
        .lines()
        .find(|l| l.contains(short))
        .expect("untagged image listed");
    assert!(line.starts_with("<none>"), "{images}");
    assert_eq!(s.run(&[short, "echo", "by id"]).ok(), "by id\n");
    // Tagging names it.
    s.berth(&["tag", short, "named:1"]).ok();
    assert!(!s.berth(&["images"]).ok().contains("<none>"));
    // Importing again under the same name moves the name; the old image
    // stays as <none>, like docker.
    let id2 = s
        .berth(&["image", "import", "--change", "ENV V=2", tar, "named:1"])
        .ok()
        .trim()
        .to_string();
    assert_ne!(id, id2);
    let images = s.berth(&["images"]).ok();
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("<none>") && l.contains(short)),
        "{images}"
    );
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("named") && l.contains(&id2[7..19])),
        "{images}"
    );
    // rmi by ID removes the dangling one.
    let out = s.berth(&["rmi", short]).ok();
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert!(!s.berth(&["images"]).ok().contains("<none>"));
}
