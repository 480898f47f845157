//! Docker image references: parsing and normalisation.
//!
//! Follows the grammar of the distribution project's `reference` package,
//! written by hand (no regex):
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path-component [ "/" path-component ]*
//! domain     := host [ ":" port ]
//! path-comp  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [\w][\w.-]{0,127}
//! digest     := "sha256:" 64 lower-case hex | "sha512:" 128 lower-case hex
//! ```
//!
//! Normalisation is Docker's: a name without a domain lives on `docker.io`,
//! and a single-component name on `docker.io` lives under `library/`. A
//! reference with neither tag nor digest gets the tag `latest`.

use std::fmt;

/// The registry used when a reference names none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker's legacy name for [`DEFAULT_DOMAIN`], normalised to it.
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The repository prefix of official images on the default registry.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag used when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// The longest repository name (domain and path) Docker accepts.
pub const NAME_MAX_LEN: usize = 255;

/// Why a string is not a valid image reference. The messages are Docker's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The string does not follow the reference grammar.
    #[error("invalid reference format")]
    InvalidFormat,
    /// The repository path contains upper-case letters.
    #[error("invalid reference format: repository name must be lowercase")]
    Uppercase,
    /// The repository name (domain and path) is too long.
    #[error("invalid reference format: repository name must not be more than 255 characters")]
    NameTooLong,
    /// The tag does not follow `[\w][\w.-]{0,127}`.
    #[error("invalid tag format")]
    InvalidTag,
    /// The digest is not `sha256:<64 hex>` or `sha512:<128 hex>`.
    #[error("invalid digest format")]
    InvalidDigest,
    /// The whole reference is a 64-character hex string (an image ID).
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexName(String),
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// The registry, e.g. `docker.io` or `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if any (`latest` when the reference had neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:<hex>`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The repository name with its domain: `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository name as Docker shows it: `busybox`, `me/app`,
    /// `localhost:5000/x`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The fully qualified reference:
    /// `docker.io/library/busybox:latest`, `reg.io/a/b:t@sha256:...`.
    pub fn full(&self) -> String {
        self.with_suffix(self.name())
    }

    /// The reference as Docker shows it: `busybox:latest`, `me/app:v1`,
    /// `localhost:5000/x:latest`.
    pub fn familiar(&self) -> String {
        self.with_suffix(self.familiar_name())
    }

    fn with_suffix(&self, mut s: String) -> String {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// Parses and normalises a reference as `docker pull` does.
///
/// `busybox` → `docker.io/library/busybox:latest`; `me/app:v1` →
/// `docker.io/me/app:v1`; `localhost:5000/x` → `localhost:5000/x:latest`;
/// `x@sha256:<hex>` keeps only the digest.
pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
    if s.is_empty() {
        return Err(ReferenceError::InvalidFormat);
    }
    if s.len() == 64 && s.bytes().all(is_lower_hex) {
        return Err(ReferenceError::HexName(s.to_string()));
    }

    // Split off the digest first: it contains a ':' that is not a tag.
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            validate_digest(d)?;
            (r, Some(d.to_string()))
        }
        None => (s, None),
    };

    // Domain: the first component when it looks like a host (has '.' or ':',
    // is "localhost", or has upper-case letters, which paths never have).
    let (domain, remainder) = match rest.split_once('/') {
        Some((first, remainder))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, remainder)
        }
        _ => (DEFAULT_DOMAIN, rest),
    };

    // Tag: after the last ':' of the remainder (the domain's port is gone).
    let (path, tag) = match remainder.rsplit_once(':') {
        Some((p, t)) => (p, Some(t)),
        None => (remainder, None),
    };
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ReferenceError::Uppercase);
    }
    if !valid_domain(domain) {
        return Err(ReferenceError::InvalidFormat);
    }
    if path.is_empty() || !path.split('/').all(valid_path_component) {
        return Err(ReferenceError::InvalidFormat);
    }
    if let Some(t) = tag {
        if !valid_tag(t) {
            // Docker reports a malformed tag as a malformed reference.
            return Err(ReferenceError::InvalidFormat);
        }
    }

    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{path}")
    } else {
        path.to_string()
    };
    if domain.len() + 1 + path.len() > NAME_MAX_LEN {
        return Err(ReferenceError::NameTooLong);
    }
    let tag = match (tag, &digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, None) => Some(DEFAULT_TAG.to_string()),
        (None, Some(_)) => None,
    };
    Ok(Reference {
        domain: domain.to_string(),
        path,
        tag,
        digest,
    })
}

/// Checks a tag against `[\w][\w.-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && is_word(b[0])
        && b[1..].iter().all(|&c| is_word(c) || c == b'.' || c == b'-')
}

/// Checks a digest: `sha256:` with 64, or `sha512:` with 128, lower-case hex
/// digits.
pub fn validate_digest(d: &str) -> Result<(), ReferenceError> {
    let (alg, hex) = d.split_once(':').ok_or(ReferenceError::InvalidDigest)?;
    let want = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(ReferenceError::InvalidDigest),
    };
    if hex.len() == want && hex.bytes().all(is_lower_hex) {
        Ok(())
    } else {
        Err(ReferenceError::InvalidDigest)
    }
}

