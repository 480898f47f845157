//! End-to-end: named and anonymous volumes, bind mounts, tmpfs,
//! --volumes-from, size-limited volumes, copy-up, the rm/prune rules and
//! the symlink escapes, against the real stack (overlayfs, loop devices,
//! ext4, tmpfs).

use std::path::Path;

use berth_integration::{require_root, unique, Mode, Stack};

fn stack_with_busybox() -> Stack {
    let s = Stack::start(Mode::AllInOne);
    s.import_busybox("busybox");
    s
}

/// A mount point of the host's mount namespace at or below `path`.
fn host_mounts_under(path: &Path) -> Vec<String> {
    let p = path.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m == &p || m.starts_with(&format!("{p}/")))
        .collect()
}

/// An image `name` made from busybox by running `script` and committing
/// with `changes`.
fn image_from(s: &Stack, name: &str, script: &str, changes: &[&str]) {
    let c = unique("mk");
    let r = s.berth(&["run", "--name", &c, "busybox", "sh", "-c", script]);
    assert_eq!(r.code, 0, "{r:?}");
    let mut args = vec!["commit"];
    for ch in changes {
        args.extend(["-c", ch]);
    }
    args.extend([c.as_str(), name]);
    let r = s.berth(&args);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(s.berth(&["rm", &c]).code, 0);
}

