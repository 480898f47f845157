//! Container commands: create, run, start, stop, kill, rm, ps, logs, wait.

use std::collections::HashMap;
use std::io::Write;

use berth_proto::gateway::v1::{
    attach_response, AttachRequest, ContainerRef, CreateContainerRequest, KillContainerRequest,
    ListContainersRequest, LogsRequest, RemoveContainerRequest, Resources, StopContainerRequest,
    Stream, StringList, WaitContainerRequest,
};
use chrono::Utc;
use serde_json::json;

use crate::cli::{
    KillArgs, LimitArgs, LogsArgs, PsArgs, RmArgs, RunArgs, StartArgs, StopArgs, WaitArgs,
};
use crate::ctx::{exit_code_of, is_connect_error, Ctx};
use crate::render::{ago_unix, ps_command, ps_status, short_id, StateView};
use crate::{eprint_err, output_format};

/// Docker's `reportError` for run/create: "berth: <msg>." plus a hint.
fn report(cmd: &str, msg: &str, with_help: bool) {
    let mut s = format!("{}.", msg.trim_end_matches('.'));
    if with_help {
        s.push_str(&format!("\nSee 'berth {cmd} --help'."));
    }
    eprint_err(&format!("berth: {s}"));
}

/// `-e KEY=VAL` as given; `-e KEY` takes KEY's value from our environment,
/// or is dropped when it is unset (as docker does).
pub fn resolve_env(
    entries: &[String],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for e in entries {
        let (key, has_value) = match e.split_once('=') {
            Some((k, _)) => (k, true),
            None => (e.as_str(), false),
        };
        if key.is_empty() {
            return Err(format!("invalid environment variable: {e}"));
        }
        if has_value {
            out.push(e.clone());
        } else if let Some(v) = lookup(key) {
            out.push(format!("{key}={v}"));
        }
    }
    Ok(out)
}

