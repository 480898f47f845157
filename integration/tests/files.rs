//! End-to-end: cp in and out of running and stopped containers, symlinks
//! that must not lead to host files, diff, export and commit.

use std::io::Read;
use std::path::Path;

use berth_integration::{require_root, unique, Mode, Stack};

fn stack_with_busybox() -> Stack {
    let s = Stack::start(Mode::AllInOne);
    s.import_busybox("busybox");
    s
}

/// Entry names of a tar archive.
fn tar_names(data: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(data);
    ar.entries()
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string()
        })
        .collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn cp_in_and_out_of_running_and_stopped_containers() {
    require_root!();
    let s = stack_with_busybox();
    let host = s.dir.join("host");
    std::fs::create_dir_all(host.join("tree/sub")).unwrap();
    std::fs::write(host.join("hello.txt"), "hi there\n").unwrap();
    std::fs::write(host.join("tree/sub/leaf.txt"), "leaf\n").unwrap();
    let out = s.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();

    s.berth(&["run", "-d", "--name", "fr", "busybox", "sleep", "1000"])
        .ok();
    s.berth(&["create", "--name", "fs", "busybox", "true"]).ok();
    for c in ["fr", "fs"] {
        // A file into an existing directory, a tree to a new name.
        s.berth(&[
            "cp",
            host.join("hello.txt").to_str().unwrap(),
            &format!("{c}:/tmp"),
        ])
        .ok();
        s.berth(&[
            "cp",
            host.join("tree").to_str().unwrap(),
            &format!("{c}:/srv"),
        ])
        .ok();
        let back = out.join(c);
        s.berth(&["cp", &format!("{c}:/tmp/hello.txt"), back.to_str().unwrap()])
            .ok();
        assert_eq!(read(&back), "hi there\n");
        let tree = out.join(format!("{c}-tree"));
        s.berth(&["cp", &format!("{c}:/srv"), tree.to_str().unwrap()])
            .ok();
        assert_eq!(read(&tree.join("sub/leaf.txt")), "leaf\n");
        // Into an existing local directory: keeps the base name.
        s.berth(&["cp", &format!("{c}:/etc/passwd"), out.to_str().unwrap()])
            .ok();
        assert!(read(&out.join("passwd")).contains("app:x:1000"));
        let r = s.berth(&["cp", &format!("{c}:/nonexistent"), out.to_str().unwrap()]);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr.contains(&format!(
                "Could not find the file /nonexistent in container {c}"
            )),
            "{r:?}"
        );
    }
    // What was written into the running container is in its file system.
    assert_eq!(
        s.berth(&["logs", "fr"]).ok(),
        "",
        "the container wrote nothing itself"
    );
    s.berth(&["stop", "-t", "0", "fr"]).ok();
    let back = out.join("after-stop");
    s.berth(&["cp", "fr:/srv/sub/leaf.txt", back.to_str().unwrap()])
        .ok();
    assert_eq!(read(&back), "leaf\n");

    // `-`: a tar on stdout, and a tar from stdin.
    let r = s.cmd().args(["cp", "fs:/etc", "-"]).output().unwrap();
    assert!(r.status.success(), "{r:?}");
    let names = tar_names(&r.stdout);
    assert!(names.contains(&"etc/passwd".to_string()), "{names:?}");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o640);
    b.append_data(&mut h, "from-tar.txt", &b"in tar"[..])
        .unwrap();
    let input = b.into_inner().unwrap();
    s.berth_stdin(&["cp", "-", "fs:/tmp"], &input).ok();
    let r = s
        .cmd()
        .args(["cp", "fs:/tmp/from-tar.txt", "-"])
        .output()
        .unwrap();
    let mut ar = tar::Archive::new(&r.stdout[..]);
    let mut e = ar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(e.header().mode().unwrap() & 0o777, 0o640);
    let mut text = String::new();
    e.read_to_string(&mut text).unwrap();
    assert_eq!(text, "in tar");

    let r = s.berth(&["cp", "fs:/a", "fr:/b"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("copying between containers is not supported"),
        "{r:?}"
    );
    s.berth(&["rm", "-f", "fr", "fs"]).ok();
}