/// Checks one path component: `[a-z0-9]+ ((.|_|__|-+)[a-z0-9]+)*`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        // A run of [a-z0-9]+.
        let start = i;
        while i < b.len() && (b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // A separator.
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// Checks a domain: dot-separated host labels (or a bracketed IPv6
/// address), then an optional `:port`.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(inner) = d.strip_prefix('[') {
        let Some((addr, after)) = inner.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if host.is_empty() {
        // Only the IPv6 form gets here with an empty host.
        return d.starts_with('[');
    }
    host.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    })
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn is_lower_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn full(s: &str) -> String {
        parse(s).unwrap().full()
    }

    fn familiar(s: &str) -> String {
        parse(s).unwrap().familiar()
    }

    #[test]
    fn official_image() {
        let r = parse("busybox").unwrap();
        assert_eq!(r.domain(), "docker.io");
        assert_eq!(r.path(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(r.full(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(r.to_string(), r.full());
        assert_eq!("busybox".parse::<Reference>().unwrap(), r);
    }

    #[test]
    fn user_image_with_tag() {
        let r = parse("me/app:v1").unwrap();
        assert_eq!(r.domain(), "docker.io");
        assert_eq!(r.path(), "me/app");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.full(), "docker.io/me/app:v1");
        assert_eq!(r.familiar(), "me/app:v1");
    }

    #[test]
    fn registries() {
        let r = parse("localhost:5000/x").unwrap();
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.path(), "x");
        assert_eq!(r.full(), "localhost:5000/x:latest");
        assert_eq!(r.familiar(), "localhost:5000/x:latest");

        let r = parse("reg.io/a/b:t").unwrap();
        assert_eq!(r.domain(), "reg.io");
        assert_eq!(r.path(), "a/b");
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.full(), "reg.io/a/b:t");
        assert_eq!(r.familiar(), "reg.io/a/b:t");

        assert_eq!(full("localhost/x"), "localhost/x:latest");
        assert_eq!(full("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        assert_eq!(full("[::1]:5000/a"), "[::1]:5000/a:latest");
        assert_eq!(
            full("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(full("docker.io/busybox:1"), "docker.io/library/busybox:1");
        assert_eq!(
            full("docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(familiar("docker.io/library/a/b"), "library/a/b:latest");
        assert_eq!(familiar("docker.io/me/app"), "me/app:latest");
        // A first component without '.' or ':' is part of the path.
        assert_eq!(full("a/b/c"), "docker.io/a/b/c:latest");
    }

    #[test]
    fn digests() {
        let s = format!("x@sha256:{HEX}");
        let r = parse(&s).unwrap();
        assert_eq!(r.path(), "library/x");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(format!("sha256:{HEX}").as_str()));
        assert_eq!(r.full(), format!("docker.io/library/x@sha256:{HEX}"));
        assert_eq!(r.familiar(), format!("x@sha256:{HEX}"));

        let r = parse(&format!("reg.io:5000/a:t@sha256:{HEX}")).unwrap();
        assert_eq!(r.domain(), "reg.io:5000");
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.full(), format!("reg.io:5000/a:t@sha256:{HEX}"));

        assert_eq!(parse("x@sha256:abc"), Err(ReferenceError::InvalidDigest));
        assert_eq!(
            parse(&format!("x@sha256:{}", HEX.to_uppercase())),
            Err(ReferenceError::InvalidDigest)
        );
        assert_eq!(
            parse(&format!("x@md5:{HEX}")),
            Err(ReferenceError::InvalidDigest)
        );
        assert!(validate_digest(&format!("sha512:{HEX}{HEX}")).is_ok());
    }

    #[test]
    fn path_components() {
        for ok in [
            "a",
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a---b",
            "a1.b2_c3-d4",
            "0",
        ] {
            assert!(valid_path_component(ok), "{ok}");
        }
        for bad in [
            "", "-a", "a-", "a..b", "a___b", ".a", "a.", "a_", "a+b", "a._b",
        ] {
            assert!(!valid_path_component(bad), "{bad}");
        }
    }

    #[test]
    fn tags() {
        assert!(valid_tag("latest"));
        assert!(valid_tag("_x.1-2"));
        assert!(valid_tag(&"a".repeat(128)));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag(""));
        assert_eq!(full("a:1.0_RC-2"), "docker.io/library/a:1.0_RC-2");
        assert_eq!(parse("a:-x"), Err(ReferenceError::InvalidFormat));
        assert_eq!(parse("a:"), Err(ReferenceError::InvalidFormat));
        assert_eq!(parse("a:b:c"), Err(ReferenceError::InvalidFormat));
    }

    #[test]
    fn uppercase_is_rejected() {
        let e = parse("BusyBox").unwrap_err();
        assert_eq!(e, ReferenceError::Uppercase);
        assert_eq!(
            e.to_string(),
            "invalid reference format: repository name must be lowercase"
        );
        assert_eq!(parse("me/App:v1"), Err(ReferenceError::Uppercase));
        assert_eq!(parse("reg.io/A"), Err(ReferenceError::Uppercase));
        // Upper case in a domain or a tag is fine.
        assert_eq!(full("Reg.IO/a:TAG"), "Reg.IO/a:TAG");
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in [
            "",
            ":",
            "/",
            "a/",
            "/a",
            "a//b",
            "a b",
            "a@",
            "@sha256:x",
            "reg.io/",
            "-a",
            "a/-b",
            "reg-.io/a",
            "reg.io:/a",
            "reg.io:port/a",
            "[::1/a",
            "a$b",
            "ü",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid"), "{bad}: {e}");
        }
        assert_eq!(
            parse("").unwrap_err().to_string(),
            "invalid reference format"
        );
        assert_eq!(
            parse("a b").unwrap_err().to_string(),
            "invalid reference format"
        );
        assert_eq!(parse(HEX), Err(ReferenceError::HexName(HEX.to_string())));
        let long = format!("reg.io/{}", "a".repeat(250));
        assert_eq!(parse(&long), Err(ReferenceError::NameTooLong));
    }
}