#[test]
fn named_volumes_persist_and_are_managed_like_docker() {
    require_root!();
    let mut s = stack_with_busybox();

    // create: a random 64-hex name when none is given; labels; ls; inspect.
    let anon = s.berth(&["volume", "create"]).ok();
    let anon = anon.trim();
    assert_eq!(anon.len(), 64, "{anon}");
    assert!(anon.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        s.berth(&["volume", "create", "--label", "tier=db", "--label", "keep", "db"])
            .ok(),
        "db\n"
    );
    let ls = s.berth(&["volume", "ls"]).ok();
    assert!(ls.starts_with("DRIVER    VOLUME NAME\n"), "{ls}");
    assert!(ls.contains("local     db\n"), "{ls}");
    assert_eq!(
        s.berth(&["volume", "ls", "-q", "--filter", "label=tier=db"])
            .ok(),
        "db\n"
    );
    assert_eq!(
        s.berth(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            "name=b",
            "-f",
            "label=keep"
        ])
        .ok(),
        "db\n"
    );
    assert_eq!(
        s.berth(&[
            "volume",
            "ls",
            "--format",
            "{{.Name}}:{{.Driver}}:{{.Labels}}",
            "-f",
            "label=keep"
        ])
        .ok(),
        "db:local:keep=,tier=db\n"
    );
    let r = s.berth(&[
        "volume",
        "inspect",
        "--format",
        "{{.Name}} {{.Driver}} {{.Scope}} {{.Labels.tier}} {{.Mountpoint}}",
        "db",
    ]);
    let data = s.root.join("volumes/default/db/_data");
    assert_eq!(r.ok(), format!("db local local db {}\n", data.display()));
    let doc: serde_json::Value =
        serde_json::from_str(&s.berth(&["volume", "inspect", "db"]).ok()).unwrap();
    for k in [
        "CreatedAt",
        "Driver",
        "Labels",
        "Mountpoint",
        "Name",
        "Options",
        "Scope",
    ] {
        assert!(doc[0].get(k).is_some(), "{k} missing: {doc}");
    }
    // Creating it again is fine and changes nothing (docker).
    assert_eq!(s.berth(&["volume", "create", "db"]).ok(), "db\n");

    // The database-persistence exercise: a file store appended to by one
    // container after another, each removed.
    for i in 1..=3 {
        let r = s.run(&[
            "-v",
            "db:/var/lib/store",
            "busybox",
            "sh",
            "-c",
            &format!("echo row{i} >> /var/lib/store/table; cat /var/lib/store/table | wc -l"),
        ]);
        assert_eq!(r.ok().trim(), i.to_string());
    }
    // Dangling: no container uses the volumes now.
    let dangling = s.berth(&["volume", "ls", "-q", "-f", "dangling=true"]).ok();
    assert!(
        dangling.contains("db\n") && dangling.contains(anon),
        "{dangling}"
    );

    // In use: rm is refused and names the container.
    let r = s.berth(&[
        "create", "--name", "user1", "-v", "db:/d", "busybox", "true",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let id = s.id_of("user1");
    let r = s.berth(&["volume", "rm", "db"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("volume is in use") && r.stderr.contains(&id),
        "{r:?}"
    );
    assert_eq!(
        s.berth(&["volume", "ls", "-q", "-f", "dangling=false"])
            .ok(),
        "db\n"
    );

    // Records and data survive a crash of the daemon.
    s.kill9_and_restart();
    assert_eq!(
        s.run(&["-v", "db:/s", "busybox", "cat", "/s/table"]).ok(),
        "row1\nrow2\nrow3\n"
    );
    let r = s.berth(&["volume", "rm", "db"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(s.berth(&["rm", "user1"]).code, 0);
    assert_eq!(
        s.berth(&["volume", "rm", "db", anon]).ok(),
        format!("db\n{anon}\n")
    );
    assert!(!data.exists());
    let r = s.berth(&["volume", "rm", "db"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no such volume"), "{r:?}");
    assert_eq!(s.berth(&["volume", "rm", "-f", "db"]).code, 0);
    assert_eq!(s.berth(&["volume", "ls", "-q"]).ok(), "");
}

#[test]
fn binds_tmpfs_read_only_and_inspect() {
    require_root!();
    let s = stack_with_busybox();
    let host = s.dir.join("host");
    let missing = host.join("made/by/berth");
    let h = missing.to_string_lossy().into_owned();

    // -v creates a missing host directory; writes land on the host.
    let r = s.run(&[
        "-v",
        &format!("{h}:/h"),
        "busybox",
        "sh",
        "-c",
        "echo hi > /h/f",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read_to_string(missing.join("f")).unwrap(), "hi\n");
    // :ro is read-only inside: EROFS.
    let r = s.run(&[
        "-v",
        &format!("{h}:/h:ro"),
        "busybox",
        "sh",
        "-c",
        "cat /h/f; echo x > /h/g",
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout, "hi\n");
    assert!(r.stderr.contains("Read-only file system"), "{r:?}");
    assert!(!missing.join("g").exists());
    // A read-only volume via --mount too.
    let r = s.run(&[
        "--mount",
        "type=volume,src=rov,dst=/v,readonly",
        "busybox",
        "touch",
        "/v/x",
    ]);
    assert!(r.stderr.contains("Read-only file system"), "{r:?}");
    // --mount type=bind needs an existing source (docker).
    let r = s.run(&[
        "--mount",
        "type=bind,src=/no/such/berth/dir,dst=/x",
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        r.stderr
            .contains("bind source path does not exist: /no/such/berth/dir"),
        "{r:?}"
    );

    // tmpfs: sized, and its content is gone once the container stops.
    let r = s.berth(&[
        "run",
        "--name",
        "tm",
        "--tmpfs",
        "/scratch:size=2m,mode=1770",
        "--mount",
        "type=tmpfs,dst=/t2,tmpfs-size=4m",
        "busybox",
        "sh",
        "-c",
        "ls /scratch; echo data > /scratch/f; df -k /scratch /t2 | tail -2 | awk '{print $2}'; stat -c %a /scratch",
    ]);
    assert_eq!(r.ok(), "2048\n4096\n1770\n");
    let r = s.berth(&["start", "-a", "tm"]);
    assert_eq!(
        r.ok(),
        "2048\n4096\n1770\n",
        "the file in tmpfs outlived the stop"
    );

    // inspect shows Mounts and the HostConfig fields as docker does.
    let r = s.berth(&[
        "create",
        "--name",
        "ins",
        "-v",
        &format!("{h}:/h:ro"),
        "-v",
        "named:/n",
        "-v",
        "/anon",
        "--tmpfs",
        "/run:size=1m",
        "--mount",
        "type=bind,src=/tmp,dst=/ht,bind-propagation=private",
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc: serde_json::Value = serde_json::from_str(&s.berth(&["inspect", "ins"]).ok()).unwrap();
    let c = &doc[0];
    assert_eq!(
        c["HostConfig"]["Binds"],
        serde_json::json!([format!("{h}:/h:ro"), "named:/n", "/anon"])
    );
    assert_eq!(
        c["HostConfig"]["Tmpfs"],
        serde_json::json!({"/run": "size=1m"})
    );
    assert_eq!(c["HostConfig"]["Mounts"][0]["Type"], "bind");
    assert_eq!(c["HostConfig"]["Mounts"][0]["Target"], "/ht");
    assert_eq!(
        c["HostConfig"]["Mounts"][0]["BindOptions"]["Propagation"],
        "private"
    );
    assert_eq!(c["Config"]["Volumes"], serde_json::json!({"/anon": {}}));
    let mounts = c["Mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 4, "{mounts:?}");
    let by_dest = |d: &str| {
        mounts
            .iter()
            .find(|m| m["Destination"] == d)
            .unwrap()
            .clone()
    };
    let b = by_dest("/h");
    assert_eq!(
        (
            b["Type"].as_str(),
            b["Source"].as_str(),
            b["RW"].as_bool(),
            b["Mode"].as_str()
        ),
        (Some("bind"), Some(h.as_str()), Some(false), Some("ro"))
    );
    assert_eq!(b["Propagation"], "rprivate");
    let n = by_dest("/n");
    assert_eq!(
        (n["Type"].as_str(), n["Name"].as_str(), n["Driver"].as_str()),
        (Some("volume"), Some("named"), Some("local"))
    );
    assert_eq!(
        n["Source"],
        s.root
            .join("volumes/default/named/_data")
            .to_string_lossy()
            .as_ref()
    );
    assert_eq!(by_dest("/ht")["Propagation"], "private");
    let a = by_dest("/anon");
    assert_eq!(a["Name"].as_str().unwrap().len(), 64);
    assert_eq!(
        s.berth(&[
            "inspect",
            "--format",
            "{{range .Mounts}}{{.Destination}} {{end}}",
            "ins"
        ])
        .ok(),
        "/anon /h /ht /n \n"
    );
    // A field of a parenthesized result, as docker users write it.
    assert_eq!(
        s.berth(&["inspect", "--format", "{{(index .Mounts 1).Source}}", "ins"])
            .ok(),
        format!("{h}\n")
    );
}

#[test]
fn size_limited_and_tmpfs_volumes() {
    require_root!();
    let mut s = stack_with_busybox();
    assert_eq!(
        s.berth(&["volume", "create", "--opt", "size=16m", "quota"])
            .ok(),
        "quota\n"
    );
    let data = s.root.join("volumes/default/quota/_data");
    assert_eq!(host_mounts_under(&data).len(), 1);
    let df = "df -k /q | tail -1 | awk '{print $2}'";
    let r = s.run(&["-v", "quota:/q", "busybox", "sh", "-c", df]);
    let kib: u64 = r.ok().trim().parse().unwrap();
    assert!((12_000..=16_384).contains(&kib), "df shows {kib} KiB");
    // Writing past the limit fails with ENOSPC; what fits is kept.
    let r = s.run(&[
        "-v",
        "quota:/q",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/q/big bs=1M count=40",
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("No space left on device"), "{r:?}");
    // An empty new volume: no lost+found from mkfs.
    let r = s.run(&["-v", "quota:/q", "busybox", "ls", "/q"]);
    assert_eq!(r.ok(), "big\n");
    assert_eq!(
        s.berth(&["volume", "inspect", "-f", "{{.Options.size}}", "quota"])
            .ok(),
        "16m\n"
    );

    // tmpfs through the local driver's options.
    assert_eq!(
        s.berth(&[
            "volume",
            "create",
            "--opt",
            "type=tmpfs",
            "--opt",
            "device=tmpfs",
            "--opt",
            "o=size=8m,mode=0750",
            "tv"
        ])
        .ok(),
        "tv\n"
    );
    let r = s.run(&[
        "-v",
        "tv:/t",
        "busybox",
        "sh",
        "-c",
        "df -k /t | tail -1 | awk '{print $2}'; stat -c %a /t",
    ]);
    assert_eq!(r.ok(), "8192\n750\n");

    // After a crash the volumes are mounted again, data kept.
    s.kill9_and_restart();
    let r = s.run(&[
        "-v",
        "quota:/q",
        "busybox",
        "sh",
        "-c",
        &format!("ls /q; {df}"),
    ]);
    let out = r.ok();
    assert!(out.starts_with("big\n"), "{out}");
    assert_eq!(host_mounts_under(&data).len(), 1);

    // rm unmounts and deletes; nothing stays mounted.
    assert_eq!(
        s.berth(&["volume", "rm", "quota", "tv"]).ok(),
        "quota\ntv\n"
    );
    assert!(host_mounts_under(&s.root.join("volumes")).is_empty());
    assert!(!data.exists());

    // Bad options: clear errors, nothing made.
    for (args, why) in [
        (vec!["--opt", "size=1k"], "too small"),
        (vec!["--opt", "size=lots"], "invalid size option"),
        (vec!["--opt", "foo=bar"], "invalid option: \"foo\""),
        (
            vec!["--opt", "o=size=1m"],
            "missing required option: \"type\"",
        ),
        (vec!["-d", "nfs"], "plugin \"nfs\" not found"),
    ] {
        let mut a = vec!["volume", "create"];
        a.extend(args.iter());
        a.push("badvol");
        let r = s.berth(&a);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stderr.contains(why), "{args:?}: {r:?}");
    }
    assert_eq!(s.berth(&["volume", "ls", "-q"]).ok(), "");
    assert!(!s.root.join("volumes/default/badvol").exists());
}

#[test]
fn copy_up_anonymous_volumes_and_removal_rules() {
    require_root!();
    let s = stack_with_busybox();
    image_from(
        &s,
        "seeded",
        "mkdir -p /data/sub && echo seed > /data/sub/f && chown -R 1000:50 /data && chmod 750 /data",
        &["VOLUME /data"],
    );
    // The image's VOLUME: an anonymous volume filled with the image's files,
    // owner and mode included.
    let r = s.berth(&[
        "run",
        "--name",
        "a1",
        "seeded",
        "sh",
        "-c",
        "cat /data/sub/f; stat -c '%u:%g %a' /data /data/sub/f",
    ]);
    assert_eq!(r.ok(), "seed\n1000:50 750\n1000:50 644\n");
    let anon = s
        .berth(&["inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", "a1"])
        .ok()
        .trim()
        .to_string();
    assert_eq!(anon.len(), 64);
    assert_eq!(
        s.berth(&[
            "volume",
            "inspect",
            "-f",
            "{{index .Labels \"com.docker.volume.anonymous\"}}|",
            &anon
        ])
        .ok(),
        "|\n"
    );
    // A new named volume over the non-empty directory is filled too...
    assert_eq!(
        s.run(&["-v", "named:/data", "seeded", "cat", "/data/sub/f"])
            .ok(),
        "seed\n"
    );
    // ...but only when empty: what it holds wins.
    assert_eq!(
        s.run(&[
            "-v",
            "named:/data",
            "seeded",
            "sh",
            "-c",
            "echo mine > /data/sub/f"
        ])
        .code,
        0
    );
    assert_eq!(
        s.run(&["-v", "named:/data", "seeded", "cat", "/data/sub/f"])
            .ok(),
        "mine\n"
    );
    // Not with nocopy, and never for a bind mount.
    assert_eq!(
        s.run(&["-v", "nc:/data:nocopy", "seeded", "ls", "/data"])
            .ok(),
        ""
    );
    let host = s.dir.join("bind-over");
    std::fs::create_dir_all(&host).unwrap();
    let r = s.run(&[
        "-v",
        &format!("{}:/data", host.display()),
        "seeded",
        "ls",
        "/data",
    ]);
    assert_eq!(r.ok(), "");
    assert_eq!(std::fs::read_dir(&host).unwrap().count(), 0);

    // rm keeps the anonymous volume; rm -v removes it; named ones stay.
    assert_eq!(s.berth(&["rm", "a1"]).code, 0);
    assert!(s.berth(&["volume", "ls", "-q"]).ok().contains(&anon));
    s.berth(&["run", "--name", "a2", "-v", "keepme:/k", "seeded", "true"])
        .ok();
    let anon2 = s
        .berth(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{if eq .Destination \"/data\"}}{{.Name}}{{end}}{{end}}",
            "a2",
        ])
        .ok()
        .trim()
        .to_string();
    assert_eq!(anon2.len(), 64);
    assert_eq!(s.berth(&["rm", "-v", "a2"]).code, 0);
    let vols = s.berth(&["volume", "ls", "-q"]).ok();
    assert!(!vols.contains(&anon2) && vols.contains("keepme"), "{vols}");
    // --rm removes the anonymous volumes with the container.
    let before = s.berth(&["volume", "ls", "-q"]).ok();
    assert_eq!(s.run(&["-v", "/scratch", "seeded", "true"]).code, 0);
    assert_eq!(s.berth(&["volume", "ls", "-q"]).ok(), before);

    // prune: anonymous unused ones by default, -a the named ones too,
    // label filters; a used volume never.
    s.berth(&[
        "create", "--name", "holder", "-v", "named:/n", "busybox", "true",
    ])
    .ok();
    s.berth(&["volume", "create", "--label", "drop=yes", "labelled"])
        .ok();
    let r = s.berth(&["volume", "prune", "-f"]);
    let out = r.ok();
    assert!(out.starts_with("Deleted Volumes:\n"), "{out}");
    assert!(out.contains(&anon) && !out.contains("keepme"), "{out}");
    assert!(out.contains("Total reclaimed space:"), "{out}");
    let r = s.berth(&["volume", "prune", "-f", "-a", "--filter", "label=drop=yes"]);
    assert_eq!(
        r.ok(),
        "Deleted Volumes:\nlabelled\n\nTotal reclaimed space: 0B\n"
    );
    let out = s.berth(&["volume", "prune", "-af"]).ok();
    assert!(out.contains("keepme") && out.contains("nc\n"), "{out}");
    assert!(!out.contains("named"), "a used volume was pruned: {out}");
    assert_eq!(s.berth(&["volume", "ls", "-q"]).ok(), "named\n");
    // system prune --volumes: the stopped holder, then its anonymous
    // volumes (none: named stays).
    s.berth(&["run", "--name", "anonholder", "-v", "/x", "busybox", "true"])
        .ok();
    let out = s.berth(&["system", "prune", "-f", "--volumes"]).ok();
    assert!(
        out.contains("Deleted Containers:") && out.contains("Deleted Volumes:"),
        "{out}"
    );
    assert_eq!(s.berth(&["volume", "ls", "-q"]).ok(), "named\n");
    let df = s.berth(&["system", "df"]).ok();
    assert!(df.contains("Local Volumes   1"), "{df}");
}

#[test]
fn volumes_from_a_data_container() {
    require_root!();
    let s = stack_with_busybox();
    // A data container, created and never started.
    s.berth(&[
        "create",
        "--name",
        "data",
        "-v",
        "/shared",
        "-v",
        "lib:/lib2",
        "busybox",
        "true",
    ])
    .ok();
    let r = s.run(&[
        "--volumes-from",
        "data",
        "busybox",
        "sh",
        "-c",
        "echo one > /shared/f; echo two > /lib2/g",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = s.run(&[
        "--volumes-from",
        "data:ro",
        "busybox",
        "sh",
        "-c",
        "cat /shared/f /lib2/g; touch /shared/x",
    ]);
    assert_eq!(r.stdout, "one\ntwo\n", "{r:?}");
    assert!(r.stderr.contains("Read-only file system"), "{r:?}");
    let r = s.berth(&[
        "create",
        "--name",
        "c2",
        "--volumes-from",
        "data",
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let modes = s
        .berth(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Destination}}={{.RW}} {{end}}",
            "c2",
        ])
        .ok();
    assert_eq!(modes.trim(), "/lib2=true /shared=true");
    assert!(s
        .berth(&["inspect", "-f", "{{json .HostConfig.VolumesFrom}}", "c2"])
        .ok()
        .contains("data"));
    // The shared anonymous volume is not removed with the container that
    // borrowed it, and not with its own while borrowed.
    assert_eq!(s.berth(&["rm", "-v", "data"]).code, 0);
    let r = s.run(&["--volumes-from", "c2", "busybox", "cat", "/shared/f"]);
    assert_eq!(r.ok(), "one\n");
    let r = s.run(&["--volumes-from", "nosuch", "busybox", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("No such container: nosuch"), "{r:?}");
}

#[test]
fn symlinks_in_the_image_cannot_redirect_mounts_to_the_host() {
    require_root!();
    let s = stack_with_busybox();
    // A host directory the image's symlinks point at, absolute and via "..".
    let target = s.dir.join("host-target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("precious"), "host\n").unwrap();
    let t = target.to_string_lossy().into_owned();
    image_from(
        &s,
        "evil",
        &format!("ln -s /../../..{t} /abs; ln -s ../../../../../../etc /rel; mkdir -p {t}; echo image > {t}/precious"),
        &[],
    );
    let r = s.run(&[
        "-v",
        "v1:/abs",
        "-v",
        "v2:/rel",
        "--tmpfs",
        "/abs/sub",
        "evil",
        "sh",
        "-c",
        "echo inside > /abs/new; echo inside > /rel/new; ls /abs",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    // The host is untouched: nothing mounted over it, no file written.
    assert!(host_mounts_under(&target).is_empty());
    assert!(host_mounts_under(Path::new("/etc")).is_empty());
    assert!(!target.join("new").exists());
    assert!(!Path::new("/etc/new").exists());
    assert_eq!(
        std::fs::read_to_string(target.join("precious")).unwrap(),
        "host\n"
    );
    // The volumes were mounted inside the container's root and filled
    // from the image's own directories (the copy-up follows the same rule).
    let r = s.run(&["-v", "v1:/x", "busybox", "sh", "-c", "ls /x | sort"]);
    assert_eq!(r.ok(), "new\nprecious\nsub\n");
    let r = s.run(&["-v", "v2:/x", "busybox", "cat", "/x/passwd"]);
    assert!(r.ok().starts_with("root:x:0:0:root:/root:/bin/sh\n"));
}

#[test]
fn bad_mounts_are_refused_before_anything_is_created() {
    require_root!();
    let s = stack_with_busybox();
    for (args, why) in [
        (vec!["-v", "./rel:/x"], "use absolute path"),
        (vec!["-v", "vol:rel"], "invalid volume specification"),
        (vec!["-v", "/a:/b:bogus"], "invalid mode: bogus"),
        (vec!["-v", "vol:/"], "destination can't be '/'"),
        (
            vec!["--mount", "type=nfs,src=x,dst=/x"],
            "unknown mount type \"nfs\"",
        ),
        (vec!["--mount", "type=bind,src=/tmp"], "target is required"),
        (
            vec!["--mount", "type=volume,src=vv,dst=/x,volume-driver=nfs"],
            "plugin \"nfs\" not found",
        ),
        (
            vec!["--mount", "type=volume,src=vv,dst=/x,volume-opt=size=1k"],
            "too small",
        ),
        (vec!["--mount", "bogus=1,dst=/x"], "unexpected key 'bogus'"),
        (vec!["--tmpfs", "rel"], "must be absolute"),
        (vec!["--tmpfs", "/t:size=lots"], "invalid tmpfs option"),
        (
            vec!["-v", "aa:/x", "-v", "bb:/x/"],
            "Duplicate mount point: /x",
        ),
        (vec!["--volumes-from", "c:zz"], "invalid volumes-from"),
    ] {
        let mut a = vec!["run", "--name", "never"];
        a.extend(args.iter());
        a.extend(["busybox", "true"]);
        let r = s.berth(&a);
        assert_eq!(r.code, 125, "{args:?}: {r:?}");
        assert!(r.stderr.contains(why), "{args:?}: {r:?}");
    }
    assert_eq!(s.berth(&["ps", "-aq"]).ok(), "");
    assert_eq!(s.berth(&["volume", "ls", "-q"]).ok(), "");
    assert!(!s.root.join("volumes/default/aa").exists());
}

#[test]
fn a_half_made_volume_is_gone_after_a_restart() {
    require_root!();
    let mut s = stack_with_busybox();
    s.berth(&["volume", "create", "whole"]).ok();
    s.kill9();
    // What a crash between the steps of a create leaves: a temporary
    // directory, and a directory renamed into place but never recorded.
    let vols = s.root.join("volumes/default");
    std::fs::create_dir_all(vols.join(".tmp-0123456789abcdef/_data")).unwrap();
    std::fs::create_dir_all(vols.join("ghost/_data")).unwrap();
    std::fs::write(vols.join("ghost/_data/f"), "x").unwrap();
    s.restart();
    assert_eq!(s.berth(&["volume", "ls", "-q"]).ok(), "whole\n");
    assert!(!vols.join("ghost").exists());
    assert!(!vols.join(".tmp-0123456789abcdef").exists());
    assert!(vols.join("whole/_data").is_dir());
    // The name is free again.
    assert_eq!(s.berth(&["volume", "create", "ghost"]).ok(), "ghost\n");
    assert_eq!(s.run(&["-v", "ghost:/g", "busybox", "ls", "/g"]).ok(), "");
}

/// Makes `dir` a mount point of its own with `propagation`.
fn bind_onto_itself(dir: &Path, propagation: nix::mount::MsFlags) {
    use nix::mount::{mount, MsFlags};
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
    mount(None::<&str>, dir, None::<&str>, propagation, None::<&str>).unwrap();
}

#[test]
fn bind_propagation_follows_the_host_mount() {
    require_root!();
    let s = stack_with_busybox();
    use nix::mount::{mount, MsFlags};
    // A shared mount of the test's own (unmounted with the stack's dir).
    let shared = s.dir.join("shared");
    std::fs::create_dir_all(shared.join("sub")).unwrap();
    bind_onto_itself(&shared, MsFlags::MS_SHARED);
    let sh = shared.to_string_lossy().into_owned();
    for (name, mode) in [("slave", ":rslave"), ("private", "")] {
        let r = s.berth(&[
            "run",
            "-d",
            "--name",
            name,
            "-v",
            &format!("{sh}:/h{mode}"),
            "busybox",
            "sleep",
            "300",
        ]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    // A mount the host makes afterwards reaches the rslave bind only.
    mount(
        Some("tmpfs"),
        &shared.join("sub"),
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    std::fs::write(shared.join("sub/f"), "late\n").unwrap();
    assert_eq!(
        s.berth(&["exec", "slave", "cat", "/h/sub/f"]).ok(),
        "late\n"
    );
    let r = s.berth(&["exec", "private", "cat", "/h/sub/f"]);
    assert_ne!(r.code, 0, "{r:?}");
    // Nothing the container mounts comes back to the host.
    assert!(host_mounts_under(&s.state)
        .iter()
        .all(|m| !m.ends_with("/rootfs/h")));
    // Shared or slave propagation from a private mount would silently not
    // work: refused as docker does.
    let private = s.dir.join("private");
    std::fs::create_dir_all(&private).unwrap();
    bind_onto_itself(&private, MsFlags::MS_PRIVATE);
    let p = private.to_string_lossy().into_owned();
    // Shared propagation cannot work with the slave root: refused.
    let r = s.run(&["-v", &format!("{sh}:/p:rshared"), "busybox", "true"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        r.stderr
            .contains("bind propagation rshared is not supported"),
        "{r:?}"
    );
    let r = s.run(&[
        "--mount",
        &format!("type=bind,src={p},dst=/p,bind-propagation=rslave"),
        "busybox",
        "true",
    ]);
    assert!(r.stderr.contains("not a shared or slave mount"), "{r:?}");
    assert_eq!(s.berth(&["ps", "-aq"]).ok().lines().count(), 2);
}

#[test]
fn a_bind_backed_volume_never_takes_the_host_files_with_it() {
    require_root!();
    let mut s = stack_with_busybox();
    let host = s.dir.join("precious");
    std::fs::create_dir_all(host.join("sub")).unwrap();
    std::fs::write(host.join("sub/keep"), "mine\n").unwrap();
    let h = host.to_string_lossy().into_owned();
    let dev = format!("device={h}");
    s.berth(&[
        "volume",
        "create",
        "--opt",
        "type=none",
        "--opt",
        "o=bind",
        "--opt",
        &dev,
        "bv",
    ])
    .ok();
    let data = s.root.join("volumes/default/bv/_data");
    let r = s.run(&[
        "-v",
        "bv:/v",
        "busybox",
        "sh",
        "-c",
        "cat /v/sub/keep; echo new > /v/new",
    ]);
    assert_eq!(r.ok(), "mine\n");
    assert_eq!(std::fs::read_to_string(host.join("new")).unwrap(), "new\n");
    // A restart mounts it once, not once more.
    s.kill9_and_restart();
    assert_eq!(host_mounts_under(&data).len(), 1);
    // A mount lost meanwhile is made again before a container uses it,
    // rather than the container writing to the bare directory.
    nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH).unwrap();
    let r = s.run(&["-v", "bv:/v", "busybox", "cat", "/v/sub/keep"]);
    assert_eq!(r.ok(), "mine\n");
    // rm takes the bind away, never the host's files.
    assert_eq!(s.berth(&["volume", "rm", "bv"]).ok(), "bv\n");
    assert!(host_mounts_under(&data).is_empty());
    assert!(!s.root.join("volumes/default/bv").exists());
    assert_eq!(
        std::fs::read_to_string(host.join("sub/keep")).unwrap(),
        "mine\n"
    );
    assert!(host.join("new").exists());
}

#[test]
fn read_only_binds_are_read_only_all_the_way_down() {
    require_root!();
    let s = stack_with_busybox();
    use nix::mount::{mount, MsFlags};
    let host = s.dir.join("rotree");
    std::fs::create_dir_all(host.join("sub")).unwrap();
    // A mount of its own below the bound directory (undone with the
    // stack's directory).
    mount(
        Some("tmpfs"),
        &host.join("sub"),
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let h = host.to_string_lossy().into_owned();
    let r = s.run(&[
        "-v",
        &format!("{h}:/d:ro"),
        "busybox",
        "sh",
        "-c",
        "touch /d/top; echo top=$?; touch /d/sub/below; echo below=$?",
    ]);
    assert_eq!(r.stdout, "top=1\nbelow=1\n", "{r:?}");
    assert!(r.stderr.contains("Read-only file system"), "{r:?}");
    assert!(!host.join("sub/below").exists());
    // Without :ro both are writable.
    let r = s.run(&["-v", &format!("{h}:/d"), "busybox", "touch", "/d/sub/below"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(host.join("sub/below").exists());
}