#[test]
fn cp_never_follows_container_symlinks_to_the_host() {
    require_root!();
    let s = stack_with_busybox();
    let marker = unique("berth-cp-marker");
    let host_marker = Path::new("/").join(&marker);
    let host_etc_marker = Path::new("/etc").join(&marker);
    let src = s.dir.join("payload");
    std::fs::write(&src, "payload\n").unwrap();
    s.berth(&[
        "run",
        "--name",
        "sy",
        "busybox",
        "sh",
        "-c",
        "ln -s / /evil && ln -s /etc /evil2",
    ])
    .ok();
    // A stopped container...
    s.berth(&["cp", src.to_str().unwrap(), &format!("sy:/evil/{marker}")])
        .ok();
    s.berth(&["cp", src.to_str().unwrap(), &format!("sy:/evil2/{marker}")])
        .ok();
    assert!(!host_marker.exists(), "cp wrote {}", host_marker.display());
    assert!(
        !host_etc_marker.exists(),
        "cp wrote {}",
        host_etc_marker.display()
    );
    // ...got the files inside its own root.
    let back = s.dir.join("back");
    s.berth(&["cp", &format!("sy:/{marker}"), back.to_str().unwrap()])
        .ok();
    assert_eq!(read(&back), "payload\n");
    // Reading through the link reads the container's /etc, not the host's.
    let passwd = s.dir.join("passwd");
    s.berth(&["cp", "sy:/evil2/passwd", passwd.to_str().unwrap()])
        .ok();
    assert!(read(&passwd).contains("app:x:1000"), "{}", read(&passwd));

    // cp copies a link as a link; -L copies what it points to, in the
    // container.
    let link = s.dir.join("linkcopy");
    s.berth(&["cp", "sy:/evil2", link.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/etc"));
    let followed = s.dir.join("followed");
    s.berth(&["cp", "-L", "sy:/evil2", followed.to_str().unwrap()])
        .ok();
    assert!(read(&followed.join("passwd")).contains("app:x:1000"));

    // A running container, whose image has the links.
    s.berth(&["commit", "sy", "links:1"]).ok();
    s.berth(&["run", "-d", "--name", "sy2", "links:1", "sleep", "1000"])
        .ok();
    let marker2 = unique("berth-cp-marker-running");
    s.berth(&["cp", src.to_str().unwrap(), &format!("sy2:/evil/{marker2}")])
        .ok();
    assert!(!Path::new("/").join(&marker2).exists());
    let back2 = s.dir.join("back2");
    s.berth(&["cp", &format!("sy2:/{marker2}"), back2.to_str().unwrap()])
        .ok();
    assert_eq!(read(&back2), "payload\n");
    // A tar with ".." cannot climb out either.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    let name = format!("../../{marker2}-dotdot");
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let r = s.berth_stdin(&["cp", "-", "sy2:/tmp"], &b.into_inner().unwrap());
    assert_eq!(r.code, 1, "{r:?}");
    assert!(!Path::new("/").join(format!("{marker2}-dotdot")).exists());
    s.berth(&["rm", "-f", "sy", "sy2"]).ok();
}

#[test]
fn diff_export_and_commit() {
    require_root!();
    let s = stack_with_busybox();
    s.berth(&[
        "run",
        "--name",
        "dc",
        "busybox",
        "sh",
        "-c",
        "echo new > /etc/x; rm /etc/group; mkdir /data; echo d > /data/f",
    ])
    .ok();
    assert_eq!(
        s.berth(&["diff", "dc"]).ok(),
        "A /data\nA /data/f\nC /etc\nD /etc/group\nA /etc/x\n"
    );
    let r = s.berth(&["diff", "nosuch"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("No such container: nosuch"), "{r:?}");

    let file = s.dir.join("dc.tar");
    s.berth(&["export", "-o", file.to_str().unwrap(), "dc"])
        .ok();
    let names = tar_names(&std::fs::read(&file).unwrap());
    for want in ["bin/busybox", "etc/x", "data/f", "etc/passwd"] {
        assert!(names.contains(&want.to_string()), "{want} not in {names:?}");
    }
    assert!(!names.contains(&"etc/group".to_string()), "{names:?}");

    let id = s
        .berth(&[
            "commit",
            "-m",
            "made by a test",
            "-a",
            "tester",
            "-c",
            "CMD [\"cat\", \"/etc/x\"]",
            "dc",
            "committed:1",
        ])
        .ok();
    assert!(
        id.trim().starts_with("sha256:") && id.trim().len() == 71,
        "{id}"
    );
    assert_eq!(s.run(&["committed:1"]).ok(), "new\n");
    assert_eq!(s.run(&["committed:1", "cat", "/data/f"]).ok(), "d\n");
    // The deletion is in the layer as a whiteout.
    assert_eq!(s.run(&["committed:1", "ls", "/etc/group"]).code, 1);
    let images = s
        .berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok();
    assert!(images.contains("committed:1"), "{images}");
    let cmd = s
        .berth(&[
            "image",
            "inspect",
            "-f",
            "{{json .Config.Cmd}} {{.Author}}",
            "committed:1",
        ])
        .ok();
    assert_eq!(cmd.trim(), "[\"cat\",\"/etc/x\"] tester");
    s.berth(&["rm", "dc"]).ok();
}

/// Actions of the container's events so far, in order.
fn container_actions(s: &Stack, name: &str) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let until = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
    s.berth(&[
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--filter",
        &format!("container={name}"),
        "--format",
        "{{.Action}}",
    ])
    .ok()
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn commit_pauses_a_running_container_unless_told_not_to() {
    require_root!();
    let s = stack_with_busybox();
    let name = unique("cp");
    s.berth(&[
        "run",
        "-d",
        "--name",
        &name,
        "busybox",
        "sh",
        "-c",
        "echo one > /state; sleep 1000",
    ])
    .ok();
    let pid = s.berth(&["inspect", "-f", "{{.State.Pid}}", &name]).ok();
    s.berth(&["commit", &name, "paused:1"]).ok();
    let actions = container_actions(&s, &name);
    let tail: Vec<&str> = actions
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(tail, ["pause", "commit", "unpause"], "{actions:?}");
    // Thawed afterwards: the same processes run on.
    assert_eq!(
        s.berth(&["inspect", "-f", "{{.State.Status}} {{.State.Pid}}", &name])
            .ok(),
        format!("running {}", pid.trim()) + "\n"
    );
    assert_eq!(s.run(&["paused:1", "cat", "/state"]).ok(), "one\n");

    s.berth(&["commit", "--pause=false", &name, "paused:2"])
        .ok();
    let actions = container_actions(&s, &name);
    assert_eq!(
        actions.last().map(String::as_str),
        Some("commit"),
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "pause").count(),
        1,
        "{actions:?}"
    );

    // A container the user paused stays paused after a commit.
    s.berth(&["pause", &name]).ok();
    s.berth(&["commit", &name, "paused:3"]).ok();
    assert_eq!(
        s.berth(&["inspect", "-f", "{{.State.Status}}", &name]).ok(),
        "paused\n"
    );
    s.berth(&["rm", "-f", &name]).ok();
}

#[test]
fn cp_diff_and_events_with_split_services() {
    require_root!();
    let s = Stack::start(Mode::Split);
    s.import_busybox("busybox");
    let since = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    s.berth(&["run", "-d", "--name", "sp", "busybox", "sleep", "1000"])
        .ok();
    let src = s.dir.join("f.txt");
    std::fs::write(&src, "split\n").unwrap();
    s.berth(&["cp", src.to_str().unwrap(), "sp:/root/"]).ok();
    let back = s.dir.join("back.txt");
    s.berth(&["cp", "sp:/root/f.txt", back.to_str().unwrap()])
        .ok();
    assert_eq!(read(&back), "split\n");
    assert_eq!(s.berth(&["diff", "sp"]).ok(), "C /root\nA /root/f.txt\n");
    s.berth(&["rm", "-f", "sp"]).ok();
    let out = s
        .berth(&[
            "events",
            "--since",
            &since,
            "--until",
            "0s",
            "--filter",
            "container=sp",
            "--format",
            "{{.Action}}",
        ])
        .ok();
    assert_eq!(out, "create\nstart\nkill\ndie\ndestroy\n");
}
