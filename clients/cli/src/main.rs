//! `berth`: the docker-compatible command line of berth. Thin: it parses
//! flags, calls the gateway (berth.gateway.v1) and renders the answers the
//! way docker does, with docker's exit codes.

mod auth;
mod cli;
mod cmd;
mod ctx;
mod render;
mod template;

use std::io::Write;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use tracing::Instrument;

use cli::{Cli, Command, ContainerCommand, ImageCommand, SystemCommand, DEFAULT_HOST};
use ctx::Ctx;

/// Exit code of docker's engine-side errors for run/create (and of flag
/// errors).
const EXIT_ENGINE: i32 = 125;

/// Prints one line to stdout; a closed stdout (`berth ps | head -1`) is
/// not an error worth a panic.
pub fn outln(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// Prints one error line to stderr.
pub fn eprint_err(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{msg}");
}

/// How a listing is printed.
pub enum OutputFormat {
    /// The command's default table.
    Default,
    /// IDs only.
    Quiet,
    /// One JSON object per line.
    Json,
    /// A table with this row template (header from the same template).
    Table(String),
    /// This template per row, no header.
    Raw(String),
}

/// Interprets `--format` (and `-q`) as docker does.
pub fn output_format(format: Option<&str>, quiet: bool) -> Result<OutputFormat, String> {
    let f = match format {
        None | Some("") => {
            return Ok(if quiet {
                OutputFormat::Quiet
            } else {
                OutputFormat::Default
            })
        }
        Some(f) => f,
    };
    let unescape = |s: &str| s.replace("\\t", "\t").replace("\\n", "\n");
    Ok(if f == "json" {
        OutputFormat::Json
    } else if f == "table" {
        OutputFormat::Default
    } else if let Some(t) = f.strip_prefix("table ") {
        OutputFormat::Table(unescape(t.trim()))
    } else {
        OutputFormat::Raw(unescape(f))
    })
}

/// Prints listing rows in `format`; `default_table` starts with "table ".
pub fn print_rows(
    format: OutputFormat,
    default_table: &str,
    quiet: &str,
    header: &serde_json::Value,
    rows: &[serde_json::Value],
) -> i32 {
    let (tmpl, is_table) = match format {
        OutputFormat::Default => (default_table["table ".len()..].to_string(), true),
        OutputFormat::Quiet => (quiet.to_string(), false),
        OutputFormat::Table(t) => (t, true),
        OutputFormat::Raw(t) => (t, false),
        OutputFormat::Json => {
            let mut out = std::io::stdout().lock();
            for r in rows {
                let _ = writeln!(out, "{r}");
            }
            return 0;
        }
    };
    let t = match template::parse(&tmpl) {
        Ok(t) => t,
        Err(e) => {
            eprint_err(&format!("template parsing error: {e}"));
            return 1;
        }
    };
    let mut lines = Vec::new();
    if is_table {
        lines.push(t.render(header));
    }
    lines.extend(rows.iter().map(|r| t.render(r)));
    let lines: Result<Vec<String>, String> = lines.into_iter().collect();
    let lines = match lines {
        Ok(l) => l,
        Err(e) => {
            eprint_err(&format!("template: {e}"));
            return 1;
        }
    };
    let text = if is_table {
        let cells: Vec<Vec<String>> = lines
            .iter()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect();
        render::table(&cells)
    } else {
        lines.iter().map(|l| format!("{l}\n")).collect()
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    0
}

/// The (sub)command names in `args` (after global flags), e.g.
/// ["container", "run"], to choose exit codes before parsing succeeded.
fn command_path(args: &[String]) -> Vec<&str> {
    let mut path = Vec::new();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-H" | "--host" | "-c" | "--context" | "--namespace" | "--tlscacert" | "--tlscert"
            | "--tlskey" => {
                it.next();
            }
            a if a.starts_with('-') => {}
            a => {
                path.push(a);
                if !matches!(a, "container" | "image") || path.len() == 2 {
                    break;
                }
            }
        }
    }
    path
}

