//! Hostile input: tarballs that try to escape, blobs with wrong digests.

use berth_integration::fixtures::{add_dir, add_file, add_symlink, write_busybox_tar};
use berth_integration::{require_root, unique, Mode, Stack};
use berth_proto::content::v1::content_client::ContentClient;
use berth_proto::content::v1::{InfoRequest, WriteRequest};

/// A busybox rootfs with extra entries appended by `extra`.
fn busybox_plus(
    s: &Stack,
    name: &str,
    extra: impl FnOnce(&mut tar::Builder<std::fs::File>),
) -> std::path::PathBuf {
    // Re-create the busybox tar and append to it: tar::Builder cannot append
    // to an existing archive, so write entries of both into a new one.
    let base = s.dir.join(format!("{name}-base.tar"));
    write_busybox_tar(&base);
    let out = s.dir.join(format!("{name}.tar"));
    let mut b = tar::Builder::new(std::fs::File::create(&out).unwrap());
    let mut a = tar::Archive::new(std::fs::File::open(&base).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let path = e.path().unwrap().into_owned();
        if h.entry_type().is_symlink() {
            let target = e.link_name().unwrap().unwrap().into_owned();
            b.append_link(&mut h, &path, &target).unwrap();
        } else {
            b.append_data(&mut h, &path, &mut e).unwrap();
        }
    }
    extra(&mut b);
    b.finish().unwrap();
    out
}

/// Appends an entry whose name is written raw, bypassing the tar crate's
/// own checks (which refuse `..`).
fn add_raw_file(b: &mut tar::Builder<std::fs::File>, raw_path: &str, data: &[u8]) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..raw_path.len()].copy_from_slice(raw_path.as_bytes());
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

#[test]
fn dotdot_entries_are_refused() {
    require_root!();
    let s = Stack::start(Mode::AllInOne);
    let marker = unique("berth-escape");
    let target = format!("/tmp/{marker}");
    let tar = busybox_plus(&s, "dotdot", |b| {
        add_raw_file(
            b,
            &format!("../../../../../../../../tmp/{marker}"),
            b"pwned",
        );
    });
    let r = s.berth(&["image", "import", tar.to_str().unwrap(), "evil:dotdot"]);
    assert!(
        !std::path::Path::new(&target).exists(),
        "the layer wrote outside the snapshot"
    );
    assert_ne!(r.code, 0, "an escaping tar must be refused: {r:?}");
    assert!(
        r.stderr.contains("escape") || r.stderr.contains(".."),
        "unclear error: {r:?}"
    );
    assert!(!s.berth(&["images"]).ok().contains("evil"));
}

#[test]
fn symlinks_cannot_lead_writes_out() {
    require_root!();
    let s = Stack::start(Mode::AllInOne);
    let marker = unique("berth-symlink-escape");
    let tar = busybox_plus(&s, "symlink", |b| {
        add_symlink(b, "evil", "/");
        add_symlink(b, "up", "../../../../../../../../../..");
        add_dir(b, "evil/tmp", 0o1777);
        add_file(b, &format!("evil/tmp/{marker}"), 0o644, b"contained-1");
        add_file(b, &format!("up/tmp/{marker}-2"), 0o644, b"contained-2");
    });
    let r = s.berth(&["image", "import", tar.to_str().unwrap(), "evil:symlink"]);
    assert!(
        !std::path::Path::new(&format!("/tmp/{marker}")).exists(),
        "write escaped through an absolute symlink"
    );
    assert!(
        !std::path::Path::new(&format!("/tmp/{marker}-2")).exists(),
        "write escaped through a relative symlink"
    );
    if r.code == 0 {
        // Contained: the files are inside the image's own /tmp.
        let out = s
            .run(&[
                "evil:symlink",
                "cat",
                &format!("/tmp/{marker}"),
                &format!("/tmp/{marker}-2"),
            ])
            .ok();
        assert_eq!(out, "contained-1contained-2");
    } else {
        assert!(!r.stderr.is_empty());
    }
}

#[test]
fn blob_with_wrong_digest_is_never_committed() {
    require_root!();
    let s = Stack::start(Mode::AllInOne);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = ContentClient::new(berth_common::connect_unix(s.state.join("content.sock")));
        let claimed = format!("sha256:{}", "ab".repeat(32));
        let msgs = vec![WriteRequest {
            r#ref: "wrong-digest".into(),
            expected: claimed.clone(),
            total: 5,
            offset: 0,
            data: b"hello".to_vec().into(),
            commit: true,
            labels: Default::default(),
            lease: String::new(),
        }];
        let err = c.write(futures::stream::iter(msgs)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("digest"), "{err:?}");
        let info = c
            .info(InfoRequest {
                digest: claimed.clone(),
            })
            .await;
        assert_eq!(info.unwrap_err().code(), tonic::Code::NotFound);
        let path = s.root.join("content/blobs/sha256").join("ab".repeat(32));
        assert!(!path.exists());
    });
}
