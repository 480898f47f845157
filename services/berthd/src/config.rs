//! berthd's command line over its config file (`--config`, `BERTHD_CONFIG`,
//! default /etc/berth/config.toml): every flag can be set in the file, by
//! its long name, global flags at the top level and a subcommand's own
//! flags in a table named after it (`[gateway]`). Precedence: the command
//! line, then the environment, then the config file, then the built-in
//! default. The example with every flag documented is deploy/config.toml; a
//! test keeps it complete.

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};

use crate::Cli;

/// The id of the flag naming the config file.
pub(crate) const CONFIG_FLAG: &str = "config";
/// The config file read when neither --config nor BERTHD_CONFIG names one.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/berth/config.toml";

/// Parses berthd's command line (and config file). Usage errors, --help and
/// --version exit the process as clap does; config file errors are returned.
pub(crate) fn parse_cli() -> Result<Cli> {
    parse_from(std::env::args_os()).map_err(|e| match e {
        berth_common::config::Error::Cli(e) => e.exit(),
        e => anyhow::Error::new(e),
    })
}

fn parse_from(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<Cli, berth_common::config::Error> {
    let matches = berth_common::config::try_get_matches(Cli::command(), CONFIG_FLAG, args)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_common::config::{settable_flags, ConfigFile};
    use std::path::{Path, PathBuf};

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config.toml")
    }

    fn example() -> String {
        std::fs::read_to_string(example_path()).expect("read deploy/config.toml")
    }

    /// One documented key of the example: its table, the setting line
    /// (`#key = value`, commented out) and the comment lines above it.
    struct Documented {
        table: String,
        key: String,
        doc: String,
    }

    /// The example's settings: `#key = value` lines (no space after `#`;
    /// prose comments are `# text`), grouped by the `[table]` above them.
    fn documented(text: &str) -> Vec<Documented> {
        let mut out = Vec::new();
        let mut table = String::new();
        let mut doc = String::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = t.trim().to_string();
                doc.clear();
            } else if let Some(prose) = line
                .strip_prefix("# ")
                .or(line.strip_prefix('#').filter(|l| l.is_empty()))
            {
                doc.push_str(prose);
                doc.push('\n');
            } else if let Some((key, _)) = line.strip_prefix('#').and_then(|l| l.split_once('=')) {
                out.push(Documented {
                    table: table.clone(),
                    key: key.trim().to_string(),
                    doc: std::mem::take(&mut doc),
                });
            } else if line.is_empty() {
                doc.clear();
            }
        }
        out
    }

    /// The example with every `#key = value` line made active.
    fn uncommented(text: &str) -> String {
        text.lines()
            .map(|l| {
                let t = l.trim_start();
                match t.strip_prefix('#') {
                    Some(rest) if !rest.starts_with(' ') && rest.contains('=') => rest.to_string(),
                    _ => l.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_example_config_parses_as_it_is() {
        let file = ConfigFile::parse(&example_path(), &example()).unwrap();
        file.apply(Cli::command(), &[CONFIG_FLAG]).unwrap();
    }

    /// Fails when a berthd flag is missing from deploy/config.toml (or
    /// documented in the wrong table, or without its environment variable),
    /// so that the example cannot go stale.
    #[test]
    fn the_example_config_documents_every_flag() {
        let text = example();
        let docs = documented(&text);
        let mut missing = Vec::new();
        for (table, key, arg) in settable_flags(&Cli::command(), &[CONFIG_FLAG]) {
            let name = if table.is_empty() {
                key.clone()
            } else {
                format!("[{table}] {key}")
            };
            let Some(d) = docs.iter().find(|d| d.table == table && d.key == key) else {
                missing.push(format!("{name}: not in the file"));
                continue;
            };
            if d.doc.trim().is_empty() {
                missing.push(format!("{name}: no comment above it"));
            }
            if !d.doc.to_lowercase().contains("default") {
                missing.push(format!("{name}: the comment does not give the default"));
            }
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                if !d.doc.contains(&*env) {
                    missing.push(format!("{name}: the comment does not name {env}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "deploy/config.toml is out of date with berthd's flags:\n  {}",
            missing.join("\n  ")
        );
        // And nothing in it that is no flag: every commented-out setting,
        // made active, is accepted.
        let active = uncommented(&text);
        let file = ConfigFile::parse(&example_path(), &active).unwrap();
        file.apply(Cli::command(), &[CONFIG_FLAG])
            .unwrap_or_else(|e| panic!("deploy/config.toml with every setting active: {e}"));
    }

    /// The value shown for a flag with a built-in default is that default.
    #[test]
    fn the_example_config_shows_the_defaults() {
        let active: toml::Table = uncommented(&example()).parse().unwrap();
        let mut wrong = Vec::new();
        for (table, key, arg) in settable_flags(&Cli::command(), &[CONFIG_FLAG]) {
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            if defaults.is_empty() {
                continue;
            }
            let t = table
                .split('.')
                .filter(|s| !s.is_empty())
                .try_fold(&active, |t, name| t.get(name)?.as_table());
            let Some(value) = t.and_then(|t| t.get(&key)) else {
                continue; // reported by the_example_config_documents_every_flag
            };
            let shown: Vec<String> = match value {
                toml::Value::Array(a) => a.iter().map(scalar).collect(),
                v => vec![scalar(v)],
            };
            if shown != defaults {
                wrong.push(format!(
                    "{table}.{key}: shows {shown:?}, default is {defaults:?}"
                ));
            }
        }
        assert!(wrong.is_empty(), "deploy/config.toml: {}", wrong.join("; "));
    }

    fn scalar(v: &toml::Value) -> String {
        match v {
            toml::Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }

    #[test]
    fn the_config_file_sets_berthd_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            r#"
root = "/srv/berth"
bridge-mtu = 1400
dns-upstream = ["127.0.0.1:53"]

[gateway]
content-addr = "unix:///srv/run/content.sock"
"#,
        )
        .unwrap();
        let args = |extra: &[&str]| {
            let mut a: Vec<std::ffi::OsString> = vec!["berthd".into(), "--config".into()];
            a.push(path.clone().into());
            a.extend(extra.iter().map(Into::into));
            a
        };
        let cli = parse_from(args(&["gateway"])).unwrap();
        assert_eq!(cli.root, PathBuf::from("/srv/berth"));
        assert_eq!(cli.bridge_mtu, Some(1400));
        assert_eq!(cli.dns_upstream, vec!["127.0.0.1:53".parse().unwrap()]);
        match cli.command {
            Some(crate::Command::Gateway { content_addr, .. }) => {
                assert_eq!(
                    content_addr.as_deref(),
                    Some("unix:///srv/run/content.sock")
                )
            }
            other => panic!("expected the gateway subcommand, got {other:?}"),
        }
        // The command line wins over the file.
        let cli = parse_from(args(&["--root", "/cli", "content"])).unwrap();
        assert_eq!(cli.root, PathBuf::from("/cli"));

        std::fs::write(&path, "bridge-mtu = \"wide\"\n").unwrap();
        let err = parse_from(args(&[])).expect_err("a bad value is refused");
        let msg = err.to_string();
        assert!(
            msg.contains("bridge-mtu") && msg.contains(&*path.to_string_lossy()),
            "{msg}"
        );
    }

    #[test]
    fn the_default_config_path_is_etc_berth() {
        let cmd = Cli::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == CONFIG_FLAG)
            .unwrap();
        assert_eq!(arg.get_default_values(), [DEFAULT_CONFIG]);
        assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new("BERTHD_CONFIG")));
    }
}