/// `-l KEY=VAL` or `-l KEY` (empty value).
pub fn parse_labels(entries: &[String]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for l in entries {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            return Err(format!("invalid label: {l}"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// pflag's error for a bad flag value: `invalid argument "V" for "F" flag: E`.
fn flag_error(value: &str, flag: &str, e: &str) -> String {
    format!("invalid argument {value:?} for {flag:?} flag: {e}")
}

/// Go's strconv.ParseInt for an int flag, with its error text.
fn parse_int<T: std::str::FromStr>(value: &str, flag: &str) -> Result<T, String> {
    value.parse::<T>().map_err(|_| {
        let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
        let why = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            "value out of range"
        } else {
            "invalid syntax"
        };
        flag_error(
            value,
            flag,
            &format!("strconv.ParseInt: parsing {value:?}: {why}"),
        )
    })
}

/// A size flag (units.RAMInBytes); 0 when not given.
fn size_flag(v: &Option<String>, flag: &str) -> Result<i64, String> {
    match v.as_deref() {
        None => Ok(0),
        Some(s) => berth_common::units::ram_in_bytes(s).map_err(|e| flag_error(s, flag, &e)),
    }
}

/// The limits `run`, `create` and `update` share, parsed like docker's
/// flags (sizes with units.RAMInBytes, `--memory-swap -1`, `--cpus` as a
/// decimal). The limits themselves are checked by the gateway, with
/// docker's messages.
pub fn limit_flags(l: &LimitArgs) -> Result<Resources, String> {
    let memory = size_flag(&l.memory, "-m, --memory")?;
    let memory_swap = match l.memory_swap.as_deref() {
        Some("-1") => -1,
        _ => size_flag(&l.memory_swap, "--memory-swap")?,
    };
    let int = |v: &Option<String>, flag: &str| -> Result<i64, String> {
        v.as_deref().map_or(Ok(0), |s| parse_int::<i64>(s, flag))
    };
    let nano_cpus = match l.cpus.as_deref() {
        None => 0,
        Some(s) => {
            let x: f64 = s
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite())
                .ok_or_else(|| {
                    flag_error(
                        s,
                        "--cpus",
                        &format!("failed to parse {s} as a rational number"),
                    )
                })?;
            (x * 1e9).round() as i64
        }
    };
    let blkio_weight = match l.blkio_weight.as_deref() {
        None => 0,
        Some(s) => s.parse::<u16>().map_err(|_| {
            flag_error(
                s,
                "--blkio-weight",
                &format!("strconv.ParseUint: parsing {s:?}: invalid syntax"),
            )
        })? as u32,
    };
    Ok(Resources {
        memory,
        memory_swap,
        memory_reservation: size_flag(&l.memory_reservation, "--memory-reservation")?,
        kernel_memory: size_flag(&l.kernel_memory, "--kernel-memory")?,
        nano_cpus,
        cpu_period: int(&l.cpu_period, "--cpu-period")?,
        cpu_quota: int(&l.cpu_quota, "--cpu-quota")?,
        cpu_shares: int(&l.cpu_shares, "-c, --cpu-shares")?,
        cpuset_cpus: l.cpuset_cpus.clone().unwrap_or_default(),
        cpuset_mems: l.cpuset_mems.clone().unwrap_or_default(),
        pids_limit: match l.pids_limit.as_deref() {
            None => None,
            Some(s) => Some(parse_int::<i64>(s, "--pids-limit")?),
        },
        blkio_weight,
        ..Default::default()
    })
}

/// `PATH:VALUE` of the per-device flags; docker's messages.
fn device_flag(spec: &str, flag: &str, sized: bool) -> Result<(String, u64), String> {
    let bad = |why: String| flag_error(spec, flag, &why);
    let Some((path, v)) = spec.rsplit_once(':') else {
        return Err(bad(format!("bad format: {spec}")));
    };
    if !path.starts_with("/dev/") {
        return Err(bad(format!("bad format for device path: {spec}")));
    }
    let n = if sized {
        berth_common::units::ram_in_bytes(v)
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| n as u64)
    } else {
        v.parse::<u64>().ok()
    };
    let unit = if sized {
        "[<unit>]. Number must be a positive integer. Unit is optional and can be kb, mb, or gb"
    } else {
        ". Number must be a positive integer"
    };
    n.map(|n| (path.to_string(), n)).ok_or_else(|| {
        bad(format!(
            "invalid rate for device: {spec}. The correct format is <device-path>:<number>{unit}"
        ))
    })
}

/// `--ulimit NAME=SOFT[:HARD]` (go-units ParseUlimit).
fn ulimit_flag(spec: &str) -> Result<berth_proto::gateway::v1::Ulimit, String> {
    let bad = |why: String| flag_error(spec, "--ulimit", &why);
    let Some((name, v)) = spec.split_once('=') else {
        return Err(bad(format!("invalid ulimit argument: {spec}")));
    };
    let (soft, hard) = v.split_once(':').unwrap_or((v, v));
    let num = |x: &str, which: &str| {
        x.parse::<i64>()
            .map_err(|_| bad(format!("invalid ulimit {which} value {x}")))
    };
    Ok(berth_proto::gateway::v1::Ulimit {
        name: name.to_string(),
        soft: num(soft, "soft")?,
        hard: num(hard, "hard")?,
    })
}

/// All of `run`/`create`'s resource flags: the shared limits, memory
/// swappiness, the OOM flags, per-device block I/O and ulimits. Returns the
/// resources (None when no flag was given) and the OOM score.
pub fn resource_flags(args: &RunArgs) -> Result<(Option<Resources>, i32), String> {
    let mut r = limit_flags(&args.limits)?;
    r.memory_swappiness = match args.memory_swappiness.as_deref() {
        None => None,
        Some(v) => Some(parse_int::<i64>(v, "--memory-swappiness")?).filter(|s| *s != -1),
    };
    r.oom_kill_disable = args.oom_kill_disable.then_some(true);
    for d in &args.blkio_weight_device {
        let (path, w) = device_flag(d, "--blkio-weight-device", false)?;
        r.blkio_weight_device
            .push(berth_proto::gateway::v1::WeightDevice {
                path,
                weight: w as u32,
            });
    }
    for (list, flag, sized, out) in [
        (
            &args.device_read_bps,
            "--device-read-bps",
            true,
            &mut r.device_read_bps,
        ),
        (
            &args.device_write_bps,
            "--device-write-bps",
            true,
            &mut r.device_write_bps,
        ),
        (
            &args.device_read_iops,
            "--device-read-iops",
            false,
            &mut r.device_read_iops,
        ),
        (
            &args.device_write_iops,
            "--device-write-iops",
            false,
            &mut r.device_write_iops,
        ),
    ] {
        for d in list {
            let (path, rate) = device_flag(d, flag, sized)?;
            out.push(berth_proto::gateway::v1::ThrottleDevice { path, rate });
        }
    }
    for u in &args.ulimit {
        r.ulimits.push(ulimit_flag(u)?);
    }
    let oom_score_adj = match args.oom_score_adj.as_deref() {
        None => 0,
        Some(v) => parse_int::<i32>(v, "--oom-score-adj")?,
    };
    let any = r != Resources::default();
    Ok((any.then_some(r), oom_score_adj))
}

/// `berth update`.
pub async fn update(ctx: &Ctx, args: crate::cli::UpdateArgs) -> i32 {
    let resources = match limit_flags(&args.limits) {
        Ok(r) => r,
        Err(e) => {
            eprint_err(&format!("berth: {e}\nSee 'berth update --help'."));
            return 125;
        }
    };
    if resources == Resources::default() && args.restart.is_none() {
        eprint_err("You must provide one or more flags when using this command.");
        return 1;
    }
    let mut failed = false;
    for c in &args.containers {
        let req = berth_proto::gateway::v1::UpdateContainerRequest {
            id: c.clone(),
            resources: Some(resources.clone()),
            restart_policy: args.restart.clone().unwrap_or_default(),
        };
        match ctx.containers().update(ctx.req(req)).await {
            Ok(r) => {
                for w in r.into_inner().warnings {
                    eprint_err(&format!("WARNING: {w}"));
                }
                crate::outln(c);
            }
            Err(s) => {
                eprint_err(&ctx.describe(&s));
                failed = true;
            }
        }
    }
    i32::from(failed)
}

/// The Create request for `run`/`create` flags.
pub fn create_request(args: &RunArgs) -> Result<CreateContainerRequest, String> {
    args.check()?;
    let (resources, oom_score_adj) = resource_flags(args)?;
    let mut env = Vec::new();
    for f in &args.env_file {
        env.extend(crate::cmd::lifecycle::read_env_file(f, |k| {
            std::env::var(k).ok()
        })?);
    }
    env.extend(resolve_env(&args.env, |k| std::env::var(k).ok())?);
    let restart = if args.restart.is_empty() {
        "no"
    } else {
        args.restart.as_str()
    };
    if args.rm && restart != "no" {
        return Err("Conflicting options: --restart and --rm".into());
    }
    let labels = parse_labels(&args.label)?;
    // KEY=VALUE; a bare KEY has an empty value (docker's ConvertKVStringsToMap).
    let log_opts = args
        .log_opt
        .iter()
        .map(|o| {
            let (k, v) = o.split_once('=').unwrap_or((o.as_str(), ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let cmd = (!args.command().is_empty()).then(|| StringList {
        values: args.command().to_vec(),
    });
    // `--entrypoint ""` clears the image's entrypoint.
    let entrypoint = args.entrypoint.as_ref().map(|e| StringList {
        values: if e.is_empty() {
            Vec::new()
        } else {
            vec![e.clone()]
        },
    });
    let mounts = args
        .mount
        .iter()
        .map(|m| crate::cmd::volumes::parse_mount(m))
        .collect::<Result<Vec<_>, _>>()?;
    // PATH[:OPTIONS]
    let tmpfs = args
        .tmpfs
        .iter()
        .map(|t| {
            let (p, o) = t.split_once(':').unwrap_or((t.as_str(), ""));
            (p.to_string(), o.to_string())
        })
        .collect();
    Ok(CreateContainerRequest {
        name: args.name.clone().unwrap_or_default(),
        image: args.image().to_string(),
        cmd,
        entrypoint,
        env,
        working_dir: args.workdir.clone().unwrap_or_default(),
        user: args.user.clone().unwrap_or_default(),
        hostname: args.hostname.clone().unwrap_or_default(),
        auto_remove: args.rm,
        network_mode: args.network.clone().unwrap_or_default(),
        labels,
        stop_signal: args.stop_signal.clone().unwrap_or_default(),
        stop_timeout: args.stop_timeout,
        restart_policy: restart.to_string(),
        read_only: args.read_only,
        init: args.init,
        log_opts,
        tty: args.tty,
        open_stdin: args.interactive,
        // docker run -i (not -d) closes stdin when the client's input ends.
        stdin_once: args.interactive && !args.detach,
        resources,
        oom_score_adj,
        binds: args.volume.clone(),
        mounts,
        tmpfs,
        volumes_from: args.volumes_from.clone(),
        publish: args.publish.clone(),
        publish_all: args.publish_all,
        expose: args.expose.clone(),
        ipv4_address: args.ip.clone().unwrap_or_default(),
        network_aliases: args.network_alias.clone(),
        dns: args.dns.clone(),
        dns_search: args.dns_search.clone(),
        dns_options: args.dns_option.clone(),
        extra_hosts: args.add_host.clone(),
        links: args.link.clone(),
    })
}

/// `berth create` (`create_only`) and `berth run`.
pub async fn run(ctx: &Ctx, args: RunArgs, create_only: bool) -> i32 {
    let cmd = if create_only { "create" } else { "run" };
    if let Err(e) = args.check() {
        eprint_err(&format!("{e}\nSee 'berth {cmd} --help'."));
        return 125;
    }
    // Flag values are usage errors, reported as docker's flag parser does.
    if let Err(e) = resource_flags(&args) {
        eprint_err(&format!("berth: {e}\nSee 'berth {cmd} --help'."));
        return 125;
    }
    let req = match create_request(&args) {
        Ok(r) => r,
        Err(e) => {
            report(cmd, &e, true);
            return 125;
        }
    };
    let platform = args.platform.clone().unwrap_or_default();
    if args.pull == "always"
        && crate::cmd::registry::pull_image(ctx, args.image(), &platform, false, true).await != 0
    {
        return 125;
    }
    let resp = match ctx.containers().create(ctx.req(req.clone())).await {
        Ok(r) => r.into_inner(),
        // docker run/create pull a missing image (--pull=missing).
        Err(s)
            if s.code() == tonic::Code::NotFound
                && s.message().starts_with("No such image")
                && args.pull == "missing"
                && berth_common::reference::parse(args.image()).is_ok() =>
        {
            let shown = berth_common::reference::parse(args.image())
                .map(|r| r.familiar())
                .unwrap_or_default();
            eprint_err(&format!("Unable to find image '{shown}' locally"));
            if crate::cmd::registry::pull_image(ctx, args.image(), &platform, false, true).await
                != 0
            {
                return 125;
            }
            match ctx.containers().create(ctx.req(req)).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    report(cmd, &ctx.describe(&s), true);
                    return 125;
                }
            }
        }
        Err(s) => {
            report(cmd, &ctx.describe(&s), true);
            return 125;
        }
    };
    for w in &resp.warnings {
        eprint_err(&format!("WARNING: {w}"));
    }
    let id = resp.id;
    if create_only {
        crate::outln(&id);
        return 0;
    }
    if args.detach {
        if let Err(s) = ctx
            .containers()
            .start(ctx.req(ContainerRef { id: id.clone() }))
            .await
        {
            report(cmd, &ctx.describe(&s), false);
            return exit_code_of(&s).unwrap_or(125);
        }
        crate::outln(&id);
        return 0;
    }
    if args.interactive || args.tty {
        return crate::cmd::processes::session(
            ctx,
            crate::cmd::processes::Session {
                id,
                stdin: args.interactive,
                tty: args.tty,
                detach_keys: args.detach_keys.clone().unwrap_or_default(),
                start: true,
                run_style: true,
            },
        )
        .await;
    }
    attach_start_wait(ctx, &id, true).await
}

/// Opens Attach, waits for its headers, starts the container, copies its
/// output and returns its exit code (docker's foreground run / start -a).
/// `run_style`: errors as `berth: ...` with code 125, else as `start` does.
async fn attach_start_wait(ctx: &Ctx, id: &str, run_style: bool) -> i32 {
    let fail = |s: &tonic::Status| {
        if run_style {
            report("run", &ctx.describe(s), false);
            125
        } else {
            eprint_err(&ctx.describe(s));
            1
        }
    };
    let attach = ctx
        .containers()
        .attach(ctx.req(AttachRequest {
            id: id.to_string(),
            stdout: true,
            stderr: true,
        }))
        .await;
    let mut stream = match attach {
        Ok(r) => r.into_inner(),
        Err(s) => return fail(&s),
    };
    if let Err(s) = ctx
        .containers()
        .start(ctx.req(ContainerRef { id: id.to_string() }))
        .await
    {
        let code = fail(&s);
        return exit_code_of(&s).unwrap_or(code);
    }
    let proxy = spawn_signal_proxy(ctx.clone(), id.to_string());
    let code = loop {
        match stream.message().await {
            Ok(Some(msg)) => match msg.payload {
                Some(attach_response::Payload::Output(entry)) => write_entry(&entry, None),
                Some(attach_response::Payload::Exit(st)) => {
                    if !st.error.is_empty() {
                        eprint_err(&st.error);
                    }
                    break st.status_code as i32;
                }
                None => {}
            },
            // The stream ended without an exit status: ask Wait.
            Ok(None) => {
                let w = ctx
                    .containers()
                    .wait(ctx.req(WaitContainerRequest {
                        id: id.to_string(),
                        condition: String::new(),
                    }))
                    .await;
                match w {
                    Ok(r) => break r.into_inner().status_code as i32,
                    Err(s) => break fail(&s),
                }
            }
            Err(s) => break fail(&s),
        }
    };
    stop_signal_proxy(proxy).await;
    code
}

/// Stops the signal forwarders and waits until they are gone (with them
/// their hold on the command's span, which then ends before the trace is
/// flushed).
pub(crate) async fn stop_signal_proxy(proxy: Vec<tokio::task::JoinHandle<()>>) {
    for task in &proxy {
        task.abort();
    }
    for task in proxy {
        let _ = task.await;
    }
}

/// Forwards the signals a user sends to the CLI to the container, as
/// docker's `--sig-proxy` does.
pub(crate) fn spawn_signal_proxy(ctx: Ctx, id: String) -> Vec<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let kinds = [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::quit(), "SIGQUIT"),
        (SignalKind::user_defined1(), "SIGUSR1"),
        (SignalKind::user_defined2(), "SIGUSR2"),
    ];
    use tracing::Instrument;
    let mut tasks = Vec::new();
    for (kind, name) in kinds {
        let Ok(mut sig) = signal(kind) else { continue };
        let ctx = ctx.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(
            async move {
                while sig.recv().await.is_some() {
                    let req = ctx.req(KillContainerRequest {
                        id: id.clone(),
                        signal: name.to_string(),
                    });
                    if let Err(s) = ctx.containers().kill(req).await {
                        tracing::debug!("forwarding {name}: {}", s.message());
                    }
                }
            }
            .instrument(tracing::Span::current()),
        ));
    }
    tasks
}

