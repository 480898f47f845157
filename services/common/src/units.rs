//! Sizes as docker writes them: `units.RAMInBytes` of docker/go-units
//! (v0.5, the parser docker's CLI and daemon use for `--memory`,
//! `--memory-swap`, `--log-opt max-size`, ...).

/// Docker's `units.RAMInBytes`: a decimal number (a fraction is allowed),
/// optionally a space, then an optional binary unit `b`, `k`, `m`, `g`,
/// `t`, `p` (any case), which may be followed by `b` or `ib` (`10k`,
/// `10KB`, `10KiB`, `1.5g`, `7b`, `4`). The errors are go-units' words:
/// `invalid size: '…'` when there is no number or it is negative,
/// `invalid suffix: '…'` for an unknown unit, and Go's ParseFloat message
/// when the number does not parse.
pub fn ram_in_bytes(s: &str) -> Result<i64, String> {
    let invalid_size = || format!("invalid size: '{s}'");
    let (num, sfx) = match s.split_once(' ') {
        Some((n, x)) => (n, x),
        None => {
            // The suffix starts after the last digit or dot.
            let Some(sep) = s.rfind(|c: char| c.is_ascii_digit() || c == '.') else {
                return Err(invalid_size());
            };
            (&s[..=sep], &s[sep + 1..])
        }
    };
    let size = parse_float(num)?;
    if size < 0.0 {
        return Err(invalid_size());
    }
    let bad_suffix = |sfx: &str| format!("invalid suffix: '{sfx}'");
    let mul: f64 = if sfx.is_empty() {
        1.0
    } else {
        if sfx.len() > 3 {
            // Reported as given: go-units lower-cases only after this check.
            return Err(bad_suffix(sfx));
        }
        let sfx = sfx.to_lowercase();
        let b = sfx.as_bytes();
        if b[0] == b'b' {
            if b.len() > 1 {
                return Err(bad_suffix(&sfx));
            }
            1.0
        } else {
            let shift = match b[0] {
                b'k' => 10,
                b'm' => 20,
                b'g' => 30,
                b't' => 40,
                b'p' => 50,
                _ => return Err(bad_suffix(&sfx)),
            };
            match b.len() {
                2 if b[1] != b'b' => return Err(bad_suffix(&sfx)),
                3 if &b[1..] != b"ib" => return Err(bad_suffix(&sfx)),
                _ => {}
            }
            (1u64 << shift) as f64
        }
    };
    let bytes = size * mul;
    // Go converts an out-of-range float to an undefined int64; refuse it.
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(invalid_size());
    }
    Ok(bytes as i64)
}

/// Go's `strconv.ParseFloat(s, 64)` for the decimal forms a size can take
/// (an optional sign, digits, a fraction, an exponent), with its error text.
fn parse_float(s: &str) -> Result<f64, String> {
    let syntax = || {
        format!(
            "strconv.ParseFloat: parsing {}: invalid syntax",
            go_quote(s)
        )
    };
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || !digits(int) || !digits(frac) {
        return Err(syntax());
    }
    if let Some(e) = exp {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        if e.is_empty() || !digits(e) {
            return Err(syntax());
        }
    }
    let v: f64 = s.parse().map_err(|_| syntax())?;
    if v.is_infinite() {
        return Err(format!(
            "strconv.ParseFloat: parsing {}: value out of range",
            go_quote(s)
        ));
    }
    Ok(v)
}

/// Go's `%q` for the plain ASCII strings that reach it here.
fn go_quote(s: &str) -> String {
    format!("\"{}\"", s.escape_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        for (s, want) in [
            ("4", 4),
            ("0", 0),
            ("10k", 10 << 10),
            ("10K", 10 << 10),
            ("10kb", 10 << 10),
            ("10KB", 10 << 10),
            ("10KiB", 10 << 10),
            ("10kib", 10 << 10),
            ("2m", 2 << 20),
            ("8M", 8 << 20),
            ("1g", 1 << 30),
            ("1G", 1 << 30),
            ("2t", 2 << 40),
            ("1p", 1 << 50),
            ("1.5k", 1536),
            ("0.5m", 512 << 10),
            (".5k", 512),
            ("7b", 7),
            ("7B", 7),
            ("32 MiB", 32 << 20),
            ("32 mb", 32 << 20),
            ("1e3", 1000),
            ("+5m", 5 << 20),
        ] {
            assert_eq!(ram_in_bytes(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn errors_are_docker_words() {
        for (s, want) in [
            ("12x", "invalid suffix: 'x'"),
            ("10kk", "invalid suffix: 'kk'"),
            ("10bb", "invalid suffix: 'bb'"),
            ("10mbb", "invalid suffix: 'mbb'"),
            ("10mibb", "invalid suffix: 'mibb'"),
            ("10gi", "invalid suffix: 'gi'"),
            ("1 x", "invalid suffix: 'x'"),
            ("12X", "invalid suffix: 'x'"),
            ("10XYZW", "invalid suffix: 'XYZW'"),
            ("", "invalid size: ''"),
            ("k", "invalid size: 'k'"),
            ("abc", "invalid size: 'abc'"),
            ("-1", "invalid size: '-1'"),
            ("-5m", "invalid size: '-5m'"),
            (
                "1..2k",
                "strconv.ParseFloat: parsing \"1..2\": invalid syntax",
            ),
            (
                "1.2.3",
                "strconv.ParseFloat: parsing \"1.2.3\": invalid syntax",
            ),
            ("a1", "strconv.ParseFloat: parsing \"a1\": invalid syntax"),
            (
                "1e999",
                "strconv.ParseFloat: parsing \"1e999\": value out of range",
            ),
            ("99999999999p", "invalid size: '99999999999p'"),
        ] {
            assert_eq!(ram_in_bytes(s), Err(want.to_string()), "{s}");
        }
    }
}
