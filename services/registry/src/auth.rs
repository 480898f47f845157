//! Credentials and `WWW-Authenticate` challenges.

use std::collections::BTreeMap;

/// What a user logged in with. Never logged or printed (Debug hides it).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token some registries hand out instead of keeping
    /// the password (Docker's `identitytoken`).
    pub identity_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.username.is_empty() && self.password.is_empty() && self.identity_token.is_empty()
    }

    /// A digest identifying these credentials (for caches), not reversible.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [&self.username, &self.password, &self.identity_token] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// The `Authorization: Basic ...` value, when there is a user.
    pub fn basic(&self) -> Option<String> {
        use base64::Engine;
        (!self.username.is_empty()).then(|| {
            let raw = format!("{}:{}", self.username, self.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        })
    }
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-case scheme: "basic" or "bearer".
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="https://auth/token",service="reg",scope="a:b:pull"`
/// (and `Basic realm="x"`). Several challenges in one header are split at
/// a scheme name that follows a comma.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        // A token: either a new scheme (followed by a space or the end) or
        // a parameter name (followed by '=').
        let end = rest.find([' ', '=', ',']).unwrap_or(rest.len());
        let word = &rest[..end];
        let after = &rest[end..];
        if after.starts_with('=') && !out.is_empty() {
            let mut value_part = &after[1..];
            let value;
            if let Some(quoted) = value_part.strip_prefix('"') {
                let mut v = String::new();
                let mut chars = quoted.char_indices();
                let mut close = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                v.push(n);
                            }
                        }
                        '"' => {
                            close = i + 1;
                            break;
                        }
                        c => v.push(c),
                    }
                }
                value = v;
                value_part = &quoted[close.min(quoted.len())..];
            } else {
                let e = value_part.find(',').unwrap_or(value_part.len());
                value = value_part[..e].trim().to_string();
                value_part = &value_part[e..];
            }
            if let Some(last) = out.last_mut() {
                last.params.insert(word.to_ascii_lowercase(), value);
            }
            rest = value_part.trim_start_matches([',', ' ']);
        } else {
            if !word.is_empty() {
                out.push(Challenge {
                    scheme: word.to_ascii_lowercase(),
                    params: BTreeMap::new(),
                });
            }
            rest = after.trim_start_matches([',', ' ']);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["service"], "registry.docker.io");
        assert_eq!(c[0].params["scope"], "repository:library/busybox:pull");

        let c = parse_challenges(r#"Basic realm="Registry Realm""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], "Registry Realm");

        // Two challenges, a comma inside a quoted value, an escaped quote.
        let c = parse_challenges(
            r#"Basic realm="a,b", Bearer realm="https://t/x",scope="repository:r:pull,push",error="say \"no\"""#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].params["realm"], "a,b");
        assert_eq!(c[1].params["scope"], "repository:r:pull,push");
        assert_eq!(c[1].params["error"], "say \"no\"");
    }

    #[test]
    fn credentials_stay_hidden() {
        let c = Credentials {
            username: "u".into(),
            password: "secret".into(),
            identity_token: String::new(),
        };
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(c.basic().unwrap(), "Basic dTpzZWNyZXQ=");
    }
}
