//! End-to-end: docker's local image management — save/load (with podman and
//! skopeo as the independent peers), history, images --digests and filters,
//! image/system prune, system df, blob garbage collection and import from a
//! URL.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_integration::{require_root, run_with_stdin, unique, Mode, Run, Stack};

/// A podman with its own storage under `dir` (vfs: no mounts to undo).
struct Podman {
    root: PathBuf,
    runroot: PathBuf,
}

impl Podman {
    fn new(dir: &Path) -> Podman {
        let p = Podman {
            root: dir.join("podman-root"),
            runroot: dir.join("podman-run"),
        };
        std::fs::create_dir_all(&p.root).unwrap();
        std::fs::create_dir_all(&p.runroot).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Run {
        Command::new("podman")
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(args)
            .env("CONTAINERS_CONF", "/dev/null")
            .output()
            .expect("run podman")
            .into()
    }
}

fn skopeo(args: &[&str]) -> Run {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo")
        .into()
}

/// Blob files in the stack's content store.
fn blobs(s: &Stack) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(s.root.join("content/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn has_blob(s: &Stack, digest: &str) -> bool {
    s.root
        .join("content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .exists()
}

fn inspect(s: &Stack, image: &str, fmt: &str) -> String {
    s.berth(&["image", "inspect", "-f", fmt, image])
        .ok()
        .trim()
        .to_string()
}

/// The entries of a tar archive.
fn tar_names(data: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(data);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn read_member(data: &[u8], name: &str) -> Vec<u8> {
    use std::io::Read;
    let mut a = tar::Archive::new(data);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == name {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            return v;
        }
    }
    panic!("{name} not in the archive");
}

#[test]
fn save_is_read_by_podman_and_skopeo_and_loads_back() {
    require_root!();
    let s = Stack::start(Mode::AllInOne);
    let name = unique("savebb");
    let tag1 = format!("{name}:1");
    let tag2 = format!("{name}:2");
    let id = s.import_busybox(&tag1);
    s.berth(&["tag", &tag1, &tag2]).ok();
    let other = unique("saveother");
    s.import_busybox(&format!("{other}:x"));

    // Refused to a terminal-less stdout? No: stdout is a pipe here, so the
    // archive streams out.
    let out = s.cmd().args(["save", &tag1]).output().expect("berth save");
    assert!(out.status.success(), "{out:?}");
    let archive = out.stdout;
    let names = tar_names(&archive);
    for n in ["manifest.json", "index.json", "oci-layout", "repositories"] {
        assert!(names.iter().any(|x| x == n), "{n} missing: {names:?}");
    }
    let hex = id.trim_start_matches("sha256:");
    assert!(names.contains(&format!("blobs/sha256/{hex}")), "{names:?}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&read_member(&archive, "manifest.json")).unwrap();
    assert_eq!(manifest[0]["Config"], format!("blobs/sha256/{hex}"));
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!([tag1]));
    let index: serde_json::Value =
        serde_json::from_slice(&read_member(&archive, "index.json")).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        format!("docker.io/library/{tag1}")
    );
    // Layers are stored uncompressed, named by their diff IDs.
    let diff_id = inspect(&s, &tag1, "{{index .RootFS.Layers 0}}");
    let layer = read_member(&archive, &format!("blobs/sha256/{}", &diff_id[7..]));
    assert_eq!(
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&layer))
        ),
        diff_id
    );

    // skopeo reads it as a docker-archive.
    let file = s.dir.join("one.tar");
    std::fs::write(&file, &archive).unwrap();
    let r = skopeo(&["inspect", &format!("docker-archive:{}", file.display())]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["Layers"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["Os"], "linux");
    let r = skopeo(&[
        "inspect",
        "--config",
        &format!("docker-archive:{}", file.display()),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let cfg: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"][0], diff_id.as_str());
    // ... and as an OCI layout (oci-archive:) too.
    let r = skopeo(&["inspect", &format!("oci-archive:{}", file.display())]);
    assert_eq!(r.code, 0, "{r:?}");

    // Several images in one archive, -o, loaded by podman.
    let multi = s.dir.join("multi.tar");
    s.berth(&[
        "save",
        "-o",
        multi.to_str().unwrap(),
        &tag1,
        &tag2,
        &format!("{other}:x"),
    ])
    .ok();
    let podman = Podman::new(&s.dir);
    let r = podman.run(&["load", "-i", multi.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = podman.run(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    assert_eq!(r.code, 0, "{r:?}");
    // manifest.json has docker's familiar names ("name:tag"); podman 4
    // qualifies short names with localhost/.
    for t in [&tag1, &tag2, &format!("{other}:x")] {
        assert!(
            r.stdout.contains(&format!("localhost/{t} "))
                || r.stdout.contains(&format!("docker.io/library/{t} ")),
            "{t} not loaded by podman: {r:?}"
        );
    }
    assert!(r.stdout.contains(&hex[..12]), "same image ID: {r:?}");

    // A name without a tag saves every tag of the repository.
    let all = s.dir.join("all.tar");
    s.berth(&["image", "save", "-o", all.to_str().unwrap(), &name])
        .ok();
    let m: serde_json::Value =
        serde_json::from_slice(&read_member(&std::fs::read(&all).unwrap(), "manifest.json"))
            .unwrap();
    let mut tags: Vec<String> = m[0]["RepoTags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    assert_eq!(tags, vec![tag1.clone(), tag2.clone()]);

    // Round trip: berth save | berth load, into an empty store.
    s.berth(&["rmi", &tag1, &tag2, &format!("{other}:x")]).ok();
    assert!(s.berth(&["images", "-q"]).ok().trim().is_empty());
    let r = s.berth_stdin(&["load"], &archive);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("Loaded image: {tag1}\n"));
    assert_eq!(inspect(&s, &tag1, "{{.Id}}"), id);
    let out = s.run(&[&tag1, "cat", "/etc/group"]).ok();
    assert!(out.contains("app:x:1000:"), "{out}");
    // -i and -q.
    let r = s.berth(&["load", "-q", "-i", multi.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "");
    assert_eq!(inspect(&s, &tag2, "{{.Id}}"), id);

    // Unknown names fail before anything is written; -o leaves no file.
    let bad = s.dir.join("bad.tar");
    let r = s.berth(&["save", "-o", bad.to_str().unwrap(), "nope-not-here:1"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("No such image: nope-not-here:1"), "{r:?}");
    assert!(!bad.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&s.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(s
        .root
        .join("tmp")
        .read_dir()
        .map_or(true, |mut d| d.next().is_none()));
}

#[test]
fn podman_archives_load_and_run_and_bad_archives_leave_nothing() {
    require_root!();
    let s = Stack::start(Mode::AllInOne);
    let podman = Podman::new(&s.dir);
    let tar = berth_integration::fixtures::busybox_tar_in(&s.dir);
    let pname = format!("localhost/{}:1", unique("pbb"));
    let r = podman.run(&["import", tar.to_str().unwrap(), &pname]);
    assert_eq!(r.code, 0, "{r:?}");
    let docker_archive = s.dir.join("p-docker.tar");
    let oci_archive = s.dir.join("p-oci.tar");
    for (fmt, file) in [
        ("docker-archive", &docker_archive),
        ("oci-archive", &oci_archive),
    ] {
        let r = podman.run(&[
            "save",
            "--format",
            fmt,
            "-o",
            file.to_str().unwrap(),
            &pname,
        ]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    let podman_id = podman
        .run(&["image", "inspect", "--format", "{{.Id}}", &pname])
        .ok();

    // Docker archive from podman.
    let r = s.berth(&["load", "-i", docker_archive.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}\n{}", s.daemon_logs());
    assert_eq!(r.stdout, format!("Loaded image: {pname}\n"));
    assert_eq!(
        inspect(&s, &pname, "{{.Id}}"),
        format!("sha256:{}", podman_id.trim())
    );
    let out = s.run(&[&pname, "sh", "-c", "echo hello from podman"]).ok();
    assert_eq!(out, "hello from podman\n");
    s.berth(&["rmi", &pname]).ok();

    // OCI archive from podman, gzip-compressed on top.
    let gz = s.dir.join("p-oci.tar.gz");
    {
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::copy(&mut std::fs::File::open(&oci_archive).unwrap(), &mut enc).unwrap();
        enc.finish().unwrap();
    }
    let r = s.berth_stdin(&["image", "load"], &std::fs::read(&gz).unwrap());
    assert_eq!(r.code, 0, "{r:?}\n{}", s.daemon_logs());
    assert_eq!(r.stdout, format!("Loaded image: {pname}\n"));
    let out = s.run(&[&pname, "cat", "/etc/passwd"]).ok();
    assert!(out.starts_with("root:x:0:0"), "{out}");
    s.berth(&["rmi", &pname]).ok();

    // Bad input: a clear error, no record, no blob, no snapshot, no temp.
    let before_blobs = blobs(&s);
    let whole = std::fs::read(&docker_archive).unwrap();
    for (what, data) in [
        ("truncated", whole[..whole.len() / 2].to_vec()),
        (
            "not an archive",
            b"this is not a tar archive at all".repeat(100),
        ),
        ("empty", Vec::new()),
    ] {
        let r = s.berth_stdin(&["load"], &data);
        assert_ne!(r.code, 0, "{what}: {r:?}");
        assert!(r.stderr.contains("invalid archive"), "{what}: {r:?}");
        assert!(s.berth(&["images", "-aq"]).ok().trim().is_empty(), "{what}");
        assert_eq!(blobs(&s), before_blobs, "{what}: blobs left behind");
        assert!(
            s.root
                .join("tmp")
                .read_dir()
                .map_or(true, |mut d| d.next().is_none()),
            "{what}: temp files left"
        );
    }
    // An archive whose layer does not match the config's diff ID.
    let mut b = tar::Builder::new(Vec::new());
    let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#;
    let mut layer = tar::Builder::new(Vec::new());
    berth_integration::fixtures::add_file(&mut layer, "hello", 0o644, b"hi");
    let layer = layer.into_inner().unwrap();
    for (p, d) in [
        ("c.json", &cfg[..]),
        ("l.tar", &layer[..]),
        (
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":["liar:1"],"Layers":["l.tar"]}]"#,
        ),
    ] {
        berth_integration::fixtures::add_file(&mut b, p, 0o644, d);
    }
    let r = s.berth_stdin(&["load"], &b.into_inner().unwrap());
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("diff ID"), "{r:?}");
    assert!(s.berth(&["images", "-aq"]).ok().trim().is_empty());
    assert_eq!(blobs(&s), before_blobs);
}

#[test]
fn blobs_are_collected_after_the_last_user_goes() {
    require_root!();
    let ns_b = unique("nsb");
    // Dropped after the stack, which removes the containers first.
    let _ns_cgroups = berth_integration::NamespaceCgroups(ns_b.clone());
    let s = Stack::start(Mode::AllInOne);
    let tar = berth_integration::fixtures::busybox_tar_in(&s.dir);
    let id_a = s.import_busybox("gc-a:1");
    let r = s.berth(&[
        "--namespace",
        &ns_b,
        "import",
        tar.to_str().unwrap(),
        "gc-b:1",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let id_b = r.stdout.trim().to_string();
    let layer = inspect(&s, "gc-a:1", "{{index .RootFS.Layers 0}}");
    let manifest_a = inspect(&s, "gc-a:1", "{{.Descriptor.digest}}");
    // Same tarball, same layer blob (a plain tar's digest is its diff ID).
    assert!(has_blob(&s, &layer));
    assert!(has_blob(&s, &id_a) && has_blob(&s, &id_b));

    // Another name of the same image keeps everything.
    s.berth(&["tag", "gc-a:1", "gc-a:2"]).ok();
    s.berth(&["rmi", "gc-a:1"]).ok();
    assert!(has_blob(&s, &id_a) && has_blob(&s, &manifest_a));
    // The last name in this namespace goes: its config and manifest go, the
    // layer stays for the other namespace.
    s.berth(&["rmi", "gc-a:2"]).ok();
    assert!(!has_blob(&s, &id_a), "config of gc-a left behind");
    assert!(!has_blob(&s, &manifest_a), "manifest of gc-a left behind");
    assert!(
        has_blob(&s, &layer),
        "a layer another namespace uses was collected"
    );
    let out = s
        .berth(&["--namespace", &ns_b, "run", "--rm", "gc-b:1", "echo", "ok"])
        .ok();
    assert_eq!(out, "ok\n");

    // A dangling image keeps its blobs too.
    let dangling = s.import_busybox("");
    assert!(has_blob(&s, &dangling));
    s.berth(&["--namespace", &ns_b, "rmi", "gc-b:1"]).ok();
    assert!(!has_blob(&s, &id_b));
    assert!(has_blob(&s, &dangling));
    assert!(
        has_blob(&s, &layer),
        "the dangling image's layer was collected"
    );
    s.berth(&["rmi", &dangling]).ok();
    assert!(blobs(&s).is_empty(), "left: {:?}", blobs(&s));
}

fn sha256(data: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data))
    )
}

/// One image of a hand-made Docker archive: the busybox layer, a creation
/// time, labels and a history.
struct Img<'a> {
    name: &'a str,
    created: &'a str,
    labels: serde_json::Value,
    history: serde_json::Value,
}

/// A Docker archive (manifest.json, config, layer) of `images`, all on the
/// busybox layer.
fn archive(dir: &Path, images: &[Img<'_>]) -> Vec<u8> {
    let layer = std::fs::read(berth_integration::fixtures::busybox_tar_in(dir)).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    berth_integration::fixtures::add_file(&mut b, "layer.tar", 0o644, &layer);
    let mut manifest = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let cfg = serde_json::to_vec(&serde_json::json!({
            "created": img.created,
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["sh"], "Labels": img.labels},
            "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
            "history": img.history,
        }))
        .unwrap();
        let path = format!("config{i}.json");
        berth_integration::fixtures::add_file(&mut b, &path, 0o644, &cfg);
        manifest.push(serde_json::json!({
            "Config": path,
            "RepoTags": if img.name.is_empty() { serde_json::Value::Null } else { serde_json::json!([img.name]) },
            "Layers": ["layer.tar"],
        }));
    }
    let m = serde_json::to_vec(&manifest).unwrap();
    berth_integration::fixtures::add_file(&mut b, "manifest.json", 0o644, &m);
    b.into_inner().unwrap()
}

fn load(s: &Stack, data: &[u8]) -> String {
    let r = s.berth_stdin(&["load"], data);
    assert_eq!(r.code, 0, "{r:?}\n{}", s.daemon_logs());
    r.stdout
}

fn add_history(created_by: &str, empty: bool, comment: &str) -> serde_json::Value {
    let mut h = serde_json::json!({"created": "2021-03-04T05:06:07Z", "created_by": created_by});
    if empty {
        h["empty_layer"] = serde_json::json!(true);
    }
    if !comment.is_empty() {
        h["comment"] = serde_json::json!(comment);
    }
    h
}

#[test]
fn history_shows_layers_and_empty_entries() {
    require_root!();
    let s = Stack::start(Mode::AllInOne);
    let name = format!("{}:1", unique("hist"));
    let long = "/bin/sh -c #(nop) ADD file:0123456789abcdef0123456789abcdef in / ";
    let out = load(
        &s,
        &archive(
            &s.dir,
            &[Img {
                name: &name,
                created: "2021-03-04T05:06:07Z",
                labels: serde_json::json!({}),
                history: serde_json::json!([
                    add_history(long, false, ""),
                    add_history("/bin/sh -c #(nop)  CMD [\"sh\"]", true, "the cmd"),
                ]),
            }],
        ),
    );
    assert_eq!(out, format!("Loaded image: {name}\n"));
    let id = inspect(&s, &name, "{{.Id}}");
    let size: i64 = inspect(&s, &name, "{{.Size}}").parse().unwrap();
    assert!(size > 0);

    let r = s.berth(&["history", &name]).ok();
    let lines: Vec<&str> = r.lines().collect();
    assert_eq!(lines.len(), 3, "{r}");
    let cols: Vec<&str> = lines[0].split("  ").filter(|c| !c.is_empty()).collect();
    let cols: Vec<&str> = cols.iter().map(|c| c.trim()).collect();
    assert_eq!(
        cols,
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        "{r}"
    );
    assert!(lines[1].starts_with(&id[7..19]), "{r}");
    assert!(lines[1].contains("/bin/sh -c #(nop)  CMD [\"sh\"]"), "{r}");
    assert!(lines[1].contains(" 0B "), "{r}");
    assert!(lines[1].trim_end().ends_with("the cmd"), "{r}");
    assert!(lines[2].starts_with("<missing>"), "{r}");
    // Cut at 45 characters with an ellipsis, unless --no-trunc.
    let cut: String = long.chars().take(44).collect();
    assert!(lines[2].contains(&format!("{cut}…")), "{r}");
    assert!(lines[2].contains(" ago "), "{r}");

    let r = s
        .berth(&[
            "image",
            "history",
            "--no-trunc",
            "--format",
            "{{.ID}}|{{.CreatedBy}}",
            &name,
        ])
        .ok();
    assert_eq!(
        r,
        format!("{id}|/bin/sh -c #(nop)  CMD [\"sh\"]\n<missing>|{long}\n")
    );
    let r = s.berth(&["history", "-q", &name]).ok();
    assert_eq!(r, format!("{}\n<missing>\n", &id[7..19]));
    // -H=false: sizes in bytes, dates in RFC 3339.
    let r = s
        .berth(&[
            "history",
            "-H=false",
            "--format",
            "{{.Size}} {{.CreatedSince}}",
            &name,
        ])
        .ok();
    let lines: Vec<&str> = r.lines().collect();
    assert_eq!(lines[0].split(' ').next(), Some("0"), "{r}");
    let bytes: i64 = lines[1].split(' ').next().unwrap().parse().unwrap();
    assert_eq!(bytes, size, "{r}");
    let when = lines[1].split(' ').nth(1).unwrap();
    assert_eq!(
        berth_common::time::parse_rfc3339(when).unwrap().timestamp(),
        1_614_834_367,
        "{r}"
    );
    let r = s.berth(&["history", "nope-no-such:1"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("No such image"), "{r:?}");

    // A commit adds an entry with the container's command, on top.
    let cname = unique("hc");
    s.berth(&["run", "--name", &cname, &name, "touch", "/made"])
        .ok();
    let committed = format!("{}:2", unique("hist"));
    s.berth(&["commit", &cname, &committed]).ok();
    let r = s
        .berth(&["history", "--format", "{{.ID}} {{.CreatedBy}}", &committed])
        .ok();
    let lines: Vec<&str> = r.lines().collect();
    assert_eq!(lines.len(), 3, "{r}");
    let cid = inspect(&s, &committed, "{{.Id}}");
    assert_eq!(lines[0], format!("{} touch /made", &cid[7..19]), "{r}");
    assert!(
        lines[1].starts_with("<missing> /bin/sh -c #(nop)  CMD"),
        "{r}"
    );
}

#[test]
fn images_filters_and_digests() {
    require_root!();
    let s = Stack::start(Mode::AllInOne);
    let p = unique("flt");
    let (a, b, c) = (format!("{p}-a:1"), format!("{p}-b:1"), format!("{p}-c:1"));
    load(
        &s,
        &archive(
            &s.dir,
            &[
                Img {
                    name: &a,
                    created: "2020-01-01T00:00:00Z",
                    labels: serde_json::json!({"tier": "x"}),
                    history: serde_json::json!([]),
                },
                Img {
                    name: &b,
                    created: "2021-01-01T00:00:00Z",
                    labels: serde_json::json!({"tier": "y"}),
                    history: serde_json::json!([]),
                },
                Img {
                    name: &c,
                    created: "2022-01-01T00:00:00Z",
                    labels: serde_json::json!({}),
                    history: serde_json::json!([]),
                },
            ],
        ),
    );
    let repos = |args: &[&str]| -> Vec<String> {
        let mut v = vec!["images", "--format", "{{.Repository}}"];
        v.extend_from_slice(args);
        s.berth(&v).ok().lines().map(String::from).collect()
    };
    let (ra, rb, rc) = (format!("{p}-a"), format!("{p}-b"), format!("{p}-c"));
    assert_eq!(repos(&[]), vec![rc.clone(), rb.clone(), ra.clone()]);
    assert_eq!(
        repos(&["--filter", &format!("before={b}")]),
        vec![ra.clone()]
    );
    assert_eq!(
        repos(&["--filter", &format!("since={b}")]),
        vec![rc.clone()]
    );
    assert_eq!(
        repos(&[
            "--filter",
            &format!("since={a}"),
            "--filter",
            &format!("before={c}")
        ]),
        vec![rb.clone()]
    );
    let id_b = inspect(&s, &b, "{{.Id}}");
    assert_eq!(
        repos(&["-f", &format!("before={}", &id_b[7..19])]),
        vec![ra.clone()]
    );
    assert_eq!(
        repos(&["--filter", "label=tier"]),
        vec![rb.clone(), ra.clone()]
    );
    assert_eq!(repos(&["--filter", "label=tier=y"]), vec![rb.clone()]);
    assert_eq!(
        repos(&["--filter", &format!("reference={p}-c*")]),
        vec![rc.clone()]
    );
    assert!(repos(&["--filter", "dangling=true"]).is_empty());
    let r = s.berth(&["images", "--filter", "before=nope-none:1"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("No such image: nope-none:1"), "{r:?}");
    let r = s.berth(&["images", "--filter", "colour=red"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("invalid filter 'colour'"), "{r:?}");

    // Loaded images have no digest.
    let r = s.berth(&["images", "--digests", &ra]).ok();
    let lines: Vec<&str> = r.lines().collect();
    assert!(lines[0].contains("DIGEST"), "{r}");
    assert!(lines[1].contains("<none>"), "{r}");
    assert_eq!(inspect(&s, &a, "{{json .RepoDigests}}"), "[]");

    // A pulled image has the digest it was pulled by.
    let reg = berth_integration::registry::Registry::start(None);
    let layout = berth_integration::registry::oci_layout(
        &s.dir,
        &[berth_integration::registry::Variant {
            arch: "amd64",
            files: &[("etc/x", "x\n")],
            layer: "gzip",
        }],
    );
    reg.skopeo_push(&layout, "dg/bb:1");
    let pulled = format!("{}/dg/bb:1", reg.addr);
    let mut cmd = s.cmd();
    cmd.env("BERTH_CONFIG", s.dir.join("berth-config"))
        .env("DOCKER_CONFIG", s.dir.join("docker-config"))
        .args(["pull", &pulled]);
    let r = run_with_stdin(cmd, b"");
    assert_eq!(r.code, 0, "{r:?}");
    let digest = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .expect("digest line")
        .to_string();
    let repo = format!("{}/dg/bb", reg.addr);
    assert_eq!(
        inspect(&s, &pulled, "{{json .RepoDigests}}"),
        format!("[\"{repo}@{digest}\"]")
    );
    let r = s.berth(&["images", "--digests", &repo]).ok();
    let row = r.lines().nth(1).unwrap();
    assert!(row.contains(&digest), "{r}");
    let r = s
        .berth(&["images", "--format", "{{.Repository}} {{.Digest}}", &repo])
        .ok();
    assert_eq!(r, format!("{repo} {digest}\n"));
}

#[test]
fn image_and_system_prune_and_df() {
    require_root!();
    let s = Stack::start(Mode::AllInOne);
    let p = unique("prn");
    let (old1, old2, new, dang) = (
        format!("{p}-old1:1"),
        format!("{p}-old2:1"),
        format!("{p}-new:1"),
        format!("{p}-d:1"),
    );
    let img = |name: &str, created: &str, keep: &str| Img {
        name: Box::leak(name.to_string().into_boxed_str()),
        created: Box::leak(created.to_string().into_boxed_str()),
        labels: serde_json::json!({"keep": keep}),
        history: serde_json::json!([]),
    };
    load(
        &s,
        &archive(
            &s.dir,
            &[
                img(&old1, "2020-01-01T00:00:00Z", "no"),
                img(&old2, "2020-02-01T00:00:00Z", "yes"),
                img(&new, "2022-01-01T00:00:00Z", "no"),
                img(&dang, "2019-01-01T00:00:00Z", "no"),
            ],
        ),
    );
    let dangling_id = inspect(&s, &dang, "{{.Id}}");
    // Loading another image under the same name leaves the first dangling.
    load(
        &s,
        &archive(&s.dir, &[img(&dang, "2023-01-01T00:00:00Z", "no")]),
    );
    let dangling = s
        .berth(&["images", "-q", "--no-trunc", "-f", "dangling=true"])
        .ok();
    assert_eq!(dangling.trim(), dangling_id);

    // Without -f: docker's prompt; "n" keeps everything.
    let r = s.berth_stdin(&["image", "prune"], b"n\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        "WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] "
    );
    assert!(has_blob(&s, &dangling_id));
    let r = s.berth_stdin(&["image", "prune"], b"y\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("Deleted Images:\ndeleted: {dangling_id}\n")),
        "{r:?}"
    );
    assert!(r.stdout.contains("\nTotal reclaimed space: "), "{r:?}");
    assert!(
        !has_blob(&s, &dangling_id),
        "the pruned image's config stays"
    );
    assert!(s
        .berth(&["images", "-q", "-f", "dangling=true"])
        .ok()
        .is_empty());
    // Nothing left to prune.
    let r = s.berth(&["image", "prune", "-f"]).ok();
    assert_eq!(r, "Total reclaimed space: 0B\n");

    // -a with until= and label=: only old1 (before 2020-01-15, keep=no).
    let r = s
        .berth(&[
            "image",
            "prune",
            "-a",
            "-f",
            "--filter",
            "until=2020-01-15T00:00:00Z",
            "--filter",
            "label=keep=no",
        ])
        .ok();
    assert!(r.contains(&format!("untagged: {old1}\n")), "{r}");
    assert!(s.berth(&["image", "inspect", &old1]).code != 0);
    assert_eq!(s.berth(&["image", "inspect", &old2]).code, 0);
    // label!= and a duration: old2 is kept by its label.
    let r = s
        .berth(&[
            "image",
            "prune",
            "-af",
            "--filter",
            "until=48h",
            "--filter",
            "label!=keep=yes",
        ])
        .ok();
    assert!(r.contains(&format!("untagged: {new}\n")), "{r}");
    assert!(r.contains(&format!("untagged: {dang}\n")), "{r}");
    assert_eq!(s.berth(&["image", "inspect", &old2]).code, 0);
    let r = s.berth(&["image", "prune", "-f", "--filter", "colour=red"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("invalid filter 'colour'"), "{r:?}");
    let r = s.berth_stdin(&["image", "prune", "-a"], b"\n");
    assert_eq!(
        r.stdout,
        "WARNING! This will remove all images without at least one container associated to them.\nAre you sure you want to continue? [y/N] "
    );

    // system df / system prune with a stopped container using old2 and a
    // dangling image.
    let cname = unique("stopped");
    s.berth(&[
        "run",
        "--name",
        &cname,
        &old2,
        "sh",
        "-c",
        "echo data > /file",
    ])
    .ok();
    let cid = s
        .berth(&["inspect", "-f", "{{.Id}}", &cname])
        .ok()
        .trim()
        .to_string();
    let loose = s.import_busybox("");
    let df = s.berth(&["system", "df"]).ok();
    let lines: Vec<Vec<&str>> = df.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines[0],
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
        "{df}"
    );
    assert_eq!(&lines[1][..3], ["Images", "2", "1"], "{df}");
    assert_eq!(&lines[2][..3], ["Containers", "1", "0"], "{df}");
    assert!(
        lines[2][4].ends_with('B') && lines[2][5] == "(100%)",
        "{df}"
    );
    assert_eq!(lines[3], ["Local", "Volumes", "0", "0", "0B", "0B"], "{df}");
    assert_eq!(lines[4], ["Build", "Cache", "0", "0", "0B", "0B"], "{df}");
    let v = s.berth(&["system", "df", "-v"]).ok();
    for want in [
        "Images space usage:",
        "SHARED SIZE",
        &format!("{p}-old2 "),
        "Containers space usage:",
        &cid[..12],
        &cname,
        "Exited (0)",
        "Local Volumes space usage:",
        "Build cache usage: 0B",
    ] {
        assert!(v.contains(want), "{want} missing:\n{v}");
    }

    let r = s.berth_stdin(&["system", "prune"], b"no\n");
    assert_eq!(
        r.stdout,
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n  - all dangling images\n\nAre you sure you want to continue? [y/N] "
    );
    assert_eq!(s.berth(&["inspect", &cname]).code, 0);
    let r = s.berth(&["system", "prune", "-f"]).ok();
    assert!(
        r.starts_with(&format!("Deleted Containers:\n{cid}\n\nDeleted Images:\n")),
        "{r}"
    );
    assert!(r.contains(&format!("deleted: {loose}\n")), "{r}");
    assert!(r.contains("Total reclaimed space: "), "{r}");
    assert!(s.berth(&["inspect", &cname]).code != 0);
    assert_eq!(s.berth(&["image", "inspect", &old2]).code, 0);
    // -a: the image no container uses goes too, and its blobs.
    let old2_id = inspect(&s, &old2, "{{.Id}}");
    let r = s.berth(&["system", "prune", "-a", "-f"]).ok();
    assert!(r.contains(&format!("untagged: {old2}\n")), "{r}");
    assert!(s.berth(&["images", "-aq"]).ok().is_empty());
    assert!(!has_blob(&s, &old2_id));
    assert!(blobs(&s).is_empty(), "{:?}", blobs(&s));
}

/// A one-file HTTP server on 127.0.0.1: GET /busybox.tar answers the file,
/// anything else 404. Serves `count` requests, then its thread ends.
fn http_server(file: PathBuf, count: usize) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        for _ in 0..count {
            let Ok((mut conn, _)) = l.accept() else {
                return;
            };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            if line.starts_with("GET /busybox.tar ") {
                let data = std::fs::read(&file).unwrap();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    data.len()
                );
                let _ = conn.write_all(&data);
            } else {
                let _ = conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    });
    (addr, h)
}

#[test]
fn import_from_a_url() {
    require_root!();
    let s = Stack::start(Mode::AllInOne);
    let tar = berth_integration::fixtures::busybox_tar_in(&s.dir);
    let (addr, server) = http_server(tar, 2);
    let url = format!("http://{addr}/busybox.tar");
    let name = format!("{}:1", unique("urlimg"));
    let r = s.berth(&["import", "-c", "CMD [\"echo\", \"from url\"]", &url, &name]);
    assert_eq!(r.code, 0, "{r:?}\n{}", s.daemon_logs());
    assert!(r.stdout.trim().starts_with("sha256:"), "{r:?}");
    assert_eq!(s.run(&[&name]).ok(), "from url\n");
    let h = s
        .berth(&["history", "--format", "{{.Comment}}", &name])
        .ok();
    assert_eq!(h, format!("Imported from {url}\n"));

    // A 404 is an error and leaves nothing.
    let before = blobs(&s);
    let r = s.berth(&[
        "image",
        "import",
        &format!("http://{addr}/missing.tar"),
        "urlbad:1",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("404"), "{r:?}");
    assert_eq!(s.berth(&["image", "inspect", "urlbad:1"]).code, 1);
    assert_eq!(blobs(&s), before);
    server.join().unwrap();
    // Other schemes are refused by the client.
    let r = s.berth(&["import", "ftp://127.0.0.1/x.tar"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("only http:// and https://"), "{r:?}");
}

#[test]
fn save_load_prune_and_gc_with_split_services() {
    require_root!();
    let s = Stack::start(Mode::Split);
    let name = format!("{}:1", unique("splitbb"));
    let id = s.import_busybox(&name);
    let out = s.cmd().args(["save", &name]).output().expect("berth save");
    assert!(out.status.success(), "{out:?}");
    s.berth(&["rmi", &name]).ok();
    assert!(blobs(&s).is_empty(), "rmi left blobs: {:?}", blobs(&s));
    let r = s.berth_stdin(&["load"], &out.stdout);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(inspect(&s, &name, "{{.Id}}"), id);
    assert_eq!(s.run(&[&name, "echo", "split"]).ok(), "split\n");
    let r = s.berth(&["image", "prune", "-a", "-f"]).ok();
    assert!(r.contains(&format!("untagged: {name}\n")), "{r}");
    assert!(blobs(&s).is_empty(), "prune left blobs: {:?}", blobs(&s));
}
