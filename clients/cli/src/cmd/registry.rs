//! Registry commands: pull, push, login, logout, search.

use std::io::{IsTerminal, Read, Write};

use berth_common::reference;
use berth_proto::gateway::v1::{
    LoginRequest, Progress, PullRequest, PushRequest, RegistryAuth, SearchRequest,
};
use clap::Args;
use tonic::Streaming;

use crate::auth;
use crate::ctx::Ctx;
use crate::eprint_err;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_sizes_and_bars() {
        assert_eq!(human(512), "512B");
        assert_eq!(human(228_400), "228.4kB");
        assert_eq!(human(2_200_000), "2.2MB");
        assert_eq!(human(123_456_789), "123.5MB");
        assert_eq!(human(1_000_000), "1MB");
        let b = bar(500, 1000);
        assert!(b.starts_with("[=========================>"), "{b}");
        assert!(b.ends_with("]  500B/1kB"), "{b}");
        assert_eq!(bar(1000, 1000).matches('=').count(), 50);
    }

    #[test]
    fn tags_are_not_ports() {
        assert!(!names_tag_or_digest("busybox"));
        assert!(!names_tag_or_digest("localhost:5000/busybox"));
        assert!(names_tag_or_digest("localhost:5000/busybox:1"));
        assert!(names_tag_or_digest("busybox@sha256:abc"));
    }
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Download all tagged images in the repository
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    /// Set platform if server is multi-platform capable
    #[arg(long, value_name = "string")]
    pub platform: Option<String>,
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(value_name = "NAME[:TAG|@DIGEST]")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(value_name = "NAME[:TAG]")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Username
    #[arg(short = 'u', long, value_name = "string")]
    pub username: Option<String>,
    /// Password
    #[arg(short = 'p', long, value_name = "string")]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter", value_name = "filter")]
    pub filter: Vec<String>,
    /// Pretty-print search using a Go template
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Max number of search results
    #[arg(long, value_name = "int")]
    pub limit: Option<i32>,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    #[arg(value_name = "TERM")]
    pub term: String,
}

/// Stored credentials for the registry of `name`, or an error message.
fn auth_for_domain(domain: &str) -> Result<Option<RegistryAuth>, String> {
    auth::lookup(domain)
}

/// Whether the user wrote a tag or digest (`host:5000/repo` has neither).
fn names_tag_or_digest(name: &str) -> bool {
    name.contains('@')
        || name
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
}

/// The parsed reference and the stored credentials for its registry;
/// None (after saying why) when either fails.
fn target(name: &str) -> Option<(reference::Reference, Option<RegistryAuth>)> {
    let r = match reference::parse(name) {
        Ok(r) => r,
        Err(e) => {
            eprint_err(&format!("invalid reference format: {e}"));
            return None;
        }
    };
    match auth_for_domain(r.domain()) {
        Ok(a) => Some((r, a)),
        Err(e) => {
            eprint_err(&e);
            None
        }
    }
}

/// Docker's size units (decimal, "kB", four significant digits).
fn human(n: i64) -> String {
    crate::render::human_size4(n)
}

/// Docker's progress bar: `[=====>      ]  1.2MB/3.4MB`.
fn bar(current: i64, total: i64) -> String {
    if total <= 0 {
        return human(current);
    }
    let width = 50usize;
    let done = ((current as f64 / total as f64) * width as f64).min(width as f64) as usize;
    let mut b = String::from("[");
    b.push_str(&"=".repeat(done));
    if done < width {
        b.push('>');
        b.push_str(&" ".repeat(width - done - 1));
    }
    format!("{b}]  {}/{}", human(current), human(total))
}

/// Shows progress on a terminal the way docker does: one line per layer,
/// rewritten in place as it moves on.
async fn follow_tty(
    stream: &mut Streaming<Progress>,
    out: &mut dyn Write,
) -> Result<(), tonic::Status> {
    let mut ids: Vec<String> = Vec::new();
    while let Some(p) = stream.message().await? {
        if p.id.is_empty() {
            if !p.digest.is_empty() && p.status.starts_with("Status:") {
                let _ = writeln!(out, "Digest: {}", p.digest);
            }
            let _ = writeln!(out, "{}", p.status);
            ids.clear();
            continue;
        }
        let text = if p.current > 0 {
            format!("{}: {} {}", p.id, p.status, bar(p.current, p.total))
        } else {
            format!("{}: {}", p.id, p.status)
        };
        match ids.iter().position(|i| *i == p.id) {
            Some(pos) => {
                let up = ids.len() - pos;
                let _ = write!(out, "\x1b[{up}A\r\x1b[2K{text}\r\x1b[{up}B");
            }
            None => {
                ids.push(p.id.clone());
                let _ = writeln!(out, "{text}");
            }
        }
        let _ = out.flush();
    }
    Ok(())
}

