//! `ImportImage`: a root filesystem tarball becomes a one-layer OCI image.
//!
//! The tarball is written to an ingest while two digests are computed in the
//! same pass: the layer digest over the bytes as received and, for gzip
//! input, the diff ID over the decompressed stream. The stored blob is then
//! checked to be a real tar archive before anything is committed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use berth_proto::content::v1::{Image, ImportHeader, ImportImageResponse};
use berth_proto::types::v1::Descriptor;
use flate2::read::MultiGzDecoder as GzReader;
use flate2::write::MultiGzDecoder as GzWriter;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::changes::RunConfig;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::ingest::Ingest;
use crate::store::Store;

/// Media type of an OCI image manifest.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed layer.
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip-compressed layer.
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// An OCI image config (the fields `docker import` fills in).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339 creation time.
    pub created: String,
    /// Go architecture name (amd64, arm64, ...).
    pub architecture: String,
    /// Operating system (linux).
    pub os: String,
    /// Execution defaults.
    pub config: RunConfig,
    /// The layers, by diff ID.
    pub rootfs: RootFs,
    /// How the image was made.
    pub history: Vec<History>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootFs {
    /// Always "layers".
    #[serde(rename = "type")]
    pub kind: String,
    /// Digests of the uncompressed layers, in order.
    pub diff_ids: Vec<String>,
}

/// One `history` entry of an image config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    /// RFC 3339 time.
    pub created: String,
    /// The command that made the layer ("" for an import).
    pub created_by: String,
    /// A comment ("Imported from -").
    pub comment: String,
}

/// A descriptor inside a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestDescriptor {
    /// Media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Digest.
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
}

/// An OCI image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// [`MEDIA_MANIFEST`].
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The config blob.
    pub config: ManifestDescriptor,
    /// The layer blobs.
    pub layers: Vec<ManifestDescriptor>,
}

/// The Go name of the host architecture.
pub fn host_arch() -> &'static str {
    go_arch(std::env::consts::ARCH)
}

/// Maps a Rust architecture name to Go's.
pub fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Hashes whatever is written into it.
#[derive(Default)]
struct HashWriter {
    hasher: Sha256,
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Mode {
    /// Fewer than two bytes seen: gzip or not is unknown yet.
    Undecided(Vec<u8>),
    Gzip(Box<GzWriter<HashWriter>>),
    Plain,
}

/// Receives the tarball: stores it and computes both digests.
pub(crate) struct ImportWriter {
    ingest: Ingest,
    mode: Mode,
}

fn invalid_tar(e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("invalid tar archive: {e}"))
}

impl ImportWriter {
    /// Starts an import in a fresh, ephemeral ingest (deleted unless
    /// committed).
    /// The committed layer is held by `lease`.
    pub(crate) fn new(store: &Arc<Store>, lease: &str) -> Result<Self> {
        let reference = format!("import-{:016x}", rand::random::<u64>());
        let mut ingest = store.open_ingest(&reference, None, 0, true)?;
        ingest.lease = Some(lease.to_string());
        Ok(ImportWriter {
            ingest,
            mode: Mode::Undecided(Vec::new()),
        })
    }

    /// Stores a chunk and feeds the decompressor.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<()> {
        let off = self.ingest.size() as i64;
        self.ingest.append(off, data)?;
        match &mut self.mode {
            Mode::Undecided(head) => {
                head.extend_from_slice(data);
                if head.len() >= 2 {
                    let head = std::mem::take(head);
                    self.mode = if head[..2] == [0x1f, 0x8b] {
                        let mut dec = Box::new(GzWriter::new(HashWriter::default()));
                        dec.write_all(&head)
                            .map_err(|e| invalid_tar(format!("gzip: {e}")))?;
                        Mode::Gzip(dec)
                    } else {
                        Mode::Plain
                    };
                }
            }
            Mode::Gzip(dec) => dec
                .write_all(data)
                .map_err(|e| invalid_tar(format!("gzip: {e}")))?,
            Mode::Plain => {}
        }
        Ok(())
    }

    /// Checks the archive and commits the layer blob. Returns its
    /// descriptor and diff ID.
    pub(crate) fn finish(self) -> Result<(Descriptor, String)> {
        let ImportWriter { ingest, mode } = self;
        if ingest.size() == 0 {
            return Err(invalid_tar("empty input"));
        }
        let layer = ingest.digest();
        let (gzip, diff_id) = match mode {
            Mode::Gzip(dec) => {
                let hw = dec
                    .finish()
                    .map_err(|e| invalid_tar(format!("gzip: {e}")))?;
                (true, Digest::from_hasher(hw.hasher))
            }
            Mode::Undecided(_) | Mode::Plain => (false, layer.clone()),
        };
        validate_tar(&ingest.data_path(), gzip)?;
        let mut ingest = ingest;
        ingest.update(Some(&layer), 0)?;
        let (digest, size) = ingest.commit(0, HashMap::new())?;
        let media = if gzip {
            MEDIA_LAYER_GZIP
        } else {
            MEDIA_LAYER_TAR
        };
        Ok((descriptor(media, &digest, size), diff_id.to_string()))
    }
}

