//! Command-line syntax, following docker's names, aliases and flags.

use clap::{ArgAction, Args, Parser, Subcommand};

/// Default gateway address.
pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    about = "A self-sufficient runtime for containers",
    disable_version_flag = true,
    subcommand_required = false
)]
pub struct Cli {
    /// Daemon socket to connect to
    #[arg(short = 'H', long = "host", env = "BERTH_HOST", value_name = "HOST")]
    pub host: Option<String>,
    /// Namespace to work in
    #[arg(long, env = "BERTH_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Name of the context to use to connect to the daemon (overrides
    /// BERTH_HOST env var and default context set with "berth context use")
    #[arg(short = 'c', long, env = "BERTH_CONTEXT", value_name = "string")]
    pub context: Option<String>,
    /// Use TLS; implied by --tlsverify
    #[arg(long)]
    pub tls: bool,
    /// Use TLS and verify the remote (mutual TLS with the client
    /// certificate)
    #[arg(long, env = "BERTH_TLS_VERIFY", value_parser = clap::builder::FalseyValueParser::new())]
    pub tlsverify: bool,
    /// Trust certs signed only by this CA (default "$BERTH_CERT_PATH/ca.pem")
    #[arg(long, value_name = "string")]
    pub tlscacert: Option<std::path::PathBuf>,
    /// Path to TLS certificate file (default "$BERTH_CERT_PATH/cert.pem")
    #[arg(long, value_name = "string")]
    pub tlscert: Option<std::path::PathBuf>,
    /// Path to TLS key file (default "$BERTH_CERT_PATH/key.pem")
    #[arg(long, value_name = "string")]
    pub tlskey: Option<std::path::PathBuf>,
    /// Print version information and quit
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and run a new container from an image
    #[command(override_usage = "berth run [OPTIONS] IMAGE [COMMAND] [ARG...]")]
    Run(RunArgs),
    /// Create a new container
    #[command(override_usage = "berth create [OPTIONS] IMAGE [COMMAND] [ARG...]")]
    Create(RunArgs),
    /// Start one or more stopped containers
    Start(StartArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Remove one or more containers
    Rm(RmArgs),
    /// List containers
    Ps(PsArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(WaitArgs),
    /// Return low-level information on berth objects
    Inspect(InspectArgs),
    /// List images
    Images(ImagesArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(ImportArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Download an image from a registry
    Pull(crate::cmd::registry::PullArgs),
    /// Upload an image to a registry
    Push(crate::cmd::registry::PushArgs),
    /// Log in to a registry
    Login(crate::cmd::registry::LoginArgs),
    /// Log out from a registry
    Logout(crate::cmd::registry::LogoutArgs),
    /// Search Docker Hub (or HOST/TERM: another registry) for images
    Search(crate::cmd::registry::SearchArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(crate::cmd::imagestore::SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(crate::cmd::imagestore::LoadArgs),
    /// Show the history of an image
    History(crate::cmd::imagestore::HistoryArgs),
    /// Manage berth
    #[command(subcommand, arg_required_else_help = true)]
    System(SystemCommand),
    /// Show the berth version information
    Version,
    /// Display system-wide information
    Info(crate::cmd::system::InfoArgs),
    /// Get real time events from the server
    Events(crate::cmd::lifecycle::EventsArgs),
    /// Restart one or more containers
    Restart(StopArgs),
    /// Rename a container
    Rename(crate::cmd::lifecycle::RenameArgs),
    /// Copy files/folders between a container and the local filesystem
    #[command(
        override_usage = "berth cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n       berth cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH"
    )]
    Cp(crate::cmd::files::CpArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(crate::cmd::files::DiffArgs),
    /// Export a container's filesystem as a tar archive
    Export(crate::cmd::files::ExportArgs),
    /// Create a new image from a container's changes
    Commit(crate::cmd::files::CommitArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(crate::cmd::processes::AttachArgs),
    /// Execute a command in a running container
    #[command(override_usage = "berth exec [OPTIONS] CONTAINER COMMAND [ARG...]")]
    Exec(crate::cmd::processes::ExecArgs),
    /// Pause all processes within one or more containers
    Pause(crate::cmd::processes::PauseArgs),
    /// Unpause all processes within one or more containers
    Unpause(crate::cmd::processes::PauseArgs),
    /// Display the running processes of a container
    #[command(override_usage = "berth top CONTAINER [ps OPTIONS]")]
    Top(crate::cmd::processes::TopArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(crate::cmd::processes::StatsArgs),
    /// Manage images
    #[command(subcommand, arg_required_else_help = true)]
    Image(ImageCommand),
    /// Manage containers
    #[command(subcommand, arg_required_else_help = true)]
    Container(ContainerCommand),
    /// Manage volumes
    #[command(subcommand, arg_required_else_help = true)]
    Volume(crate::cmd::volumes::VolumeCommand),
    /// Update configuration of one or more containers
    Update(UpdateArgs),
    /// Manage networks
    #[command(subcommand, arg_required_else_help = true)]
    Network(crate::cmd::networks::NetworkCommand),
    /// List port mappings or a specific mapping for the container
    Port(crate::cmd::networks::PortArgs),
    /// Manage contexts
    #[command(subcommand, arg_required_else_help = true)]
    Context(crate::cmd::context::ContextCommand),
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import the contents from a tarball to create a filesystem image
    Import(ImportArgs),
    /// List images
    #[command(visible_alias = "list", alias = "images")]
    Ls(ImagesArgs),
    /// Display detailed information on one or more images
    Inspect(ImageInspectArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Remove one or more images
    #[command(visible_alias = "rmi", alias = "remove")]
    Rm(RmiArgs),
    /// Download an image from a registry
    Pull(crate::cmd::registry::PullArgs),
    /// Upload an image to a registry
    Push(crate::cmd::registry::PushArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(crate::cmd::imagestore::SaveArgs),
    /// Load an image from a tar archive or STDIN
    Load(crate::cmd::imagestore::LoadArgs),
    /// Show the history of an image
    History(crate::cmd::imagestore::HistoryArgs),
    /// Remove unused images
    Prune(crate::cmd::imagestore::ImagePruneArgs),
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Remove unused data
    Prune(crate::cmd::imagestore::SystemPruneArgs),
    /// Show berth disk usage
    Df(crate::cmd::imagestore::DfArgs),
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create and run a new container from an image
    #[command(override_usage = "berth container run [OPTIONS] IMAGE [COMMAND] [ARG...]")]
    Run(RunArgs),
    /// Create a new container
    #[command(override_usage = "berth container create [OPTIONS] IMAGE [COMMAND] [ARG...]")]
    Create(RunArgs),
    /// Start one or more stopped containers
    Start(StartArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Remove one or more containers
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// List containers
    #[command(visible_aliases = ["list", "ps"])]
    Ls(PsArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(WaitArgs),
    /// Display detailed information on one or more containers
    Inspect(ImageInspectArgs),
    /// Restart one or more containers
    Restart(StopArgs),
    /// Rename a container
    Rename(crate::cmd::lifecycle::RenameArgs),
    /// Remove all stopped containers
    Prune(crate::cmd::lifecycle::PruneArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(crate::cmd::files::CpArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(crate::cmd::files::DiffArgs),
    /// Export a container's filesystem as a tar archive
    Export(crate::cmd::files::ExportArgs),
    /// Create a new image from a container's changes
    Commit(crate::cmd::files::CommitArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(crate::cmd::processes::AttachArgs),
    /// Execute a command in a running container
    Exec(crate::cmd::processes::ExecArgs),
    /// Pause all processes within one or more containers
    Pause(crate::cmd::processes::PauseArgs),
    /// Unpause all processes within one or more containers
    Unpause(crate::cmd::processes::PauseArgs),
    /// Display the running processes of a container
    Top(crate::cmd::processes::TopArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(crate::cmd::processes::StatsArgs),
    /// Update configuration of one or more containers
    Update(UpdateArgs),
}

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print usage
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// Automatically remove the container and its associated anonymous volumes when it exits
    #[arg(long)]
    pub rm: bool,
    /// Run container in background and print container ID
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys", value_name = "string")]
    pub detach_keys: Option<String>,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env", value_name = "list")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file", value_name = "list")]
    pub env_file: Vec<String>,
    /// Restart policy to apply when a container exits
    #[arg(long = "restart", value_name = "string", default_value = "no")]
    pub restart: String,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Pull image before running ("always", "missing", "never")
    #[arg(long = "pull", value_name = "string", default_value = "missing", value_parser = ["always", "missing", "never"])]
    pub pull: String,
    /// Set platform if server is multi-platform capable
    #[arg(long, value_name = "string")]
    pub platform: Option<String>,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long = "init")]
    pub init: bool,
    /// Log driver options
    #[arg(long = "log-opt", value_name = "list")]
    pub log_opt: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir", value_name = "string")]
    pub workdir: Option<String>,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short = 'u', long = "user", value_name = "string")]
    pub user: Option<String>,
    /// Container host name
    #[arg(short = 'h', long = "hostname", value_name = "string")]
    pub hostname: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long, value_name = "string")]
    pub entrypoint: Option<String>,
    /// Connect a container to a network
    #[arg(long = "network", alias = "net", value_name = "network")]
    pub network: Option<String>,
    /// Publish a container's port(s) to the host
    #[arg(short = 'p', long = "publish", value_name = "list")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports
    #[arg(long = "expose", value_name = "list")]
    pub expose: Vec<String>,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long = "ip", value_name = "string")]
    pub ip: Option<String>,
    /// Add network-scoped alias for the container
    #[arg(long = "network-alias", alias = "net-alias", value_name = "list")]
    pub network_alias: Vec<String>,
    /// Set custom DNS servers
    #[arg(long = "dns", value_name = "list")]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long = "dns-search", value_name = "list")]
    pub dns_search: Vec<String>,
    /// Set DNS options
    #[arg(long = "dns-option", alias = "dns-opt", value_name = "list")]
    pub dns_option: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host", value_name = "list")]
    pub add_host: Vec<String>,
    /// Add link to another container
    #[arg(long = "link", value_name = "list")]
    pub link: Vec<String>,
    /// Set meta data on a container
    #[arg(short = 'l', long = "label", value_name = "list")]
    pub label: Vec<String>,
    /// Signal to stop the container
    #[arg(long = "stop-signal", value_name = "string")]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(
        long = "stop-timeout",
        value_name = "int",
        allow_negative_numbers = true
    )]
    pub stop_timeout: Option<i32>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Tune container memory swappiness (0 to 100) (default -1)
    #[arg(
        long = "memory-swappiness",
        value_name = "int",
        allow_hyphen_values = true
    )]
    pub memory_swappiness: Option<String>,
    /// Disable OOM Killer
    #[arg(long = "oom-kill-disable")]
    pub oom_kill_disable: bool,
    /// Tune host's OOM preferences (-1000 to 1000)
    #[arg(long = "oom-score-adj", value_name = "int", allow_hyphen_values = true)]
    pub oom_score_adj: Option<String>,
    /// Block IO weight (relative device weight)
    #[arg(long = "blkio-weight-device", value_name = "list")]
    pub blkio_weight_device: Vec<String>,
    /// Limit read rate (bytes per second) from a device
    #[arg(long = "device-read-bps", value_name = "list")]
    pub device_read_bps: Vec<String>,
    /// Limit write rate (bytes per second) to a device
    #[arg(long = "device-write-bps", value_name = "list")]
    pub device_write_bps: Vec<String>,
    /// Limit read rate (IO per second) from a device
    #[arg(long = "device-read-iops", value_name = "list")]
    pub device_read_iops: Vec<String>,
    /// Limit write rate (IO per second) to a device
    #[arg(long = "device-write-iops", value_name = "list")]
    pub device_write_iops: Vec<String>,
    /// Ulimit options
    #[arg(long = "ulimit", value_name = "ulimit")]
    pub ulimit: Vec<String>,
    /// Bind mount a volume
    #[arg(short = 'v', long = "volume", value_name = "list")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount to the container
    #[arg(long = "mount", value_name = "mount")]
    pub mount: Vec<String>,
    /// Mount a tmpfs directory
    #[arg(long = "tmpfs", value_name = "list")]
    pub tmpfs: Vec<String>,
    /// Mount volumes from the specified container(s)
    #[arg(long = "volumes-from", value_name = "list")]
    pub volumes_from: Vec<String>,
    /// IMAGE [COMMAND] [ARG...]
    #[arg(
        value_name = "IMAGE [COMMAND] [ARG...]",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub image_and_command: Vec<String>,
}

