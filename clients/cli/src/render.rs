//! Docker's text formatting: human durations and sizes (go-units), container
//! status strings, command truncation and quoting, and tabwriter tables.

use chrono::{DateTime, Utc};

/// go-units `HumanDuration`, with docker's exact wording. `nanos` is the
/// elapsed time in nanoseconds.
pub fn human_duration(nanos: i64) -> String {
    const SEC: i64 = 1_000_000_000;
    const HOUR: i64 = 3600 * SEC;
    let seconds = nanos / SEC;
    if seconds < 1 {
        return "Less than a second".into();
    }
    if seconds == 1 {
        return "1 second".into();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = seconds / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    // d.Round(time.Hour).Hours(): halfway rounds away from zero.
    let hours = (nanos + HOUR / 2) / HOUR;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", nanos / HOUR / 24 / 365)
}

/// Nanoseconds from `then` to `now`, saturating at 0.
pub fn since(now: DateTime<Utc>, then: DateTime<Utc>) -> i64 {
    (now - then).num_nanoseconds().unwrap_or(i64::MAX).max(0)
}

/// "2 minutes ago" for a time given as seconds since the epoch.
pub fn ago_unix(now: DateTime<Utc>, secs: i64) -> String {
    match DateTime::from_timestamp(secs, 0) {
        Some(t) => format!("{} ago", human_duration(since(now, t))),
        None => "N/A".into(),
    }
}

/// Go's `fmt.Sprintf("%.*g", prec, x)` for finite, non-negative `x`.
pub fn go_fmt_g(x: f64, prec: usize) -> String {
    let prec = prec.max(1);
    if x == 0.0 {
        return "0".into();
    }
    let sci = format!("{:.*e}", prec - 1, x);
    let (mant, exp) = sci.split_once('e').expect("exponent");
    let exp: i32 = exp.parse().expect("exponent");
    if exp < -4 || exp >= prec as i32 {
        let mant = trim_frac_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        trim_frac_zeros(&format!("{x:.decimals$}")).to_string()
    }
}

fn trim_frac_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// go-units `HumanSizeWithPrecision(size, 3)`: decimal units, as docker shows
/// image sizes ("4.26MB", "612kB", "0B").
pub fn human_size(bytes: i64) -> String {
    human_size_precision(bytes, 3)
}

/// go-units `HumanSize` (4 significant digits), as docker's prune, df and
/// pull progress print sizes.
pub fn human_size4(bytes: i64) -> String {
    human_size_precision(bytes, 4)
}

/// go-units `HumanSizeWithPrecision`: decimal units, `prec` significant
/// digits.
fn human_size_precision(bytes: i64, prec: usize) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = bytes.max(0) as f64;
    let mut i = 0;
    while size >= 1000.0 && i < UNITS.len() - 1 {
        size /= 1000.0;
        i += 1;
    }
    format!("{}{}", go_fmt_g(size, prec), UNITS[i])
}