/// Docker's wording for an unknown flag: "unknown flag: --x" and a hint.
fn docker_flag_error(e: &clap::Error, path: &[&str]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let flag = match e.get(ContextKind::InvalidArg)? {
        ContextValue::String(s) => s.split('=').next().unwrap_or(s).to_string(),
        _ => return None,
    };
    if !flag.starts_with('-') {
        return None;
    }
    let cmd = std::iter::once("berth")
        .chain(path.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let prefix = if is_run_or_create(path) {
        "berth: "
    } else {
        ""
    };
    Some(format!("{prefix}unknown flag: {flag}\nSee '{cmd} --help'."))
}

fn is_run_or_create(path: &[&str]) -> bool {
    matches!(path.last(), Some(&"run") | Some(&"create"))
}

/// Exit code for a failed parse, as docker: 125 for flag errors (and any
/// error of run/create), 1 for wrong operands.
fn usage_exit_code(kind: ErrorKind, run_like: bool) -> i32 {
    match kind {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
        _ if run_like => EXIT_ENGINE,
        ErrorKind::MissingRequiredArgument
        | ErrorKind::MissingSubcommand
        | ErrorKind::TooFewValues
        | ErrorKind::WrongNumberOfValues
        | ErrorKind::InvalidSubcommand => 1,
        _ => EXIT_ENGINE,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let path = command_path(&args);
            let code = usage_exit_code(e.kind(), is_run_or_create(&path));
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                // `berth image`: usage on stdout, like docker.
                print!("{}", e.render());
            } else if let Some(msg) = docker_flag_error(&e, &path) {
                eprint_err(&msg);
            } else {
                let _ = e.print();
            }
            std::process::exit(code);
        }
    };
    if cli.version {
        println!("berth version {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let Some(command) = cli.command.take() else {
        let _ = Cli::command().print_help();
        return;
    };
    let run_like = matches!(
        command,
        Command::Run(_)
            | Command::Create(_)
            | Command::Container(ContainerCommand::Run(_))
            | Command::Container(ContainerCommand::Create(_))
    );
    // Contexts are client-side: no daemon needed.
    if let Command::Context(c) = command {
        std::process::exit(cmd::context::run(c));
    }
    let target = match endpoint(&cli).and_then(|(host, ctx_tls)| connection(&cli, &host, ctx_tls)) {
        Ok(t) => t,
        Err(e) => {
            eprint_err(&format!(
                "{}: {e}",
                if run_like { "berth" } else { "Error" }
            ));
            std::process::exit(if run_like { EXIT_ENGINE } else { 1 });
        }
    };
    // The OTLP/gRPC exporter's channel is driven by the runtime while the
    // telemetry guard flushes at the end, which blocks the calling thread:
    // with export on, a worker thread of its own keeps the channel going.
    let runtime = if berth_common::telemetry::otlp_enabled() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprint_err(&format!("Error: cannot start the runtime: {e}"));
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async move {
        // "berth=info" keeps our command span (and so the traceparent it
        // propagates) alive under the default "warn" level.
        let guard = berth_common::telemetry::init("berth-cli", "warn,berth=info");
        // The channel connects lazily; its first call reports a missing
        // daemon, which Ctx turns into docker's message.
        let (display_host, channel) = match target {
            Target::Unix(path) => (
                format!("unix://{}", path.display()),
                berth_common::connect_unix(path),
            ),
            Target::Tcp(addr, tls) => {
                let channel = match berth_common::grpc::connect_tcp(&addr, tls) {
                    Ok(c) => c,
                    Err(e) => {
                        eprint_err(&format!("Error: {e}"));
                        return if run_like { EXIT_ENGINE } else { 1 };
                    }
                };
                (format!("tcp://{addr}"), channel)
            }
        };
        let ctx = Ctx::new(display_host, cli.namespace, channel);
        let name = command_name(&command);
        let span = tracing::info_span!(
            "berth",
            otel.name = %format!("berth.{name}"),
            otel.kind = "client",
            command = name
        );
        berth_common::grpc::parent_from_env(&span);
        let code = dispatch(&ctx, command).instrument(span).await;
        drop(guard);
        code
    });
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// The daemon address: -H/BERTH_HOST, else the selected context's (with
/// its TLS material when it has any), else the default socket.
fn endpoint(cli: &Cli) -> Result<(String, Option<cmd::context::Context>), String> {
    if let Some(h) = &cli.host {
        if cli.context.is_some() {
            return Err(
                "conflicting options: either specify --host or --context, not both".to_string(),
            );
        }
        return Ok((h.clone(), None));
    }
    match cmd::context::selected(cli.context.as_deref())? {
        Some(c) => {
            let tls = (c.ca.is_some() || c.cert.is_some()).then(|| c.clone());
            Ok((c.host, tls))
        }
        None => Ok((DEFAULT_HOST.to_string(), None)),
    }
}