/// The limits `run`, `create` and `update` share.
#[derive(Debug, Args, Default)]
pub struct LimitArgs {
    /// Memory limit
    #[arg(short = 'm', long = "memory", value_name = "bytes")]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: '-1' to enable unlimited swap
    #[arg(long = "memory-swap", value_name = "bytes", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Memory soft limit
    #[arg(long = "memory-reservation", value_name = "bytes")]
    pub memory_reservation: Option<String>,
    /// Kernel memory limit (deprecated)
    #[arg(long = "kernel-memory", value_name = "bytes")]
    pub kernel_memory: Option<String>,
    /// Number of CPUs
    #[arg(long = "cpus", value_name = "decimal")]
    pub cpus: Option<String>,
    /// Limit CPU CFS (Completely Fair Scheduler) period
    #[arg(long = "cpu-period", value_name = "int")]
    pub cpu_period: Option<String>,
    /// Limit CPU CFS (Completely Fair Scheduler) quota
    #[arg(long = "cpu-quota", value_name = "int", allow_hyphen_values = true)]
    pub cpu_quota: Option<String>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares", value_name = "int")]
    pub cpu_shares: Option<String>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus", value_name = "string")]
    pub cpuset_cpus: Option<String>,
    /// MEMs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-mems", value_name = "string")]
    pub cpuset_mems: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit", value_name = "int", allow_hyphen_values = true)]
    pub pids_limit: Option<String>,
    /// Block IO (relative weight), between 10 and 1000, or 0 to disable (default 0)
    #[arg(long = "blkio-weight", value_name = "uint16")]
    pub blkio_weight: Option<String>,
}

