//! Registry errors, with the registry's own error codes and messages.

use serde::Deserialize;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry refused the credentials (or wants some).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The credentials are fine but do not allow this.
    #[error("denied: {0}")]
    Denied(String),
    /// Manifest, blob or repository unknown.
    #[error("{0}")]
    NotFound(String),
    /// Any other error answer of the registry.
    #[error("{message}")]
    Status { status: u16, message: String },
    /// The registry could not be reached, or the connection broke.
    #[error("{0}")]
    Transport(String),
    /// The registry answered something that breaks the protocol, or data
    /// did not match its digest.
    #[error("{0}")]
    Protocol(String),
}

impl Error {
    /// Worth retrying: 5xx, 429 and transport failures.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    errors: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// `code: message` pairs of a registry error body, Docker style
/// ("manifest unknown: manifest unknown"), or the HTTP status text.
pub(crate) fn describe(status: reqwest::StatusCode, body: &[u8]) -> String {
    if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
        let parts: Vec<String> = env
            .errors
            .iter()
            .map(|e| {
                let code = e.code.to_lowercase().replace('_', " ");
                if e.message.is_empty() {
                    code
                } else {
                    format!("{code}: {}", e.message)
                }
            })
            .collect();
        if !parts.is_empty() {
            return parts.join(", ");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if !text.is_empty() && text.len() < 200 && !text.starts_with('<') {
        return format!("{} {}", status.as_u16(), text);
    }
    status.to_string()
}

/// Maps an error answer to an [`Error`].
pub(crate) fn from_response(status: reqwest::StatusCode, body: &[u8]) -> Error {
    let message = describe(status, body);
    match status.as_u16() {
        401 => Error::Unauthorized(message),
        403 => Error::Denied(message),
        404 => Error::NotFound(message),
        s => Error::Status { status: s, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_bodies() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            describe(reqwest::StatusCode::NOT_FOUND, body),
            "manifest unknown: manifest unknown"
        );
        assert!(matches!(
            from_response(reqwest::StatusCode::NOT_FOUND, body),
            Error::NotFound(_)
        ));
        assert_eq!(
            describe(reqwest::StatusCode::BAD_GATEWAY, b"<html>oops</html>"),
            "502 Bad Gateway"
        );
        assert!(from_response(reqwest::StatusCode::SERVICE_UNAVAILABLE, b"").is_transient());
        assert!(!from_response(reqwest::StatusCode::UNAUTHORIZED, b"").is_transient());
    }
}