/// Prints progress messages as docker does without a terminal: one line
/// per change of a layer's state (byte counts are not repeated).
async fn follow(
    stream: &mut Streaming<Progress>,
    quiet: bool,
    to_stderr: bool,
) -> Result<(), tonic::Status> {
    let mut out: Box<dyn Write> = if to_stderr {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let tty = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    if tty && !quiet {
        return follow_tty(stream, &mut *out).await;
    }
    while let Some(p) = stream.message().await? {
        if quiet
            || (p.current > 0
                && matches!(p.status.as_str(), "Downloading" | "Pushing" | "Extracting"))
        {
            continue;
        }
        if !p.digest.is_empty() && p.status.starts_with("Status:") {
            let _ = writeln!(out, "Digest: {}", p.digest);
        }
        let _ = if p.id.is_empty() {
            writeln!(out, "{}", p.status)
        } else {
            writeln!(out, "{}: {}", p.id, p.status)
        };
    }
    Ok(())
}

/// Pulls `name`; prints docker's lines unless `quiet` (on stderr with
/// `to_stderr`, as `run` does). Returns the exit code.
pub async fn pull_image(
    ctx: &Ctx,
    name: &str,
    platform: &str,
    quiet: bool,
    to_stderr: bool,
) -> i32 {
    let Some((r, auth)) = target(name) else {
        return 1;
    };
    let say = |line: &str| {
        if to_stderr {
            eprint_err(line);
        } else {
            println!("{line}");
        }
    };
    if !quiet && !names_tag_or_digest(name) && !to_stderr {
        say("Using default tag: latest");
    }
    let req = PullRequest {
        reference: name.to_string(),
        platform: platform.to_string(),
        auth,
        all_tags: false,
    };
    let result = async {
        let mut stream = ctx.images().pull(ctx.req(req)).await?.into_inner();
        follow(&mut stream, quiet, to_stderr).await
    }
    .await;
    match result {
        Ok(()) => {
            if !to_stderr {
                say(&r.full());
            }
            0
        }
        Err(st) => {
            eprint_err(&ctx.describe(&st));
            1
        }
    }
}

/// `berth pull`.
pub async fn pull(ctx: &Ctx, args: PullArgs) -> i32 {
    if args.all_tags {
        return pull_all_tags(ctx, &args).await;
    }
    pull_image(
        ctx,
        &args.name,
        args.platform.as_deref().unwrap_or(""),
        args.quiet,
        false,
    )
    .await
}

async fn pull_all_tags(ctx: &Ctx, args: &PullArgs) -> i32 {
    let Some((r, auth)) = target(&args.name) else {
        return 1;
    };
    let req = PullRequest {
        reference: args.name.clone(),
        platform: args.platform.clone().unwrap_or_default(),
        auth,
        all_tags: true,
    };
    let result = async {
        let mut stream = ctx.images().pull(ctx.req(req)).await?.into_inner();
        follow(&mut stream, args.quiet, false).await
    }
    .await;
    match result {
        Ok(()) => {
            println!("{}", r.name());
            0
        }
        Err(st) => {
            eprint_err(&ctx.describe(&st));
            1
        }
    }
}

/// `berth push`.
pub async fn push(ctx: &Ctx, args: PushArgs) -> i32 {
    let Some((r, auth)) = target(&args.name) else {
        return 1;
    };
    if !args.quiet && !names_tag_or_digest(&args.name) {
        println!("Using default tag: latest");
    }
    let req = PushRequest {
        reference: args.name.clone(),
        auth,
    };
    let result = async {
        let mut stream = ctx.images().push(ctx.req(req)).await?.into_inner();
        follow(&mut stream, args.quiet, false).await
    }
    .await;
    match result {
        Ok(()) => {
            if args.quiet {
                println!("{}", r.full());
            }
            0
        }
        Err(st) => {
            eprint_err(&ctx.describe(&st));
            1
        }
    }
}

fn prompt(label: &str, secret: bool) -> Result<String, String> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{label}");
    let _ = err.flush();
    let tty = std::io::stdin().is_terminal();
    let saved = if secret && tty {
        let t = nix::sys::termios::tcgetattr(std::io::stdin()).ok();
        if let Some(t) = &t {
            let mut quiet = t.clone();
            quiet
                .local_flags
                .remove(nix::sys::termios::LocalFlags::ECHO);
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                &quiet,
            );
        }
        t
    } else {
        None
    };
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    if let Some(t) = saved {
        let _ =
            nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &t);
        let _ = writeln!(err);
    }
    read.map_err(|e| e.to_string())?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `berth login`.
