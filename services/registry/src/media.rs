//! Media types of manifests, configs and layers.

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_NONDIST_LAYER: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_NONDIST_LAYER_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_NONDIST_LAYER_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

/// Everything a pull accepts as a manifest, in the Accept header.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A manifest list or OCI index (as opposed to a single image manifest).
pub fn is_index(media_type: &str) -> bool {
    media_type == DOCKER_MANIFEST_LIST || media_type == OCI_INDEX
}

/// A single-image manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == DOCKER_MANIFEST || media_type == OCI_MANIFEST
}

/// Foreign (Docker) or non-distributable (OCI) layers: the spec lets a
/// client fetch them from their `urls` and a registry refuse them on push.
pub fn is_foreign_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        DOCKER_FOREIGN_LAYER | OCI_NONDIST_LAYER | OCI_NONDIST_LAYER_GZIP | OCI_NONDIST_LAYER_ZSTD
    )
}

/// The media type of a manifest document: its `mediaType` field, else
/// guessed from its shape (OCI allows the field to be absent).
pub fn sniff_manifest(doc: &serde_json::Value) -> Option<&'static str> {
    let declared = doc.get("mediaType").and_then(|m| m.as_str());
    match declared {
        Some(DOCKER_MANIFEST) => Some(DOCKER_MANIFEST),
        Some(DOCKER_MANIFEST_LIST) => Some(DOCKER_MANIFEST_LIST),
        Some(OCI_MANIFEST) => Some(OCI_MANIFEST),
        Some(OCI_INDEX) => Some(OCI_INDEX),
        Some(_) => None,
        None if doc.get("manifests").is_some() => Some(OCI_INDEX),
        None if doc.get("layers").is_some() && doc.get("config").is_some() => Some(OCI_MANIFEST),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(
            sniff_manifest(&j(
                r#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#
            )),
            Some(DOCKER_MANIFEST)
        );
        assert_eq!(sniff_manifest(&j(r#"{"manifests":[]}"#)), Some(OCI_INDEX));
        assert_eq!(
            sniff_manifest(&j(r#"{"config":{},"layers":[]}"#)),
            Some(OCI_MANIFEST)
        );
        assert_eq!(sniff_manifest(&j(r#"{"schemaVersion":1}"#)), None);
        assert!(is_foreign_layer(DOCKER_FOREIGN_LAYER));
        assert!(!is_foreign_layer(OCI_LAYER_GZIP));
    }
}
