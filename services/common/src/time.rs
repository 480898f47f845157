//! Time formatting shared by services (RFC 3339, as Docker prints it).

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, as RFC 3339 with nanoseconds in UTC ("2024-01-02T03:04:05.123456789Z").
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Seconds since the epoch, now.
pub fn now_unix() -> i64 {
    Utc::now().timestamp()
}

/// Parses RFC 3339; `None` for empty or invalid input.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