pub async fn login(ctx: &Ctx, args: LoginArgs) -> i32 {
    let server = args.server.clone().unwrap_or_default();
    let domain = if server.is_empty() {
        "docker.io".to_string()
    } else {
        server.clone()
    };
    if args.password.is_some() && args.password_stdin {
        eprint_err("--password and --password-stdin are mutually exclusive");
        return 1;
    }
    if args.password_stdin && args.username.is_none() {
        eprint_err("Must provide --username with --password-stdin");
        return 1;
    }
    if args.password.is_some() {
        eprint_err("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let username = match &args.username {
        Some(u) => u.clone(),
        None => match prompt("Username: ", false) {
            Ok(u) => u,
            Err(e) => {
                eprint_err(&format!("Error: {e}"));
                return 1;
            }
        },
    };
    if username.is_empty() {
        eprint_err("Error: Username is required");
        return 1;
    }
    let password = if args.password_stdin {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut s) {
            eprint_err(&format!("Error: {e}"));
            return 1;
        }
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = &args.password {
        p.clone()
    } else {
        match prompt("Password: ", true) {
            Ok(p) => p,
            Err(e) => {
                eprint_err(&format!("Error: {e}"));
                return 1;
            }
        }
    };
    if password.is_empty() {
        eprint_err("Error: Password is required");
        return 1;
    }
    let auth = RegistryAuth {
        username,
        password,
        identity_token: String::new(),
    };
    let resp = match ctx
        .images()
        .login(ctx.req(LoginRequest {
            server: server.clone(),
            auth: Some(auth.clone()),
        }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(st) => {
            eprint_err(&ctx.describe(&st));
            return 1;
        }
    };
    let to_store = if resp.identity_token.is_empty() {
        auth
    } else {
        RegistryAuth {
            username: auth.username,
            password: String::new(),
            identity_token: resp.identity_token,
        }
    };
    match auth::store(&domain, &to_store) {
        Ok(place) => {
            if !place.contains("credential helper") {
                eprint_err(&format!(
                    "WARNING! Your password will be stored unencrypted in {place}."
                ));
            }
            println!("{}", resp.status);
            0
        }
        Err(e) => {
            eprint_err(&format!("Error saving credentials: {e}"));
            1
        }
    }
}

/// `berth logout`.
pub async fn logout(args: LogoutArgs) -> i32 {
    let server = args.server.unwrap_or_default();
    let key = auth::server_key(&server);
    match auth::erase(&server) {
        Ok(true) => {
            println!("Removing login credentials for {key}");
            0
        }
        Ok(false) => {
            println!("Not logged in to {key}");
            0
        }
        Err(e) => {
            eprint_err(&format!("Error: {e}"));
            1
        }
    }
}

/// `berth search`.
pub async fn search(ctx: &Ctx, args: SearchArgs) -> i32 {
    let mut min_stars = 0i64;
    let mut official: Option<bool> = None;
    for f in &args.filter {
        match f.split_once('=') {
            Some(("stars", v)) => match v.parse() {
                Ok(n) => min_stars = n,
                Err(_) => {
                    eprint_err(&format!("Error: invalid filter 'stars={v}'"));
                    return 1;
                }
            },
            Some(("is-official", v)) => match v {
                "true" => official = Some(true),
                "false" => official = Some(false),
                _ => {
                    eprint_err(&format!("Error: invalid filter 'is-official={v}'"));
                    return 1;
                }
            },
            _ => {
                eprint_err(&format!("Error: invalid filter '{f}'"));
                return 1;
            }
        }
    }
    let domain = match args.term.split_once('/') {
        Some((h, _)) if h.contains('.') || h.contains(':') || h == "localhost" => h.to_string(),
        _ => "docker.io".to_string(),
    };
    let auth = match auth_for_domain(&domain) {
        Ok(a) => a,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    let resp = match ctx
        .images()
        .search(ctx.req(SearchRequest {
            term: args.term.clone(),
            limit: args.limit.unwrap_or(0),
            auth,
        }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(st) => {
            eprint_err(&ctx.describe(&st));
            return 1;
        }
    };
    let rows: Vec<_> = resp
        .results
        .into_iter()
        .filter(|r| r.stars >= min_stars)
        .filter(|r| official.is_none_or(|o| r.official == o))
        .collect();
    let format = match crate::output_format(args.format.as_deref(), false) {
        Ok(f) => f,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    let docs: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut desc = r.description.replace('\n', " ");
            if !args.no_trunc && args.format.is_none() && desc.chars().count() > 45 {
                desc = desc.chars().take(44).collect::<String>() + "…";
            }
            serde_json::json!({
                "Name": r.name,
                "Description": desc,
                "StarCount": r.stars,
                "IsOfficial": if r.official { "[OK]" } else { "" },
            })
        })
        .collect();
    let header = serde_json::json!({
        "Name": "NAME", "Description": "DESCRIPTION", "StarCount": "STARS", "IsOfficial": "OFFICIAL",
    });
    let default = "table {{.Name}}\t{{.Description}}\t{{.StarCount}}\t{{.IsOfficial}}";
    crate::print_rows(format, default, "{{.Name}}", &header, &docs)
}