/// Writes one output entry to our stdout or stderr, with an optional
/// timestamp prefix.
fn write_entry(entry: &berth_proto::gateway::v1::LogEntry, timestamp: Option<&str>) {
    let to_stderr = entry.stream == Stream::Stderr as i32;
    let write = |w: &mut dyn Write| {
        if let Some(t) = timestamp {
            let _ = w.write_all(t.as_bytes());
            let _ = w.write_all(b" ");
        }
        let _ = w.write_all(&entry.data);
        let _ = w.flush();
    };
    if to_stderr {
        write(&mut std::io::stderr().lock());
    } else {
        write(&mut std::io::stdout().lock());
    }
}

/// `berth start -a -i`: attach stdin (and the terminal) too.
async fn start_interactive(ctx: &Ctx, args: &StartArgs) -> i32 {
    let id = &args.containers[0];
    let doc = match ctx
        .containers()
        .inspect(ctx.req(ContainerRef { id: id.clone() }))
        .await
    {
        Ok(r) => r.into_inner().json,
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap_or_default();
    crate::cmd::processes::session(
        ctx,
        crate::cmd::processes::Session {
            id: v["Id"].as_str().unwrap_or(id).to_string(),
            stdin: v["Config"]["OpenStdin"] == true,
            tty: v["Config"]["Tty"] == true,
            detach_keys: args.detach_keys.clone().unwrap_or_default(),
            start: true,
            run_style: false,
        },
    )
    .await
}

/// `berth start`.
pub async fn start(ctx: &Ctx, args: StartArgs) -> i32 {
    if args.attach {
        if args.containers.len() > 1 {
            eprint_err("you cannot start and attach multiple containers at once");
            return 1;
        }
        if args.interactive {
            return start_interactive(ctx, &args).await;
        }
        return attach_start_wait(ctx, &args.containers[0], false).await;
    }
    let mut failed = Vec::new();
    for c in &args.containers {
        match ctx
            .containers()
            .start(ctx.req(ContainerRef { id: c.clone() }))
            .await
        {
            Ok(_) => crate::outln(c),
            Err(s) => {
                eprint_err(&ctx.describe(&s));
                if is_connect_error(&s) {
                    return 1;
                }
                failed.push(c.as_str());
            }
        }
    }
    if failed.is_empty() {
        0
    } else {
        eprint_err(&format!(
            "Error: failed to start containers: {}",
            failed.join(", ")
        ));
        1
    }
}

/// Runs `op` for each container, printing the argument on success and the
/// error otherwise; 1 if any failed (stop, kill, rm).
async fn for_each<F, Fut>(ctx: &Ctx, containers: &[String], op: F) -> i32
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut failed = false;
    for c in containers {
        match op(c.clone()).await {
            Ok(()) => crate::outln(c),
            Err(s) => {
                eprint_err(&ctx.describe(&s));
                failed = true;
                if is_connect_error(&s) {
                    break;
                }
            }
        }
    }
    i32::from(failed)
}

