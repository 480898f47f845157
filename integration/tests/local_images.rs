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
    let out = s
        .cmd()
        .args(["save", &tag1])
        .output()
        .expect("berth save");
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
        format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&layer))),
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
    let m: serde_json::Value = serde_json::from_slice(&read_member(
        &std::fs::read(&all).unwrap(),
        "manifest.json",
    ))
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
    assert!(s.root.join("tmp").read_dir().map_or(true, |mut d| d.next().is_none()));
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
        let r = podman.run(&["save", "--format", fmt, "-o", file.to_str().unwrap(), &pname]);
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
        ("not an archive", b"this is not a tar archive at all".repeat(100)),
        ("empty", Vec::new()),
    ] {
        let r = s.berth_stdin(&["load"], &data);
        assert_ne!(r.code, 0, "{what}: {r:?}");
        assert!(r.stderr.contains("invalid archive"), "{what}: {r:?}");
        assert!(s.berth(&["images", "-aq"]).ok().trim().is_empty(), "{what}");
        assert_eq!(blobs(&s), before_blobs, "{what}: blobs left behind");
        assert!(
            s.root.join("tmp").read_dir().map_or(true, |mut d| d.next().is_none()),
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
    let s = Stack::start(Mode::AllInOne);
    let tar = berth_integration::fixtures::busybox_tar_in(&s.dir);
    let ns_b = unique("nsb");
    let id_a = s.import_busybox("gc-a:1");
    let r = s.berth(&["--namespace", &ns_b, "import", tar.to_str().unwrap(), "gc-b:1"]);
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
    assert!(has_blob(&s, &layer), "a layer another namespace uses was collected");
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
    assert!(has_blob(&s, &layer), "the dangling image's layer was collected");
    s.berth(&["rmi", &dangling]).ok();
    assert!(blobs(&s).is_empty(), "left: {:?}", blobs(&s));
}
