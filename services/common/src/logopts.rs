//! `--log-opt` for the json-file log driver (docker's max-size, max-file).

use std::collections::HashMap;

/// Validated json-file options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonFileOpts {
    /// Rotate before the log would grow past this many bytes (None: never).
    pub max_size: Option<u64>,
    /// Files kept, the current one included (1: truncate instead).
    pub max_file: u32,
}

pub use crate::units::ram_in_bytes;

/// Validates log options the way docker's json-file driver does.
pub fn parse_json_file_opts(opts: &HashMap<String, String>) -> Result<JsonFileOpts, String> {
    let mut keys: Vec<&String> = opts.keys().collect();
    keys.sort();
    for k in keys {
        if k != "max-size" && k != "max-file" {
            return Err(format!("unknown log opt '{k}' for json-file log driver"));
        }
    }
    let max_size = match opts.get("max-size") {
        None => None,
        Some(v) => {
            let n =
                ram_in_bytes(v).map_err(|e| format!("invalid value for log-opt max-size: {e}"))?;
            if n <= 0 {
                return Err("max-size must be a positive number".into());
            }
            Some(n as u64)
        }
    };
    let max_file = match opts.get("max-file") {
        None => 1,
        Some(v) => {
            let n: i64 = v.parse().map_err(|_| {
                format!("invalid value for log-opt max-file: strconv.Atoi: parsing {v:?}: invalid syntax")
            })?;
            if n < 1 {
                return Err("max-file cannot be less than 1".into());
            }
            u32::try_from(n).map_err(|_| format!("invalid value for log-opt max-file: {v}"))?
        }
    };
    Ok(JsonFileOpts { max_size, max_file })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(ram_in_bytes("10").unwrap(), 10);
        assert_eq!(ram_in_bytes("10k").unwrap(), 10 << 10);
        assert_eq!(ram_in_bytes("10K").unwrap(), 10 << 10);
        assert_eq!(ram_in_bytes("10kb").unwrap(), 10 << 10);
        assert_eq!(ram_in_bytes("10KiB").unwrap(), 10 << 10);
        assert_eq!(ram_in_bytes("2m").unwrap(), 2 << 20);
        assert_eq!(ram_in_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(ram_in_bytes("1.5k").unwrap(), 1536);
        assert_eq!(ram_in_bytes("7b").unwrap(), 7);
        // go-units v0.5 (docker since 23.0) takes a leading dot: ".5k" is 512.
        assert_eq!(ram_in_bytes(".5k").unwrap(), 512);
        for bad in ["", "k", "abc", "10x", "-1", "1..2k", "10kk", "10bb"] {
            assert!(ram_in_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_file_opts() {
        assert_eq!(
            parse_json_file_opts(&opts(&[])).unwrap(),
            JsonFileOpts {
                max_size: None,
                max_file: 1
            }
        );
        assert_eq!(
            parse_json_file_opts(&opts(&[("max-size", "10k"), ("max-file", "3")])).unwrap(),
            JsonFileOpts {
                max_size: Some(10240),
                max_file: 3
            }
        );
        assert_eq!(
            parse_json_file_opts(&opts(&[("max-size", "2k")]))
                .unwrap()
                .max_file,
            1
        );
        let e = parse_json_file_opts(&opts(&[("max-size", "abc")])).unwrap_err();
        assert!(e.starts_with("invalid value for log-opt max-size"), "{e}");
        assert_eq!(
            parse_json_file_opts(&opts(&[("max-size", "0")])).unwrap_err(),
            "max-size must be a positive number"
        );
        assert_eq!(
            parse_json_file_opts(&opts(&[("max-file", "0")])).unwrap_err(),
            "max-file cannot be less than 1"
        );
        let e = parse_json_file_opts(&opts(&[("max-file", "x")])).unwrap_err();
        assert!(e.starts_with("invalid value for log-opt max-file"), "{e}");
        assert_eq!(
            parse_json_file_opts(&opts(&[("foo", "1")])).unwrap_err(),
            "unknown log opt 'foo' for json-file log driver"
        );
    }
}