/// `berth stop`.
pub async fn stop(ctx: &Ctx, args: StopArgs) -> i32 {
    for_each(ctx, &args.containers, |id| async move {
        let req = ctx.req(StopContainerRequest {
            id,
            timeout: args.time,
        });
        ctx.containers().stop(req).await.map(|_| ())
    })
    .await
}

/// `berth kill`.
pub async fn kill(ctx: &Ctx, args: KillArgs) -> i32 {
    let signal = args.signal.clone().unwrap_or_default();
    for_each(ctx, &args.containers, |id| {
        let signal = signal.clone();
        async move {
            let req = ctx.req(KillContainerRequest { id, signal });
            ctx.containers().kill(req).await.map(|_| ())
        }
    })
    .await
}

/// `berth rm`.
pub async fn rm(ctx: &Ctx, args: RmArgs) -> i32 {
    for_each(ctx, &args.containers, |id| async move {
        let req = ctx.req(RemoveContainerRequest {
            id,
            force: args.force,
            volumes: args.volumes,
        });
        ctx.containers().remove(req).await.map(|_| ())
    })
    .await
}

/// `berth wait`.
pub async fn wait(ctx: &Ctx, args: WaitArgs) -> i32 {
    let mut failed = false;
    for c in &args.containers {
        let req = ctx.req(WaitContainerRequest {
            id: c.clone(),
            condition: String::new(),
        });
        match ctx.containers().wait(req).await {
            Ok(r) => crate::outln(&r.into_inner().status_code.to_string()),
            Err(s) => {
                eprint_err(&ctx.describe(&s));
                failed = true;
                if is_connect_error(&s) {
                    break;
                }
            }
        }
    }
    i32::from(failed)
}