/// Walks every header of the archive; at least one entry is required.
fn validate_tar(path: &Path, gzip: bool) -> Result<()> {
    let f = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let r: Box<dyn Read> = if gzip {
        Box::new(GzReader::new(BufReader::new(f)))
    } else {
        Box::new(BufReader::new(f))
    };
    let mut archive = tar::Archive::new(r);
    let mut n = 0usize;
    for entry in archive.entries().map_err(invalid_tar)? {
        let entry = entry.map_err(invalid_tar)?;
        entry.path().map_err(invalid_tar)?;
        n += 1;
    }
    if n == 0 {
        return Err(invalid_tar("no entries"));
    }
    Ok(())
}

fn descriptor(media: &str, d: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media.to_string(),
        digest: d.to_string(),
        size: size as i64,
        annotations: Default::default(),
    }
}

/// Stores `bytes` as a blob through the verified ingest/commit path, held
/// by `lease`.
pub(crate) fn put_blob(
    store: &Arc<Store>,
    media: &str,
    bytes: &[u8],
    lease: &str,
) -> Result<Descriptor> {
    let expected = Digest::of(bytes);
    let reference = format!("put-{}-{:016x}", expected.hex(), rand::random::<u64>());
    let mut ing = store.open_ingest(&reference, Some(&expected), bytes.len() as i64, true)?;
    ing.lease = Some(lease.to_string());
    ing.append(0, bytes)?;
    let (d, size) = ing.commit(0, HashMap::new())?;
    Ok(descriptor(media, &d, size))
}

/// Builds and stores config and manifest for the committed layer (held by
/// `lease`), and the image record when a name is given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finalize(
    store: &Arc<Store>,
    lease: &str,
    ns: &str,
    header: &ImportHeader,
    name: Option<String>,
    run: RunConfig,
    layer: Descriptor,
    diff_id: String,
) -> Result<ImportImageResponse> {
    let created = berth_common::time::now_rfc3339();
    let source = if header.source.is_empty() {
        "-"
    } else {
        header.source.as_str()
    };
    let comment = if header.message.is_empty() {
        format!("Imported from {source}")
    } else {
        header.message.clone()
    };
    let config = ImageConfig {
        created: created.clone(),
        architecture: if header.architecture.is_empty() {
            host_arch().to_string()
        } else {
            header.architecture.clone()
        },
        os: if header.os.is_empty() {
            "linux".into()
        } else {
            header.os.clone()
        },
        config: run,
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![diff_id.clone()],
        },
        history: vec![History {
            created,
            created_by: String::new(),
            comment,
        }],
    };
    let config_json = serde_json::to_vec(&config).map_err(|e| Error::Internal(e.to_string()))?;
    let config_desc = put_blob(store, MEDIA_CONFIG, &config_json, lease)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST.into(),
        config: ManifestDescriptor {
            media_type: MEDIA_CONFIG.into(),
            digest: config_desc.digest.clone(),
            size: config_desc.size,
        },
        layers: vec![ManifestDescriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
        }],
    };
    let manifest_json =
        serde_json::to_vec(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    let manifest_desc = put_blob(store, MEDIA_MANIFEST, &manifest_json, lease)?;
    let image = match name {
        Some(name) => Some(store.put_image(
            ns,
            Image {
                name,
                target: Some(manifest_desc.clone()),
                created_at: 0,
                updated_at: 0,
                labels: Default::default(),
            },
        )?),
        None => None,
    };
    Ok(ImportImageResponse {
        image,
        manifest: Some(manifest_desc),
        config: Some(config_desc),
        layers: vec![layer],
        diff_ids: vec![diff_id],
    })
}