/// Docker's `formatter.Ellipsis` for ASCII/simple text: at most `max` runes,
/// the last one replaced by "…" when cut.
pub fn ellipsis(s: &str, max: usize) -> String {
    if max == 0 {
        return String::new();
    }
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if max == 1 {
        return s.chars().take(1).collect();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Go's `strconv.Quote`: double quotes, escapes for `"`, `\` and control
/// characters; printable Unicode kept as is.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `docker ps`'s COMMAND column: truncated to 20 runes unless `no_trunc`,
/// then quoted.
pub fn ps_command(command: &str, no_trunc: bool) -> String {
    if no_trunc {
        go_quote(command)
    } else {
        go_quote(&ellipsis(command, 20))
    }
}

/// The parts of a container's state that its status string depends on.
pub struct StateView<'a> {
    /// created, running, paused, restarting, removing, exited, dead
    pub state: &'a str,
    pub exit_code: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Docker's `State.String()`: "Up 3 seconds", "Exited (0) 2 seconds ago",
/// "Created", ...
pub fn ps_status(s: &StateView<'_>, now: DateTime<Utc>) -> String {
    let dur = |t: Option<DateTime<Utc>>| human_duration(t.map_or(0, |t| since(now, t)));
    match s.state {
        "running" => format!("Up {}", dur(s.started_at)),
        "paused" => format!("Up {} (Paused)", dur(s.started_at)),
        "restarting" => format!("Restarting ({}) {} ago", s.exit_code, dur(s.finished_at)),
        "removing" => "Removal In Progress".into(),
        "dead" => "Dead".into(),
        _ => {
            if s.started_at.is_none() {
                "Created".into()
            } else if s.finished_at.is_none() {
                String::new()
            } else {
                format!("Exited ({}) {} ago", s.exit_code, dur(s.finished_at))
            }
        }
    }
}

/// Go's `text/tabwriter` as docker configures it (minwidth 10, padding 3,
/// spaces): every cell but the last of a line is padded to its column's
/// width. Widths count runes, like Go.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                widths[i] = widths[i].max(cell.chars().count() + 3).max(10);
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// The short form of an ID: without "sha256:", 12 characters.
pub fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(12).collect()
}

/// Splits "repo:tag" (the tag is after the last ':' that follows the last
/// '/'), docker-style; "<none>" for missing parts.
pub fn split_repo_tag(reference: &str) -> (String, String) {
    let (name, _digest) = reference.split_once('@').unwrap_or((reference, ""));
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (
            name[..slash + i].to_string(),
            name[slash + i + 1..].to_string(),
        ),
        None => (name.to_string(), "<none>".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const S: i64 = 1_000_000_000;

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(S / 2), "Less than a second");
        assert_eq!(human_duration(S), "1 second");
        assert_eq!(human_duration(2 * S), "2 seconds");
        assert_eq!(human_duration(59 * S), "59 seconds");
        assert_eq!(human_duration(60 * S), "About a minute");
        assert_eq!(human_duration(119 * S), "About a minute");
        assert_eq!(human_duration(120 * S), "2 minutes");
        assert_eq!(human_duration(59 * 60 * S), "59 minutes");
        assert_eq!(human_duration(3600 * S), "About an hour");
        assert_eq!(human_duration(89 * 60 * S), "About an hour");
        assert_eq!(human_duration(90 * 60 * S), "2 hours");
        assert_eq!(human_duration(3 * 3600 * S), "3 hours");
        assert_eq!(human_duration(47 * 3600 * S), "47 hours");
        assert_eq!(human_duration(2 * 24 * 3600 * S), "2 days");
        assert_eq!(human_duration(13 * 24 * 3600 * S), "13 days");
        assert_eq!(human_duration(21 * 24 * 3600 * S), "3 weeks");
        assert_eq!(human_duration(120 * 24 * 3600 * S), "4 months");
        assert_eq!(human_duration(2 * 365 * 24 * 3600 * S), "2 years");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1234), "1.23kB");
        assert_eq!(human_size(4_261_234), "4.26MB");
        assert_eq!(human_size(612_000), "612kB");
        assert_eq!(human_size(1_500_000_000), "1.5GB");
        assert_eq!(human_size(72_800_000), "72.8MB");
        // Go's %.3g switches to an exponent once rounding reaches 1000.
        assert_eq!(human_size(999_700), "1e+03kB");
    }

    #[test]
    fn go_g() {
        assert_eq!(go_fmt_g(4.2, 3), "4.2");
        assert_eq!(go_fmt_g(100.0, 3), "100");
        assert_eq!(go_fmt_g(12.345, 3), "12.3");
        assert_eq!(go_fmt_g(0.0001234, 3), "0.000123");
        assert_eq!(go_fmt_g(0.00001234, 3), "1.23e-05");
    }

    #[test]
    fn statuses() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 12, 0, 0).unwrap();
        let ago = |s: i64| Some(now - chrono::TimeDelta::seconds(s));
        let st = |state, code, started, finished| {
            ps_status(
                &StateView {
                    state,
                    exit_code: code,
                    started_at: started,
                    finished_at: finished,
                },
                now,
            )
        };
        assert_eq!(st("running", 0, ago(3), None), "Up 3 seconds");
        assert_eq!(st("running", 0, ago(75), None), "Up About a minute");
        assert_eq!(st("exited", 0, ago(10), ago(2)), "Exited (0) 2 seconds ago");
        assert_eq!(
            st("exited", 137, ago(7200), ago(3600)),
            "Exited (137) About an hour ago"
        );
        assert_eq!(st("created", 0, None, None), "Created");
        assert_eq!(st("paused", 0, ago(5), None), "Up 5 seconds (Paused)");
        assert_eq!(st("dead", 0, None, None), "Dead");
    }

    #[test]
    fn command_truncation() {
        assert_eq!(ps_command("sh", false), "\"sh\"");
        assert_eq!(
            ps_command("echo hello from python", false),
            "\"echo hello from pyt…\""
        );
        assert_eq!(
            ps_command("12345678901234567890", false),
            "\"12345678901234567890\""
        );
        assert_eq!(
            ps_command("echo hello from python", true),
            "\"echo hello from python\""
        );
        assert_eq!(ps_command("sh -c \"x\"", false), r#""sh -c \"x\"""#);
    }

    #[test]
    fn table_alignment() {
        let rows = vec![
            vec!["CONTAINER ID".to_string(), "IMAGE".into(), "NAMES".into()],
            vec!["0123456789ab".to_string(), "busybox".into(), "web".into()],
            vec![
                "abc".to_string(),
                "a-very-long-image-name".into(),
                "x".into(),
            ],
        ];
        let t = table(&rows);
        let expected = "\
CONTAINER ID   IMAGE                    NAMES
0123456789ab   busybox                  web
abc            a-very-long-image-name   x
";
        assert_eq!(t, expected);
        // A short column still takes the minimum width of 10.
        let t = table(&[vec!["A".into(), "B".into()], vec!["".into(), "c".into()]]);
        assert_eq!(t, "A         B\n          c\n");
    }

    #[test]
    fn ids_and_refs() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(
            split_repo_tag("busybox:latest"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            split_repo_tag("localhost:5000/a/b:1.0"),
            ("localhost:5000/a/b".into(), "1.0".into())
        );
        assert_eq!(
            split_repo_tag("localhost:5000/a"),
            ("localhost:5000/a".into(), "<none>".into())
        );
    }
}