/// `berth logs`.
pub async fn logs(ctx: &Ctx, args: LogsArgs) -> i32 {
    let tail = if args.tail == "all" {
        -1
    } else {
        match args.tail.parse::<i64>() {
            Ok(n) => n,
            Err(_) => {
                eprint_err(&format!(
                    "invalid value for \"tail\": {:?} is not a number or \"all\"",
                    args.tail
                ));
                return 1;
            }
        }
    };
    let req = ctx.req(LogsRequest {
        id: args.container.clone(),
        follow: args.follow,
        stdout: true,
        stderr: true,
        tail,
        since: args.since.clone().unwrap_or_default(),
        until: args.until.clone().unwrap_or_default(),
    });
    let mut stream = match ctx.containers().logs(req).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(entry)) => {
                let ts = args.timestamps.then_some(entry.time.as_str());
                write_entry(&entry, ts);
            }
            Ok(None) => return 0,
            Err(s) => {
                eprint_err(&ctx.describe(&s));
                return 1;
            }
        }
    }
}

/// `ps --filter KEY=VALUE`: values of one key are alternatives, different
/// keys must all match (docker's rule).
#[derive(Debug, Default)]
pub struct PsFilter {
    terms: Vec<(String, Vec<String>)>,
}

impl PsFilter {
    const KEYS: [&'static str; 8] = [
        "id", "name", "status", "label", "ancestor", "exited", "before", "since",
    ];