/// How to reach the daemon.
enum Target {
    Unix(std::path::PathBuf),
    Tcp(String, Option<tonic::transport::ClientTlsConfig>),
}

/// The daemon address and TLS settings from -H and the --tls* flags, as
/// docker reads them: TLS when --tls, --tlsverify (BERTH_TLS_VERIFY) or a
/// certificate flag is given; files default to $BERTH_CERT_PATH (else
/// ~/.berth)/{ca,cert,key}.pem.
fn connection(
    cli: &Cli,
    host: &str,
    ctx_tls: Option<cmd::context::Context>,
) -> Result<Target, String> {
    use berth_common::grpc::HostAddr;
    let use_tls = ctx_tls.is_some()
        || cli.tls
        || cli.tlsverify
        || cli.tlscacert.is_some()
        || cli.tlscert.is_some()
        || cli.tlskey.is_some();
    let addr = match berth_common::grpc::parse_host(host).map_err(|e| e.to_string())? {
        HostAddr::Unix(p) => {
            return if use_tls {
                Err(format!("TLS flags need a tcp:// host, not {host}"))
            } else {
                Ok(Target::Unix(p))
            }
        }
        HostAddr::Tcp(a) => a,
    };
    if !use_tls {
        return Ok(Target::Tcp(addr, None));
    }
    let cert_dir = std::env::var_os("BERTH_CERT_PATH")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".berth")))
        .unwrap_or_default();
    // Flags first, then the context's copies, then BERTH_CERT_PATH.
    let ctx_file = |name: &str| {
        let c = ctx_tls.as_ref()?;
        match name {
            "ca.pem" => c.ca.clone(),
            "cert.pem" => c.cert.clone(),
            _ => c.key.clone(),
        }
    };
    let file = |given: &Option<std::path::PathBuf>, name: &str| {
        given
            .clone()
            .or_else(|| ctx_file(name))
            .unwrap_or_else(|| cert_dir.join(name))
    };
    let read = |p: std::path::PathBuf, what: &str| {
        std::fs::read(&p).map_err(|e| format!("could not read {what} {}: {e}", p.display()))
    };
    let mut tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(read(
            file(&cli.tlscacert, "ca.pem"),
            "CA certificate",
        )?),
    );
    // The client certificate is what the daemon checks; without --tlsverify
    // (plain --tls) it is still sent when the files are there.
    let (cert, key) = (file(&cli.tlscert, "cert.pem"), file(&cli.tlskey, "key.pem"));
    if cli.tlsverify || cli.tlscert.is_some() || cli.tlskey.is_some() || cert.exists() {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            read(cert, "certificate")?,
            read(key, "key")?,
        ));
    }
    Ok(Target::Tcp(addr, Some(tls)))
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Run(_) => "run",
        Command::Create(_) => "create",
        Command::Start(_) => "start",
        Command::Stop(_) => "stop",
        Command::Kill(_) => "kill",
        Command::Rm(_) => "rm",
        Command::Ps(_) => "ps",
        Command::Logs(_) => "logs",
        Command::Wait(_) => "wait",
        Command::Inspect(_) => "inspect",
        Command::Images(_) => "images",
        Command::Import(_) => "import",
        Command::Tag(_) => "tag",
        Command::Rmi(_) => "rmi",
        Command::Pull(_) => "pull",
        Command::Push(_) => "push",
        Command::Login(_) => "login",
        Command::Logout(_) => "logout",
        Command::Search(_) => "search",
        Command::Save(_) => "save",
        Command::Load(_) => "load",
        Command::History(_) => "history",
        Command::System(_) => "system",
        Command::Volume(_) => "volume",
        Command::Network(_) => "network",
        Command::Port(_) => "port",
        Command::Context(_) => "context",
        Command::Version => "version",
        Command::Info(_) => "info",
        Command::Events(_) => "events",
        Command::Restart(_) => "restart",
        Command::Rename(_) => "rename",
        Command::Cp(_) => "cp",
        Command::Diff(_) => "diff",
        Command::Export(_) => "export",
        Command::Commit(_) => "commit",
        Command::Attach(_) => "attach",
        Command::Exec(_) => "exec",
        Command::Pause(_) => "pause",
        Command::Unpause(_) => "unpause",
        Command::Top(_) => "top",
        Command::Stats(_) => "stats",
        Command::Update(_) => "update",
        Command::Image(_) => "image",
        Command::Container(_) => "container",
    }
}

