//! Prometheus text exposition format 0.0.4: families of samples, each
//! family's samples together under one `# HELP` and `# TYPE`, label values
//! and help texts escaped as the format says.

use std::collections::HashMap;
use std::fmt::Write;

/// The Content-Type of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Cumulative counts of observations at or below each bound (`le`), with
/// their sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); one more than `bounds`
    /// for the ones above the last bound.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    /// `bounds` ascending.
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// One metric family being rendered.
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    lines: String,
}

impl Family {
    fn line(&mut self, suffix: &str, labels: &[(&str, &str)], value: &str) {
        self.lines.push_str(self.name);
        self.lines.push_str(suffix);
        if !labels.is_empty() {
            self.lines.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.lines.push(',');
                }
                self.lines.push_str(k);
                self.lines.push_str("=\"");
                escape_label_value(&mut self.lines, v);
                self.lines.push('"');
            }
            self.lines.push('}');
        }
        self.lines.push(' ');
        self.lines.push_str(value);
        self.lines.push('\n');
    }

    /// A sample with an integer value, written exactly.
    pub fn int(&mut self, labels: &[(&str, &str)], v: u64) {
        self.line("", labels, &v.to_string());
    }

    pub fn float(&mut self, labels: &[(&str, &str)], v: f64) {
        self.line("", labels, &format_float(v));
    }

    /// The `_bucket` (with `le`), `_sum` and `_count` samples of `h`.
    pub fn histogram(&mut self, labels: &[(&str, &str)], h: &Histogram) {
        let les: Vec<String> = h.bounds.iter().map(|b| format_float(*b)).collect();
        let mut cumulative = 0;
        for (i, le) in les.iter().map(String::as_str).chain(["+Inf"]).enumerate() {
            cumulative += h.counts[i];
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", le));
            self.line("_bucket", &with_le, &cumulative.to_string());
        }
        self.line("_sum", labels, &format_float(h.sum));
        self.line("_count", labels, &cumulative.to_string());
    }
}

/// Families in the order they were first asked for.
#[derive(Default)]
pub struct Exposition {
    families: Vec<Family>,
    index: HashMap<&'static str, usize>,
}

impl Exposition {
    /// The family `name`, created on first use. Samples added to it later
    /// still come out together with the earlier ones.
    pub fn family(&mut self, name: &'static str, help: &'static str, kind: Kind) -> &mut Family {
        let i = *self.index.entry(name).or_insert_with(|| {
            self.families.push(Family {
                name,
                help,
                kind,
                lines: String::new(),
            });
            self.families.len() - 1
        });
        &mut self.families[i]
    }

    /// The whole text. A family without samples still gets its HELP and
    /// TYPE lines.
    pub fn render(&self) -> String {
        let mut out =
            String::with_capacity(self.families.iter().map(|f| f.lines.len() + 128).sum());
        for f in &self.families {
            out.push_str("# HELP ");
            out.push_str(f.name);
            out.push(' ');
            escape_help(&mut out, f.help);
            out.push('\n');
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
            out.push_str(&f.lines);
        }
        out
    }
}

/// Backslash, double quote and line feed escaped.
fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Backslash and line feed escaped.
fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float as Prometheus parses it: integers without a fraction, the
/// shortest exact decimal otherwise, `+Inf`, `-Inf`, `NaN`.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 1e15 || v.abs() < 1e-6 {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats() {
        assert_eq!(format_float(0.0), "0");
        assert_eq!(format_float(-0.0), "0");
        assert_eq!(format_float(42.0), "42");
        assert_eq!(format_float(0.005), "0.005");
        assert_eq!(format_float(2.5), "2.5");
        assert_eq!(format_float(1e20), "1e20");
        assert_eq!(format_float(1.5e-9), "1.5e-9");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        // What Prometheus (Go's ParseFloat) reads back.
        for v in [0.1, 1e20, 1.5e-9, 123456.789, 3.0e15] {
            assert_eq!(format_float(v).parse::<f64>().unwrap(), v);
        }
    }

    #[test]
    fn families_escaping_and_grouping() {
        let mut e = Exposition::default();
        e.family("a_total", "Counts \\ things\nsecond line", Kind::Counter)
            .int(&[("name", "x\"y\\z\nw")], 7);
        e.family("b", "A gauge.", Kind::Gauge).float(&[], 1.25);
        // Added after b: still rendered with a's other sample.
        e.family("a_total", "ignored", Kind::Counter)
            .int(&[("name", "plain"), ("id", "1")], 3);
        e.family("c", "Empty.", Kind::Gauge);
        assert_eq!(
            e.render(),
            "# HELP a_total Counts \\\\ things\\nsecond line\n\
             # TYPE a_total counter\n\
             a_total{name=\"x\\\"y\\\\z\\nw\"} 7\n\
             a_total{name=\"plain\",id=\"1\"} 3\n\
             # HELP b A gauge.\n\
             # TYPE b gauge\n\
             b 1.25\n\
             # HELP c Empty.\n\
             # TYPE c gauge\n"
        );
    }

    #[test]
    fn histogram_buckets() {
        static BOUNDS: [f64; 3] = [0.005, 0.1, 1.0];
        let mut h = Histogram::new(&BOUNDS);
        for v in [0.001, 0.005, 0.05, 0.5, 0.7, 3.0] {
            h.observe(v);
        }
        assert_eq!(h.count(), 6);
        let mut e = Exposition::default();
        e.family("d_seconds", "Latency.", Kind::Histogram)
            .histogram(&[("method", "/p.S/M")], &h);
        let text = e.render();
        let want = "# HELP d_seconds Latency.\n\
             # TYPE d_seconds histogram\n\
             d_seconds_bucket{method=\"/p.S/M\",le=\"0.005\"} 2\n\
             d_seconds_bucket{method=\"/p.S/M\",le=\"0.1\"} 3\n\
             d_seconds_bucket{method=\"/p.S/M\",le=\"1\"} 5\n\
             d_seconds_bucket{method=\"/p.S/M\",le=\"+Inf\"} 6\n\
             d_seconds_sum{method=\"/p.S/M\"} ";
        assert!(text.starts_with(want), "{text}");
        let rest = &text[want.len()..];
        let (sum, rest) = rest.split_once('\n').unwrap();
        assert!((sum.parse::<f64>().unwrap() - 4.256).abs() < 1e-9, "{sum}");
        assert_eq!(rest, "d_seconds_count{method=\"/p.S/M\"} 6\n");
    }
}