    pub fn parse(specs: &[String]) -> Result<PsFilter, String> {
        let mut f = PsFilter::default();
        for spec in specs {
            let Some((k, v)) = spec.split_once('=') else {
                return Err(format!(
                    "bad format of filter (expected name=value): {spec}"
                ));
            };
            let k = k.trim().to_lowercase();
            if !Self::KEYS.contains(&k.as_str()) {
                return Err(format!("invalid filter '{k}'"));
            }
            if k == "exited" && v.parse::<i64>().is_err() {
                return Err(format!("invalid exit code {v:?}"));
            }
            match f.terms.iter_mut().find(|(key, _)| *key == k) {
                Some((_, vals)) => vals.push(v.to_string()),
                None => f.terms.push((k, vec![v.to_string()])),
            }
        }
        Ok(f)
    }

    /// Applies `before=` and `since=` (a container's name or ID, or an ID
    /// prefix) to a listing in the daemon's newest-first order.
    pub fn apply_order(
        &self,
        list: &mut Vec<berth_proto::gateway::v1::ContainerSummary>,
    ) -> Result<(), String> {
        for (key, vals) in &self.terms {
            if key != "before" && key != "since" {
                continue;
            }
            for v in vals {
                let v = v.trim_start_matches('/');
                let pos = list
                    .iter()
                    .position(|c| c.id == v || c.names.iter().any(|n| n == v))
                    .or_else(|| list.iter().position(|c| c.id.starts_with(v)))
                    .ok_or_else(|| format!("No such container: {v}"))?;
                let id = list[pos].id.clone();
                let before = key == "before";
                let mut i = 0;
                list.retain(|c| {
                    let keep = if before { i > pos } else { i < pos };
                    i += 1;
                    keep && c.id != id
                });
            }
        }
        Ok(())
    }

    fn has_order(&self) -> bool {
        self.terms
            .iter()
            .any(|(k, _)| k == "before" || k == "since")
    }

    fn implies_all(&self) -> bool {
        self.terms
            .iter()
            .any(|(k, _)| k == "status" || k == "exited")
    }

    pub fn matches(&self, c: &berth_proto::gateway::v1::ContainerSummary) -> bool {
        self.terms.iter().all(|(key, vals)| {
            vals.iter().any(|v| match key.as_str() {
                "id" => c.id.starts_with(v.as_str()),
                "name" => c.names.iter().any(|n| n.contains(v.as_str())),
                "status" => c.state == *v,
                "label" => match v.split_once('=') {
                    Some((k, val)) => c.labels.get(k).is_some_and(|x| x == val),
                    None => c.labels.contains_key(v.as_str()),
                },
                "ancestor" => {
                    c.image == *v
                        || c.image.strip_suffix(":latest") == Some(v.as_str())
                        || v.strip_suffix(":latest") == Some(c.image.as_str())
                        || (v.len() >= 4 && short_id(&c.image_id).starts_with(short_id(v).as_str()))
                }
                "exited" => c.state == "exited" && v.parse::<i64>().ok() == Some(c.exit_code),
                // Resolved against the listing by `resolve_order`.
                "before" | "since" => true,
                _ => false,
            })
        })
    }
}

