//! RFC 3339 timestamps in UTC with nanoseconds, formatted without chrono.

use std::time::{SystemTime, UNIX_EPOCH};

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn parts(secs: i64) -> (i64, u32, u32, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (y, m, d, rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// `2024-01-02T03:04:05.123456789Z`: always nine fraction digits.
pub fn format_rfc3339_nanos(secs: i64, nanos: u32) -> String {
    let (y, mo, d, h, mi, s) = parts(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{nanos:09}Z")
}

/// Go's `time.RFC3339Nano`: trailing zeros of the fraction are dropped
/// (and the fraction entirely when zero). This is what Docker's json-file logs use.
pub fn format_rfc3339_go_nano(secs: i64, nanos: u32) -> String {
    let (y, mo, d, h, mi, s) = parts(secs);
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

fn now_parts() -> (i64, u32) {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(_) => (0, 0),
    }
}

/// Now, with nine fraction digits (used in the `exit` file).
pub fn now_rfc3339_nanos() -> String {
    let (s, n) = now_parts();
    format_rfc3339_nanos(s, n)
}

/// Now, in Go's RFC3339Nano form (used in json-file log lines).
pub fn now_rfc3339_go_nano() -> String {
    let (s, n) = now_parts();
    format_rfc3339_go_nano(s, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_nanos(0, 0), "1970-01-01T00:00:00.000000000Z");
        // 2024-01-02T03:04:05Z
        assert_eq!(
            format_rfc3339_nanos(1_704_164_645, 123_456_789),
            "2024-01-02T03:04:05.123456789Z"
        );
        // leap day 2024-02-29T23:59:59Z
        assert_eq!(
            format_rfc3339_nanos(1_709_251_199, 5),
            "2024-02-29T23:59:59.000000005Z"
        );
        // 2000-03-01T00:00:00Z
        assert_eq!(
            format_rfc3339_nanos(951_868_800, 0),
            "2000-03-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn go_nano_trims_zeros() {
        assert_eq!(
            format_rfc3339_go_nano(1_704_164_645, 120_000_000),
            "2024-01-02T03:04:05.12Z"
        );
        assert_eq!(
            format_rfc3339_go_nano(1_704_164_645, 0),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(
            format_rfc3339_go_nano(1_704_164_645, 123_456_789),
            "2024-01-02T03:04:05.123456789Z"
        );
    }

    #[test]
    fn now_is_well_formed() {
        let s = now_rfc3339_nanos();
        assert_eq!(s.len(), 30);
        assert!(s.ends_with('Z'));
        assert!(now_rfc3339_go_nano().ends_with('Z'));
    }
}