/// `berth update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Restart policy to apply when a container exits
    #[arg(long = "restart", value_name = "string")]
    pub restart: Option<String>,
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

impl RunArgs {
    /// An unknown flag before the image ends up as the image (the operands
    /// accept hyphens so that the command's flags are kept); report it as
    /// docker does.
    pub fn check(&self) -> Result<(), String> {
        let image = self.image();
        if image.starts_with('-') && image != "-" {
            return Err(format!(
                "unknown flag: {}",
                image.split('=').next().unwrap_or(image)
            ));
        }
        Ok(())
    }
    /// The image operand.
    pub fn image(&self) -> &str {
        &self.image_and_command[0]
    }
    /// The command operands after the image (empty: use the image's).
    pub fn command(&self) -> &[String] {
        &self.image_and_command[1..]
    }
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach container's STDIN
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys", value_name = "string")]
    pub detach_keys: Option<String>,
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(
        short = 't',
        long = "time",
        alias = "timeout",
        allow_negative_numbers = true
    )]
    pub time: Option<i32>,
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short = 's', long = "signal", value_name = "string")]
    pub signal: Option<String>,
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    pub volumes: bool,
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Format output using a custom template ("table", "json" or a Go template)
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Filter output based on conditions provided (id, name, status, label,
    /// ancestor, exited)
    #[arg(short = 'f', long = "filter", value_name = "filter")]
    pub filter: Vec<String>,
    /// Show n last created containers (includes all states)
    #[arg(
        short = 'n',
        long = "last",
        value_name = "int",
        allow_negative_numbers = true
    )]
    pub last: Option<i64>,
    /// Show the latest created container (includes all states)
    #[arg(short = 'l', long)]
    pub latest: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Show timestamps
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, default_value = "all", value_name = "string")]
    pub tail: String,
    /// Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)
    #[arg(long, value_name = "string")]
    pub since: Option<String>,
    /// Show logs before a timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)
    #[arg(long, value_name = "string")]
    pub until: Option<String>,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long, value_name = "string")]
    pub format: Option<String>,
    /// Return JSON for specified type (container or image)
    #[arg(long = "type", value_name = "string")]
    pub kind: Option<String>,
    #[arg(value_name = "NAME|ID", required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImageInspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long, value_name = "string")]
    pub format: Option<String>,
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Show all images (default hides intermediate images)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Format output using a custom template ("table", "json" or a Go template)
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Filter output based on conditions provided (dangling, reference, label, before, since)
    #[arg(short = 'f', long = "filter", value_name = "filter")]
    pub filter: Vec<String>,
    /// Only list images of this repository (and tag)
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change", value_name = "list")]
    pub change: Vec<String>,
    /// Set commit message for imported image
    #[arg(short = 'm', long = "message", value_name = "string")]
    pub message: Option<String>,
    /// file|- (a tarball, plain or gzip)
    #[arg(value_name = "file|-")]
    pub file: String,
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    #[arg(value_name = "SOURCE_IMAGE[:TAG]")]
    pub source: String,
    #[arg(value_name = "TARGET_IMAGE[:TAG]")]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Force removal of the image
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("berth").chain(args.iter().copied())).unwrap()
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args).command {
            Some(Command::Run(r)) | Some(Command::Create(r)) => r,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn run_keeps_command_flags() {
        let r = run_args(&["run", "--rm", "busybox", "sh", "-c", "echo hi"]);
        assert!(r.rm);
        assert_eq!(r.image(), "busybox");
        assert_eq!(r.command(), ["sh", "-c", "echo hi"]);

        // Flags after the image belong to the command, even run's own.
        let r = run_args(&["run", "-e", "A=1", "busybox", "env", "-e", "--rm"]);
        assert!(!r.rm);
        assert_eq!(r.env, ["A=1"]);
        assert_eq!(r.command(), ["env", "-e", "--rm"]);

        let r = run_args(&["create", "--name", "web", "-h", "box", "-l", "a=b", "img"]);
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.hostname.as_deref(), Some("box"));
        assert_eq!(r.image(), "img");
        assert!(r.command().is_empty());

        let r = run_args(&["run", "--net", "host", "--entrypoint", "", "-d", "img"]);
        assert_eq!(r.network.as_deref(), Some("host"));
        assert_eq!(r.entrypoint.as_deref(), Some(""));
        assert!(r.detach);
    }

    #[test]
    fn memory_flags() {
        let r = run_args(&[
            "run",
            "-m",
            "8m",
            "--memory-swap",
            "-1",
            "--memory-reservation=6m",
            "--memory-swappiness",
            "-1",
            "--oom-kill-disable",
            "--oom-score-adj",
            "-500",
            "busybox",
            "sh",
        ]);
        assert_eq!(r.limits.memory.as_deref(), Some("8m"));
        assert_eq!(r.limits.memory_swap.as_deref(), Some("-1"));
        assert_eq!(r.limits.memory_reservation.as_deref(), Some("6m"));
        assert_eq!(r.memory_swappiness.as_deref(), Some("-1"));
        assert!(r.oom_kill_disable);
        assert_eq!(r.oom_score_adj.as_deref(), Some("-500"));
        assert_eq!(r.image(), "busybox");
        let r = run_args(&["create", "--memory", "1g", "img"]);
        assert_eq!(r.limits.memory.as_deref(), Some("1g"));
        assert!(!r.oom_kill_disable);
    }

    #[test]
    fn run_needs_an_image() {
        let err = Cli::try_parse_from(["berth", "run", "--rm"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn globals_and_aliases() {
        let c = parse(&[
            "-H",
            "unix:///tmp/x.sock",
            "--namespace",
            "t1",
            "image",
            "list",
            "-q",
        ]);
        assert_eq!(c.host.as_deref(), Some("unix:///tmp/x.sock"));
        assert_eq!(c.namespace, "t1");
        assert!(matches!(
            c.command,
            Some(Command::Image(ImageCommand::Ls(ImagesArgs {
                quiet: true,
                ..
            })))
        ));
        let c = parse(&["image", "rm", "-f", "a", "b"]);
        assert!(matches!(
            c.command,
            Some(Command::Image(ImageCommand::Rm(_)))
        ));
        let c = parse(&["container", "ls", "-a"]);
        assert!(matches!(
            c.command,
            Some(Command::Container(ContainerCommand::Ls(_)))
        ));
        let c = parse(&["image", "import", "-c", "CMD [\"sh\"]", "-", "bb:1"]);
        match c.command {
            Some(Command::Image(ImageCommand::Import(i))) => {
                assert_eq!(i.file, "-");
                assert_eq!(i.change, ["CMD [\"sh\"]"]);
                assert_eq!(i.reference.as_deref(), Some("bb:1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