/// `berth ps`.
pub async fn ps(ctx: &Ctx, args: PsArgs) -> i32 {
    let format = match output_format(args.format.as_deref(), args.quiet) {
        Ok(f) => f,
        Err(e) => {
            eprint_err(&e);
            return 1;
        }
    };
    let filter = match PsFilter::parse(&args.filter) {
        Ok(f) => f,
        Err(e) => {
            eprint_err(&format!("Error response from daemon: {e}"));
            return 1;
        }
    };
    let last = if args.latest {
        Some(1)
    } else {
        args.last.filter(|n| *n >= 0)
    };
    // As docker: --last/--latest and a status filter look at all containers.
    let all = args.all || last.is_some() || filter.implies_all();
    let resp = match ctx
        .containers()
        .list(ctx.req(ListContainersRequest {
            all: all || filter.has_order(),
        }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            eprint_err(&ctx.describe(&s));
            return 1;
        }
    };
    let mut containers = resp.containers;
    // The daemon lists newest first with full precision: before=/since=
    // are positions in that order.
    if let Err(e) = filter.apply_order(&mut containers) {
        eprint_err(&format!("Error response from daemon: {e}"));
        return 1;
    }
    if !all {
        containers.retain(|c| matches!(c.state.as_str(), "running" | "paused" | "restarting"));
    }
    // Stable: containers of the same second keep the daemon's order.
    containers.sort_by_key(|c| std::cmp::Reverse(c.created));
    containers.retain(|c| filter.matches(c));
    if let Some(n) = last {
        containers.truncate(usize::try_from(n).unwrap_or(usize::MAX));
    }
    let now = Utc::now();
    let rows: Vec<serde_json::Value> = containers
        .iter()
        .map(|c| {
            let status = ps_status(
                &StateView {
                    state: &c.state,
                    exit_code: c.exit_code,
                    started_at: berth_common::time::parse_rfc3339(&c.started_at),
                    finished_at: berth_common::time::parse_rfc3339(&c.finished_at),
                },
                now,
            );
            let image = if !args.no_trunc && c.image.starts_with("sha256:") {
                short_id(&c.image)
            } else {
                c.image.clone()
            };
            let mut labels: Vec<String> =
                c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            json!({
                "Command": ps_command(&c.command, args.no_trunc),
                "CreatedAt": chrono::DateTime::from_timestamp(c.created, 0)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
                    .unwrap_or_default(),
                "ID": if args.no_trunc { c.id.clone() } else { short_id(&c.id) },
                "Image": image,
                "Labels": labels.join(","),
                "LocalVolumes": "0",
                "Mounts": "",
                "Names": c.names.join(","),
                "Networks": "",
                "Ports": c.ports,
                "RunningFor": ago_unix(now, c.created),
                "Size": "0B",
                "State": c.state,
                "Status": status,
            })
        })
        .collect();
    let header = json!({
        "Command": "COMMAND", "CreatedAt": "CREATED AT", "ID": "CONTAINER ID",
        "Image": "IMAGE", "Labels": "LABELS", "LocalVolumes": "LOCAL VOLUMES",
        "Mounts": "MOUNTS", "Names": "NAMES", "Networks": "NETWORKS", "Ports": "PORTS",
        "RunningFor": "CREATED", "Size": "SIZE", "State": "STATE", "Status": "STATUS",
    });
    let default = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";
    crate::print_rows(format, default, "{{.ID}}", &header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn env_without_value_comes_from_our_environment() {
        let lookup = |k: &str| (k == "HOME_X").then(|| "/root".to_string());
        let env = resolve_env(
            &["A=1".into(), "HOME_X".into(), "UNSET_Y".into(), "B=".into()],
            lookup,
        )
        .unwrap();
        assert_eq!(env, ["A=1", "HOME_X=/root", "B="]);
        assert!(resolve_env(&["=x".into()], lookup).is_err());
    }

    #[test]
    fn unknown_flag_before_the_image() {
        let cli = crate::cli::Cli::try_parse_from(["berth", "run", "--bogus", "busybox"]).unwrap();
        let Some(crate::cli::Command::Run(args)) = cli.command else {
            panic!("not run")
        };
        assert_eq!(create_request(&args).unwrap_err(), "unknown flag: --bogus");
    }

    #[test]
    fn ps_filters() {
        use berth_proto::gateway::v1::ContainerSummary;
        let c = ContainerSummary {
            id: "abcdef".into(),
            names: vec!["web-1".into()],
            image: "busybox".into(),
            image_id: "sha256:0123456789abcdef".into(),
            state: "exited".into(),
            exit_code: 3,
            labels: [("app".to_string(), "x".to_string())].into(),
            ..Default::default()
        };
        let m = |specs: &[&str]| {
            let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
            PsFilter::parse(&specs).unwrap().matches(&c)
        };
        assert!(m(&[]));
        assert!(m(&["name=web"]));
        assert!(!m(&["name=db"]));
        assert!(m(&["name=db", "name=web"]));
        assert!(m(&["status=exited", "exited=3"]));
        assert!(!m(&["status=running"]));
        assert!(m(&["label=app", "label=app=x"]));
        assert!(!m(&["label=app=y"]));
        assert!(m(&["ancestor=busybox:latest"]));
        assert!(m(&["ancestor=01234567"]));
        assert!(m(&["id=abc"]));
        assert!(PsFilter::parse(&["bogus=1".into()]).is_err());
        assert!(PsFilter::parse(&["name".into()]).is_err());
    }

    #[test]
    fn labels() {
        let l = parse_labels(&["a=b".into(), "c".into(), "d=e=f".into()]).unwrap();
        assert_eq!(l["a"], "b");
        assert_eq!(l["c"], "");
        assert_eq!(l["d"], "e=f");
    }

    #[test]
    fn create_request_from_flags() {
        let cli = crate::cli::Cli::try_parse_from([
            "berth",
            "run",
            "--rm",
            "--name",
            "t",
            "-e",
            "X=1",
            "-w",
            "/tmp",
            "-u",
            "1:2",
            "--entrypoint",
            "",
            "--stop-timeout",
            "3",
            "--net",
            "host",
            "busybox",
            "sh",
            "-c",
            "echo hi",
        ])
        .unwrap();
        let Some(crate::cli::Command::Run(args)) = cli.command else {
            panic!("not run")
        };
        let req = create_request(&args).unwrap();
        assert_eq!(req.image, "busybox");
        assert_eq!(req.name, "t");
        assert!(req.auto_remove);
        assert_eq!(req.cmd.unwrap().values, ["sh", "-c", "echo hi"]);
        assert_eq!(req.entrypoint.unwrap().values, Vec::<String>::new());
        assert_eq!(req.env, ["X=1"]);
        assert_eq!(req.working_dir, "/tmp");
        assert_eq!(req.user, "1:2");
        assert_eq!(req.stop_timeout, Some(3));
        assert_eq!(req.network_mode, "host");

        let cli = crate::cli::Cli::try_parse_from(["berth", "create", "busybox"]).unwrap();
        let Some(crate::cli::Command::Create(args)) = cli.command else {
            panic!("not create")
        };
        let req = create_request(&args).unwrap();
        assert!(req.cmd.is_none());
        assert!(req.entrypoint.is_none());
        assert_eq!(req.stop_timeout, None);
        assert!(req.resources.is_none());
        assert_eq!(req.oom_score_adj, 0);
    }

    fn run_args(a: &[&str]) -> RunArgs {
        let cli = crate::cli::Cli::try_parse_from(
            ["berth", "run"]
                .iter()
                .chain(a.iter())
                .chain(["busybox"].iter()),
        )
        .unwrap();
        let Some(crate::cli::Command::Run(args)) = cli.command else {
            panic!("not run")
        };
        args
    }

    #[test]
    fn memory_flags_like_docker() {
        let req = create_request(&run_args(&["-m", "4"])).unwrap();
        assert_eq!(req.resources.unwrap().memory, 4);
        let req = create_request(&run_args(&[
            "-m",
            "8m",
            "--memory-swap",
            "1g",
            "--memory-reservation",
            "6MiB",
            "--memory-swappiness",
            "0",
            "--oom-kill-disable",
            "--oom-score-adj",
            "-500",
        ]))
        .unwrap();
        let r = req.resources.unwrap();
        assert_eq!(r.memory, 8 << 20);
        assert_eq!(r.memory_swap, 1 << 30);
        assert_eq!(r.memory_reservation, 6 << 20);
        assert_eq!(r.memory_swappiness, Some(0));
        assert_eq!(r.oom_kill_disable, Some(true));
        assert_eq!(req.oom_score_adj, -500);
        // -1: unlimited swap; swappiness -1 is docker's "unset".
        let r = create_request(&run_args(&[
            "-m",
            "8m",
            "--memory-swap=-1",
            "--memory-swappiness=-1",
        ]))
        .unwrap()
        .resources
        .unwrap();
        assert_eq!((r.memory_swap, r.memory_swappiness), (-1, None));
        // Only the score: no resources message.
        let req = create_request(&run_args(&["--oom-score-adj", "200"])).unwrap();
        assert!(req.resources.is_none());
        assert_eq!(req.oom_score_adj, 200);
    }

    #[test]
    fn bad_memory_flags_use_docker_words() {
        let err = |a: &[&str]| resource_flags(&run_args(a)).unwrap_err();
        assert_eq!(
            err(&["-m", "12x"]),
            "invalid argument \"12x\" for \"-m, --memory\" flag: invalid suffix: 'x'"
        );
        assert_eq!(
            err(&["--memory", "abc"]),
            "invalid argument \"abc\" for \"-m, --memory\" flag: invalid size: 'abc'"
        );
        assert_eq!(
            err(&["--memory-swap", "-2"]),
            "invalid argument \"-2\" for \"--memory-swap\" flag: invalid size: '-2'"
        );
        assert_eq!(
            err(&["--memory-reservation", "1q"]),
            "invalid argument \"1q\" for \"--memory-reservation\" flag: invalid suffix: 'q'"
        );
        assert_eq!(
            err(&["--memory-swappiness", "x"]),
            "invalid argument \"x\" for \"--memory-swappiness\" flag: strconv.ParseInt: parsing \"x\": invalid syntax"
        );
        assert_eq!(
            err(&["--oom-score-adj", "99999999999"]),
            "invalid argument \"99999999999\" for \"--oom-score-adj\" flag: strconv.ParseInt: parsing \"99999999999\": value out of range"
        );
        // Range checks are the daemon's (the gateway's), as in docker.
        assert!(resource_flags(&run_args(&["-m", "4", "--oom-score-adj", "5000"])).is_ok());
    }
}