async fn dispatch(ctx: &Ctx, command: Command) -> i32 {
    use cmd::inspect::Kind;
    use cmd::{containers, images, inspect, system};
    match command {
        Command::Run(a) | Command::Container(ContainerCommand::Run(a)) => {
            containers::run(ctx, a, false).await
        }
        Command::Create(a) | Command::Container(ContainerCommand::Create(a)) => {
            containers::run(ctx, a, true).await
        }
        Command::Start(a) | Command::Container(ContainerCommand::Start(a)) => {
            containers::start(ctx, a).await
        }
        Command::Stop(a) | Command::Container(ContainerCommand::Stop(a)) => {
            containers::stop(ctx, a).await
        }
        Command::Kill(a) | Command::Container(ContainerCommand::Kill(a)) => {
            containers::kill(ctx, a).await
        }
        Command::Rm(a) | Command::Container(ContainerCommand::Rm(a)) => {
            containers::rm(ctx, a).await
        }
        Command::Ps(a) | Command::Container(ContainerCommand::Ls(a)) => {
            containers::ps(ctx, a).await
        }
        Command::Logs(a) | Command::Container(ContainerCommand::Logs(a)) => {
            containers::logs(ctx, a).await
        }
        Command::Wait(a) | Command::Container(ContainerCommand::Wait(a)) => {
            containers::wait(ctx, a).await
        }
        Command::Container(ContainerCommand::Inspect(a)) => {
            inspect::run(ctx, &a.names, a.format.as_deref(), Some(Kind::Container)).await
        }
        Command::Inspect(a) => {
            let kind = match a.kind.as_deref() {
                None | Some("") => None,
                Some("container") => Some(Kind::Container),
                Some("image") => Some(Kind::Image),
                Some(other) => {
                    eprint_err(&format!("\"{other}\" is not a valid value for --type"));
                    return 1;
                }
            };
            inspect::run(ctx, &a.names, a.format.as_deref(), kind).await
        }
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => images::list(ctx, a).await,
        Command::Import(a) | Command::Image(ImageCommand::Import(a)) => {
            images::import(ctx, a).await
        }
        Command::Image(ImageCommand::Inspect(a)) => images::inspect(ctx, a).await,
        Command::Tag(a) | Command::Image(ImageCommand::Tag(a)) => images::tag(ctx, a).await,
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => images::rmi(ctx, a).await,
        Command::Version => system::version(ctx).await,
        Command::Info(a) => system::info(ctx, a).await,
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => {
            cmd::registry::pull(ctx, a).await
        }
        Command::Push(a) | Command::Image(ImageCommand::Push(a)) => {
            cmd::registry::push(ctx, a).await
        }
        Command::Login(a) => cmd::registry::login(ctx, a).await,
        Command::Logout(a) => cmd::registry::logout(a).await,
        Command::Search(a) => cmd::registry::search(ctx, a).await,
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => {
            cmd::imagestore::save(ctx, a).await
        }
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => {
            cmd::imagestore::load(ctx, a).await
        }
        Command::History(a) | Command::Image(ImageCommand::History(a)) => {
            cmd::imagestore::history(ctx, a).await
        }
        Command::Image(ImageCommand::Prune(a)) => cmd::imagestore::prune_images(ctx, a).await,
        Command::System(SystemCommand::Prune(a)) => cmd::imagestore::prune_system(ctx, a).await,
        Command::System(SystemCommand::Df(a)) => cmd::imagestore::df(ctx, a).await,
        Command::Volume(c) => cmd::volumes::run(ctx, c).await,
        Command::Network(c) => cmd::networks::run(ctx, c).await,
        Command::Port(a) => cmd::networks::port(ctx, a).await,
        Command::Context(c) => cmd::context::run(c),
        Command::Update(a) | Command::Container(ContainerCommand::Update(a)) => {
            cmd::containers::update(ctx, a).await
        }
        Command::Events(a) => cmd::lifecycle::events(ctx, a).await,
        Command::Restart(a) | Command::Container(ContainerCommand::Restart(a)) => {
            cmd::lifecycle::restart(ctx, a).await
        }
        Command::Rename(a) | Command::Container(ContainerCommand::Rename(a)) => {
            cmd::lifecycle::rename(ctx, a).await
        }
        Command::Container(ContainerCommand::Prune(a)) => cmd::lifecycle::prune(ctx, a).await,
        Command::Cp(a) | Command::Container(ContainerCommand::Cp(a)) => {
            cmd::files::cp(ctx, a).await
        }
        Command::Diff(a) | Command::Container(ContainerCommand::Diff(a)) => {
            cmd::files::diff(ctx, a).await
        }
        Command::Export(a) | Command::Container(ContainerCommand::Export(a)) => {
            cmd::files::export(ctx, a).await
        }
        Command::Commit(a) | Command::Container(ContainerCommand::Commit(a)) => {
            cmd::files::commit(ctx, a).await
        }
        Command::Attach(a) | Command::Container(ContainerCommand::Attach(a)) => {
            cmd::processes::attach(ctx, a).await
        }
        Command::Exec(a) | Command::Container(ContainerCommand::Exec(a)) => {
            cmd::processes::exec(ctx, a).await
        }
        Command::Pause(a) | Command::Container(ContainerCommand::Pause(a)) => {
            cmd::processes::pause(ctx, a).await
        }
        Command::Unpause(a) | Command::Container(ContainerCommand::Unpause(a)) => {
            cmd::processes::unpause(ctx, a).await
        }
        Command::Top(a) | Command::Container(ContainerCommand::Top(a)) => {
            cmd::processes::top(ctx, a).await
        }
        Command::Stats(a) | Command::Container(ContainerCommand::Stats(a)) => {
            cmd::processes::stats(ctx, a).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_paths() {
        let a = strings(&["berth", "-H", "unix:///x", "run", "--bogus"]);
        assert_eq!(command_path(&a), ["run"]);
        let a = strings(&["berth", "container", "create", "x"]);
        assert!(is_run_or_create(&command_path(&a)));
        let a = strings(&["berth", "--namespace", "run", "ps"]);
        assert_eq!(command_path(&a), ["ps"]);
    }

    #[test]
    fn unknown_flags_read_like_docker() {
        let args = strings(&["berth", "ps", "--bogus"]);
        let e = Cli::try_parse_from(&args).unwrap_err();
        assert_eq!(
            docker_flag_error(&e, &command_path(&args)).unwrap(),
            "unknown flag: --bogus\nSee 'berth ps --help'."
        );
        let args = strings(&["berth", "container", "ls", "--bogus=1"]);
        let e = Cli::try_parse_from(&args).unwrap_err();
        assert_eq!(
            docker_flag_error(&e, &command_path(&args)).unwrap(),
            "unknown flag: --bogus\nSee 'berth container ls --help'."
        );
    }

    #[test]
    fn usage_codes() {
        assert_eq!(usage_exit_code(ErrorKind::UnknownArgument, true), 125);
        assert_eq!(
            usage_exit_code(ErrorKind::MissingRequiredArgument, true),
            125
        );
        assert_eq!(usage_exit_code(ErrorKind::UnknownArgument, false), 125);
        assert_eq!(
            usage_exit_code(ErrorKind::MissingRequiredArgument, false),
            1
        );
        assert_eq!(usage_exit_code(ErrorKind::DisplayHelp, true), 0);
    }

    #[test]
    fn row_formats() {
        assert!(matches!(
            output_format(None, false),
            Ok(OutputFormat::Default)
        ));
        assert!(matches!(output_format(None, true), Ok(OutputFormat::Quiet)));
        assert!(matches!(
            output_format(Some("json"), false),
            Ok(OutputFormat::Json)
        ));
        match output_format(Some("table {{.ID}}\\t{{.Names}}"), false) {
            Ok(OutputFormat::Table(t)) => assert_eq!(t, "{{.ID}}\t{{.Names}}"),
            _ => panic!("expected a table"),
        }
    }
}
