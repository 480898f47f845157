//! A TOML config file under a clap command line, with no hand-kept list of
//! keys: every long flag of a command can be set from the file.
//!
//! Keys are the long flag names (`root`, `bridge-subnet`, ...). Top-level
//! keys set the flags of the top-level command (global flags included); a
//! table named after a subcommand (`[gateway]`) sets that subcommand's own
//! flags, and nests for deeper subcommands. A flag that takes no value is
//! set with a TOML boolean (or an integer for a counted flag); a flag that
//! takes several values (repeatable, or comma-separated) takes a TOML array
//! or a string.
//!
//! The file's values become the defaults of the flags, so the precedence is
//! command line > environment variable > config file > built-in default, and
//! [`clap::ArgMatches::value_source`] reports a value from the file as
//! `DefaultValue`. Unknown keys and values a flag's parser refuses are
//! errors that name the key and the file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// Errors of loading or applying a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: unknown key {key:?}{hint}")]
    UnknownKey {
        path: PathBuf,
        key: String,
        hint: String,
    },
    #[error("config file {path}: bad value for {key:?}: {message}")]
    BadValue {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// A command line parsed over a config file: either part can be wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cli(#[from] clap::Error),
}

/// A parsed config file.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
}

impl ConfigFile {
    /// Reads `path`. A missing file is `Ok(None)` unless `required` (the
    /// user named the file), when it is an error like any other read error.
    pub fn load(path: &Path, required: bool) -> Result<Option<ConfigFile>, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => ConfigFile::parse(path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses `text` as the contents of the file `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: e.to_string().trim_end().to_string(),
            })?;
        Ok(ConfigFile {
            path: path.to_owned(),
            table,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the file's values the defaults of `cmd`'s flags; `skip` names
    /// flags (by id) the file may not set, such as the one naming the file.
    pub fn apply(&self, cmd: Command, skip: &[&str]) -> Result<Command, ConfigError> {
        apply_table(&self.path, cmd, &self.table, "", &[], skip)
    }
}

/// Applies `table` to `cmd`. `prefix` is the dotted table path for error
/// messages; `parent_globals` are the long names of the global flags of the
/// commands above (to tell the user where such a key belongs).
fn apply_table(
    path: &Path,
    mut cmd: Command,
    table: &toml::Table,
    prefix: &str,
    parent_globals: &[String],
    skip: &[&str],
) -> Result<Command, ConfigError> {
    let dotted = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    for (key, value) in table {
        if let toml::Value::Table(sub) = value {
            if cmd.find_subcommand(key).is_none() {
                let names: Vec<String> = cmd
                    .get_subcommands()
                    .map(|s| format!("[{}]", dotted(s.get_name())))
                    .collect();
                return Err(ConfigError::UnknownKey {
                    path: path.to_owned(),
                    key: format!("[{}]", dotted(key)),
                    hint: if names.is_empty() {
                        String::new()
                    } else {
                        format!(" (tables: {})", names.join(", "))
                    },
                });
            }
            let mut globals = parent_globals.to_vec();
            globals.extend(
                cmd.get_arguments()
                    .filter(|a| a.is_global_set())
                    .filter_map(|a| a.get_long().map(str::to_string)),
            );
            let sub_prefix = dotted(key);
            let mut result = Ok(());
            cmd = cmd.mut_subcommand(key, |s| {
                match apply_table(path, s.clone(), sub, &sub_prefix, &globals, skip) {
                    Ok(s) => s,
                    Err(e) => {
                        result = Err(e);
                        s
                    }
                }
            });
            result?;
            continue;
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !skip.contains(&a.get_id().as_str()))
            .cloned();
        let Some(arg) = arg else {
            let hint = if parent_globals.iter().any(|g| g == key) {
                " (a global flag: set it at the top level of the file)".to_string()
            } else if skip.iter().any(|s| {
                cmd.get_arguments()
                    .any(|a| a.get_id() == *s && a.get_long() == Some(key))
            }) {
                " (it cannot be set in the config file)".to_string()
            } else {
                String::new()
            };
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key: dotted(key),
                hint,
            });
        };
        let bad = |message: String| ConfigError::BadValue {
            path: path.to_owned(),
            key: dotted(key),
            message,
        };
        let values = values_for(&arg, value).map_err(bad)?;
        cmd = cmd.mut_arg(arg.get_id().clone(), |a| a.default_values(values));
    }
    Ok(cmd)
}

/// The default values a TOML value gives `arg`, checked by the flag's own
/// value parser.
fn values_for(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    let action = arg.get_action();
    if !action.takes_values() {
        return match (action, value) {
            (ArgAction::SetTrue | ArgAction::SetFalse, toml::Value::Boolean(b)) => {
                Ok(vec![b.to_string()])
            }
            (ArgAction::Count, toml::Value::Integer(n)) if (0..=255).contains(n) => {
                Ok(vec![n.to_string()])
            }
            (ArgAction::Count, _) => Err("expected a count from 0 to 255".into()),
            _ => Err(format!("expected true or false, not {}", describe(value))),
        };
    }
    let multiple = matches!(action, ArgAction::Append)
        || arg.get_num_args().is_some_and(|r| r.max_values() > 1)
        || arg.get_value_delimiter().is_some();
    let items: Vec<&toml::Value> = match value {
        toml::Value::Array(items) if multiple => items.iter().collect(),
        toml::Value::Array(_) => {
            return Err("expected a single value, not a list".into());
        }
        v => vec![v],
    };
    let mut out = Vec::new();
    for item in items {
        let s = match item {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Datetime(d) => d.to_string(),
            v => {
                return Err(format!(
                    "expected a string, number or boolean, not {}",
                    describe(v)
                ))
            }
        };
        match arg.get_value_delimiter() {
            Some(d) => out.extend(s.split(d).map(str::to_string)),
            None => out.push(s),
        }
    }
    for v in &out {
        check_value(arg, v)?;
    }
    Ok(out)
}

fn describe(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

/// Runs `value` through `arg`'s value parser (in a command of its own, so
/// that nothing else about the flag, such as its environment variable or
/// its relations to other flags, is involved).
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    let probe = Arg::new("value")
        .long("value")
        .value_parser(arg.get_value_parser().clone())
        .action(ArgAction::Set)
        .allow_hyphen_values(true);
    let cmd = Command::new("config")
        .no_binary_name(true)
        .disable_help_flag(true)
        .arg(probe);
    match cmd.try_get_matches_from([OsString::from("--value"), OsString::from(value)]) {
        Ok(_) => Ok(()),
        Err(e) => {
            // clap's message is "error: invalid value 'x' for '--value
            // <value>': why"; keep the reason, without the probe's name.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let reason = first
                .split_once("': ")
                .filter(|(head, _)| head.contains("--value"))
                .map_or(first, |(_, why)| why);
            Err(format!("invalid value {value:?}: {reason}"))
        }
    }
}

/// Where the config file is and whether the user asked for it: the value of
/// flag `config_id` in a lenient first parse of `args` (`None` when the
/// command line cannot be parsed at all, e.g. `--help`, or the flag has no
/// value).
fn config_location(cmd: &Command, config_id: &str, args: &[OsString]) -> Option<(PathBuf, bool)> {
    let m = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(args)
        .ok()?;
    let raw = m.get_raw(config_id)?.next()?;
    let explicit = !matches!(
        m.value_source(config_id),
        Some(ValueSource::DefaultValue) | None
    );
    Some((PathBuf::from(raw), explicit))
}

/// Parses `args` (program name first) with `cmd`, over the config file
/// named by flag `config_id` (on the command line, in its environment
/// variable or by its default). A file given explicitly must exist; the
/// default one may be absent.
pub fn try_get_matches<I, T>(cmd: Command, config_id: &str, args: I) -> Result<ArgMatches, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cmd = match config_location(&cmd, config_id, &args) {
        Some((path, explicit)) => match ConfigFile::load(&path, explicit)? {
            Some(file) => file.apply(cmd, &[config_id])?,
            None => cmd,
        },
        None => cmd,
    };
    Ok(cmd.try_get_matches_from(args)?)
}

/// Every flag a config file can set, as (table path, long name, flag):
/// the top-level flags with an empty table path, then each subcommand's.
pub fn settable_flags(cmd: &Command, skip: &[&str]) -> Vec<(String, String, Arg)> {
    fn walk(cmd: &Command, table: &str, skip: &[&str], out: &mut Vec<(String, String, Arg)>) {
        for a in cmd.get_arguments() {
            if skip.contains(&a.get_id().as_str()) {
                continue;
            }
            if let Some(long) = a.get_long() {
                out.push((table.to_string(), long.to_string(), a.clone()));
            }
        }
        for s in cmd.get_subcommands() {
            let t = if table.is_empty() {
                s.get_name().to_string()
            } else {
                format!("{table}.{}", s.get_name())
            };
            walk(s, &t, skip, out);
        }
    }
    let mut out = Vec::new();
    walk(cmd, "", skip, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A command like berthd's: global flags, a repeatable and a
    /// comma-separated one, a switch, and subcommands with flags.
    fn cmd(env_prefix: &str) -> Command {
        Command::new("demo")
            .arg(
                Arg::new("config")
                    .long("config")
                    .global(true)
                    .default_value("/nonexistent/berth-demo.toml")
                    .value_parser(clap::value_parser!(PathBuf)),
            )
            .arg(
                Arg::new("root")
                    .long("root")
                    .global(true)
                    .env(format!("{env_prefix}_ROOT"))
                    .default_value("/var/lib/demo"),
            )
            .arg(
                Arg::new("mtu")
                    .long("mtu")
                    .global(true)
                    .value_parser(clap::value_parser!(u32)),
            )
            .arg(
                Arg::new("mirror")
                    .long("mirror")
                    .global(true)
                    .action(ArgAction::Append),
            )
            .arg(
                Arg::new("upstream")
                    .long("upstream")
                    .global(true)
                    .value_delimiter(',')
                    .value_parser(clap::value_parser!(std::net::SocketAddr)),
            )
            .arg(
                Arg::new("insecure")
                    .long("insecure")
                    .global(true)
                    .action(ArgAction::SetTrue),
            )
            .subcommand(
                Command::new("gateway")
                    .arg(Arg::new("socket").long("socket"))
                    .arg(Arg::new("content-addr").long("content-addr")),
            )
            .subcommand(Command::new("content").arg(Arg::new("socket").long("socket")))
    }

    struct TempConfig(tempfile::NamedTempFile);

    impl TempConfig {
        fn new(text: &str) -> Self {
            let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
            f.write_all(text.as_bytes()).unwrap();
            TempConfig(f)
        }
        fn path(&self) -> String {
            self.0.path().to_string_lossy().into_owned()
        }
    }

    fn parse(args: &[&str]) -> Result<ArgMatches, Error> {
        try_get_matches(
            cmd("BERTH_CONFIG_TEST_UNUSED"),
            "config",
            args.iter().copied(),
        )
    }

    fn one(m: &ArgMatches, id: &str) -> Option<String> {
        m.get_raw(id)
            .and_then(|mut v| v.next())
            .map(|v| v.to_string_lossy().into_owned())
    }

    fn all(m: &ArgMatches, id: &str) -> Vec<String> {
        m.get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_missing_default_file_is_fine() {
        let m = parse(&["demo", "content"]).unwrap();
        assert_eq!(one(&m, "root").as_deref(), Some("/var/lib/demo"));
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let err = parse(&["demo", "--config", "/nonexistent/given.toml"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, Error::Config(ConfigError::Read { .. })),
            "{msg}"
        );
        assert!(msg.contains("/nonexistent/given.toml"), "{msg}");
    }

    #[test]
    fn the_file_sets_global_and_subcommand_flags() {
        let f = TempConfig::new(
            r#"
root = "/srv/demo"
mtu = 1400
mirror = ["http://a", "http://b"]
upstream = ["127.0.0.1:53", "127.0.0.2:53"]
insecure = true

[gateway]
socket = "/run/demo/gw.sock"
content-addr = "unix:///run/demo/content.sock"

[content]
socket = "/run/demo/content.sock"
"#,
        );
        let m = parse(&["demo", "--config", &f.path(), "gateway"]).unwrap();
        assert_eq!(one(&m, "root").as_deref(), Some("/srv/demo"));
        assert_eq!(m.value_source("root"), Some(ValueSource::DefaultValue));
        assert_eq!(m.get_one::<u32>("mtu"), Some(&1400));
        assert_eq!(all(&m, "mirror"), ["http://a", "http://b"]);
        assert_eq!(all(&m, "upstream"), ["127.0.0.1:53", "127.0.0.2:53"]);
        assert!(m.get_flag("insecure"));
        let (name, sub) = m.subcommand().unwrap();
        assert_eq!(name, "gateway");
        assert_eq!(one(sub, "socket").as_deref(), Some("/run/demo/gw.sock"));
        assert_eq!(
            one(sub, "content-addr").as_deref(),
            Some("unix:///run/demo/content.sock")
        );
        // Global flags reach the subcommand's matches too.
        assert_eq!(one(sub, "root").as_deref(), Some("/srv/demo"));

        let m = parse(&["demo", "--config", &f.path(), "content"]).unwrap();
        let (_, sub) = m.subcommand().unwrap();
        assert_eq!(
            one(sub, "socket").as_deref(),
            Some("/run/demo/content.sock")
        );
    }

    #[test]
    fn a_comma_separated_string_sets_a_delimited_flag() {
        let f = TempConfig::new(r#"upstream = "127.0.0.1:53,127.0.0.3:5353""#);
        let m = parse(&["demo", "--config", &f.path()]).unwrap();
        assert_eq!(all(&m, "upstream"), ["127.0.0.1:53", "127.0.0.3:5353"]);
    }

    #[test]
    fn command_line_beats_environment_beats_file_beats_default() {
        // A variable name of this test only: the environment is shared by
        // the tests of this process.
        let prefix = "BERTH_CONFIG_TEST_PRECEDENCE";
        let var = format!("{prefix}_ROOT");
        let f = TempConfig::new(r#"root = "/from/file""#);
        let run = |args: &[&str]| {
            let mut full = vec!["demo", "--config"];
            let p = f.path();
            full.push(&p);
            full.extend_from_slice(args);
            let m = try_get_matches(cmd(prefix), "config", full).unwrap();
            (one(&m, "root").unwrap(), m.value_source("root").unwrap())
        };
        std::env::remove_var(&var);
        assert_eq!(run(&[]), ("/from/file".into(), ValueSource::DefaultValue));
        std::env::set_var(&var, "/from/env");
        assert_eq!(run(&[]), ("/from/env".into(), ValueSource::EnvVariable));
        assert_eq!(
            run(&["--root", "/from/cli"]),
            ("/from/cli".into(), ValueSource::CommandLine)
        );
        std::env::remove_var(&var);
        // Without the file, the built-in default.
        let m = try_get_matches(cmd(prefix), "config", ["demo"]).unwrap();
        assert_eq!(one(&m, "root").as_deref(), Some("/var/lib/demo"));
    }

    #[test]
    fn the_config_path_can_come_from_the_environment() {
        let f = TempConfig::new(r#"root = "/from/env/file""#);
        let var = "BERTH_CONFIG_TEST_CONFIG_ENV";
        // clap reads a flag's variable when the command is built.
        let c = || cmd("BERTH_CONFIG_TEST_UNUSED").mut_arg("config", |a| a.env(var));
        std::env::set_var(var, f.path());
        let m = try_get_matches(c(), "config", ["demo"]).unwrap();
        assert_eq!(one(&m, "root").as_deref(), Some("/from/env/file"));
        // A file named by the environment must exist.
        std::env::set_var(var, "/nonexistent/from-env.toml");
        let err = try_get_matches(c(), "config", ["demo"]).unwrap_err();
        std::env::remove_var(var);
        assert!(
            err.to_string().contains("/nonexistent/from-env.toml"),
            "{err}"
        );
    }

    fn config_error(text: &str) -> String {
        let f = TempConfig::new(text);
        let err = parse(&["demo", "--config", &f.path()]).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&f.path()), "the message names the file: {msg}");
        msg
    }

    #[test]
    fn unknown_keys_are_errors() {
        let msg = config_error("rot = \"/x\"");
        assert!(msg.contains("unknown key \"rot\""), "{msg}");
        let msg = config_error("[gateway]\nsockett = \"/x\"");
        assert!(msg.contains("\"gateway.sockett\""), "{msg}");
        let msg = config_error("[gatway]\nsocket = \"/x\"");
        assert!(
            msg.contains("[gatway]") && msg.contains("[gateway]"),
            "{msg}"
        );
        // A global flag belongs at the top level.
        let msg = config_error("[gateway]\nroot = \"/x\"");
        assert!(
            msg.contains("gateway.root") && msg.contains("top level"),
            "{msg}"
        );
        // The file cannot name another file.
        let msg = config_error("config = \"/x.toml\"");
        assert!(
            msg.contains("\"config\"") && msg.contains("cannot be set"),
            "{msg}"
        );
        // Nor set the generated flags.
        let msg = config_error("help = true");
        assert!(msg.contains("\"help\""), "{msg}");
    }

    #[test]
    fn bad_values_are_errors() {
        let msg = config_error("mtu = \"big\"");
        assert!(
            msg.contains("bad value for \"mtu\"") && msg.contains("big"),
            "{msg}"
        );
        let msg = config_error("mtu = -1");
        assert!(msg.contains("\"mtu\""), "{msg}");
        let msg = config_error("mtu = [1, 2]");
        assert!(
            msg.contains("\"mtu\"") && msg.contains("single value"),
            "{msg}"
        );
        let msg = config_error("insecure = \"yes\"");
        assert!(
            msg.contains("\"insecure\"") && msg.contains("true or false"),
            "{msg}"
        );
        let msg = config_error("upstream = [\"127.0.0.1:53\", \"nowhere\"]");
        assert!(
            msg.contains("\"upstream\"") && msg.contains("nowhere"),
            "{msg}"
        );
        let msg = config_error("[gateway]\nsocket = { a = 1 }");
        assert!(msg.contains("gateway.socket"), "{msg}");
        let msg = config_error("root = [\"/a\"]\n");
        assert!(msg.contains("\"root\""), "{msg}");
        let msg = config_error("root = ");
        assert!(msg.contains("not valid TOML"), "{msg}");
    }

    #[test]
    fn settable_flags_lists_every_long_flag_by_table() {
        let flags: Vec<(String, String)> = settable_flags(&cmd("X"), &["config"])
            .into_iter()
            .map(|(t, k, _)| (t, k))
            .collect();
        let expect = [
            ("", "root"),
            ("", "mtu"),
            ("", "mirror"),
            ("", "upstream"),
            ("", "insecure"),
            ("gateway", "socket"),
            ("gateway", "content-addr"),
            ("content", "socket"),
        ];
        assert_eq!(
            flags,
            expect
                .iter()
                .map(|(t, k)| (t.to_string(), k.to_string()))
                .collect::<Vec<_>>()
        );
    }
}
