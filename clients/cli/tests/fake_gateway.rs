//! The `berth` binary against an in-process fake gateway: flags become the
//! right requests, answers are rendered like docker, exit codes match.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use berth_proto::gateway::v1::containers_server::{Containers, ContainersServer};
use berth_proto::gateway::v1::images_server::{Images, ImagesServer};
use berth_proto::gateway::v1::system_server::{System, SystemServer};
use berth_proto::gateway::v1::*;
use tokio_stream::Stream as AsyncStream;
use tonic::{Request, Response, Status, Streaming};

type Res<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn AsyncStream<Item = Result<T, Status>> + Send>>;

#[derive(Default)]
struct Log {
    /// "method arg" lines in call order.
    calls: Vec<String>,
    namespaces: Vec<String>,
    /// W3C traceparent of each call ("" when missing).
    traceparents: Vec<String>,
    import_header: Option<ImportHeader>,
    import_chunks: Vec<usize>,
    create: Option<CreateContainerRequest>,
}

#[derive(Clone, Default)]
struct Fake {
    log: Arc<Mutex<Log>>,
    started: Arc<tokio::sync::Notify>,
}

impl Fake {
    fn note<T>(&self, req: &Request<T>, call: String) {
        let mut log = self.log.lock().unwrap();
        let ns = req
            .metadata()
            .get("berth-namespace")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        log.namespaces.push(ns);
        let tp = req
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        log.traceparents.push(tp);
        log.calls.push(call);
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn rfc3339_ago(secs: i64) -> String {
    (chrono::Utc::now() - chrono::TimeDelta::seconds(secs)).to_rfc3339()
}

#[tonic::async_trait]
impl Images for Fake {
    async fn import(&self, req: Request<Streaming<ImportRequest>>) -> Res<ImportResponse> {
        self.note(&req, "import".into());
        let mut s = req.into_inner();
        while let Some(m) = s.message().await? {
            let mut log = self.log.lock().unwrap();
            match m.payload {
                Some(import_request::Payload::Header(h)) => log.import_header = Some(h),
                Some(import_request::Payload::Data(d)) => log.import_chunks.push(d.len()),
                None => {}
            }
        }
        Ok(Response::new(ImportResponse {
            id: format!("sha256:{}", "a".repeat(64)),
            reference: String::new(),
        }))
    }
    async fn list(&self, req: Request<ListImagesRequest>) -> Res<ListImagesResponse> {
        self.note(&req, "images".into());
        Ok(Response::new(ListImagesResponse {
            images: vec![
                ImageSummary {
                    id: format!("sha256:{}", "0123456789ab".repeat(5) + "cdef"),
                    repo_tags: vec![],
                    created: now() - 3 * 86400,
                    size: 999,
                    labels: Default::default(),
                },
                ImageSummary {
                    id: format!("sha256:{}", "f".repeat(64)),
                    repo_tags: vec!["busybox:latest".into(), "localhost:5000/bb:1".into()],
                    created: now() - 150,
                    size: 4_261_234,
                    labels: Default::default(),
                },
            ],
        }))
    }
    async fn inspect(&self, req: Request<InspectImageRequest>) -> Res<InspectResponse> {
        let r = req.get_ref().reference.clone();
        self.note(&req, format!("inspect-image {r}"));
        if r != "busybox" {
            return Err(Status::not_found(format!("No such image: {r}")));
        }
        Ok(Response::new(InspectResponse {
            json: r#"{"Id":"sha256:fff","RepoTags":["busybox:latest"],"Config":{"Env":["PATH=/bin","A=1"],"Labels":{"k":"v"}}}"#.into(),
        }))
    }
    async fn tag(&self, req: Request<TagRequest>) -> Res<TagResponse> {
        let r = req.get_ref();
        let call = format!("tag {} {}", r.source, r.target);
        self.note(&req, call);
        Ok(Response::new(TagResponse {}))
    }
    async fn remove(&self, req: Request<RemoveImageRequest>) -> Res<RemoveImageResponse> {
        let r = req.get_ref().reference.clone();
        self.note(&req, format!("rmi {r}"));
        if r != "busybox" {
            return Err(Status::not_found(format!("No such image: {r}")));
        }
        Ok(Response::new(RemoveImageResponse {
            untagged: vec!["busybox:latest".into()],
            deleted: vec!["sha256:fff".into()],
        }))
    }
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!("No such container: {id}"))
}

#[tonic::async_trait]
impl Containers for Fake {
    async fn create(&self, req: Request<CreateContainerRequest>) -> Res<CreateContainerResponse> {
        self.note(&req, "create".into());
        let r = req.into_inner();
        if r.image == "nope" {
            return Err(Status::not_found("No such image: nope"));
        }
        let id = if r.cmd.as_ref().is_some_and(|c| c.values == ["missing"]) {
            "missing".to_string()
        } else {
            "c".repeat(64)
        };
        self.log.lock().unwrap().create = Some(r);
        Ok(Response::new(CreateContainerResponse {
            id,
            warnings: vec![],
        }))
    }
    async fn start(&self, req: Request<ContainerRef>) -> Res<StartContainerResponse> {
        let id = req.get_ref().id.clone();
        self.note(&req, format!("start {id}"));
        if id == "missing" {
            let mut st = Status::failed_precondition(
                "exec: \"missing\": executable file not found in $PATH",
            );
            st.metadata_mut()
                .insert("berth-exit-code", "127".parse().unwrap());
            return Err(st);
        }
        if id == "bad" {
            return Err(not_found(&id));
        }
        self.started.notify_one();
        Ok(Response::new(StartContainerResponse {}))
    }
    async fn stop(&self, req: Request<StopContainerRequest>) -> Res<Empty> {
        let r = req.get_ref().clone();
        self.note(&req, format!("stop {} {:?}", r.id, r.timeout));
        if r.id == "bad" {
            return Err(not_found(&r.id));
        }
        Ok(Response::new(Empty {}))
    }
    async fn kill(&self, req: Request<KillContainerRequest>) -> Res<Empty> {
        let r = req.get_ref().clone();
        self.note(&req, format!("kill {} {}", r.id, r.signal));
        Ok(Response::new(Empty {}))
    }
    async fn wait(&self, req: Request<WaitContainerRequest>) -> Res<WaitContainerResponse> {
        let id = req.get_ref().id.clone();
        self.note(&req, format!("wait {id}"));
        if id == "bad" {
            return Err(not_found(&id));
        }
        Ok(Response::new(WaitContainerResponse {
            status_code: 5,
            error: String::new(),
        }))
    }
    async fn remove(&self, req: Request<RemoveContainerRequest>) -> Res<Empty> {
        let r = req.get_ref().clone();
        self.note(&req, format!("rm {} {} {}", r.id, r.force, r.volumes));
        if r.id == "bad" {
            return Err(not_found(&r.id));
        }
        Ok(Response::new(Empty {}))
    }
    async fn list(&self, req: Request<ListContainersRequest>) -> Res<ListContainersResponse> {
        let all = req.get_ref().all;
        self.note(&req, format!("ps {all}"));
        let mut containers = vec![ContainerSummary {
            id: "1".repeat(64),
            names: vec!["web".into()],
            image: "busybox".into(),
            image_id: "sha256:fff".into(),
            command: "sleep 1000".into(),
            created: now() - 600,
            state: "running".into(),
            exit_code: 0,
            started_at: rfc3339_ago(90),
            finished_at: String::new(),
            labels: Default::default(),
            ports: String::new(),
        }];
        if all {
            containers.push(ContainerSummary {
                id: "2".repeat(64),
                names: vec!["done".into()],
                image: format!("sha256:{}", "e".repeat(64)),
                image_id: "sha256:eee".into(),
                command: "echo hello from python".into(),
                created: now() - 3 * 3600,
                state: "exited".into(),
                exit_code: 0,
                started_at: rfc3339_ago(5000),
                finished_at: rfc3339_ago(4000),
                labels: Default::default(),
                ports: String::new(),
            });
        }
        Ok(Response::new(ListContainersResponse { containers }))
    }
    async fn inspect(&self, req: Request<ContainerRef>) -> Res<InspectResponse> {
        let id = req.get_ref().id.clone();
        self.note(&req, format!("inspect {id}"));
        if id != "web" {
            return Err(not_found(&id));
        }
        Ok(Response::new(InspectResponse {
            json: r#"{"Id":"111","Name":"/web","State":{"Status":"running","Pid":42}}"#.into(),
        }))
    }
    type LogsStream = BoxStream<LogEntry>;
    async fn logs(&self, req: Request<LogsRequest>) -> Res<Self::LogsStream> {
        let r = req.get_ref().clone();
        self.note(&req, format!("logs {} {} {}", r.id, r.follow, r.tail));
        let entries = vec![
            Ok(LogEntry {
                stream: Stream::Stdout as i32,
                data: b"a\n".to_vec(),
                time: "2024-01-01T00:00:00.000000001Z".into(),
            }),
            Ok(LogEntry {
                stream: Stream::Stderr as i32,
                data: b"b\n".to_vec(),
                time: "2024-01-01T00:00:00.000000002Z".into(),
            }),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(entries))))
    }
    type AttachStream = BoxStream<AttachResponse>;
    async fn attach(&self, req: Request<AttachRequest>) -> Res<Self::AttachStream> {
        let id = req.get_ref().id.clone();
        self.note(&req, format!("attach {id}"));
        let started = self.started.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            // Output only exists once the container runs.
            started.notified().await;
            let out = |stream: Stream, data: &[u8]| AttachResponse {
                payload: Some(attach_response::Payload::Output(LogEntry {
                    stream: stream as i32,
                    data: data.to_vec(),
                    time: String::new(),
                })),
            };
            let _ = tx.send(Ok(out(Stream::Stdout, b"out\n"))).await;
            let _ = tx.send(Ok(out(Stream::Stderr, b"err\n"))).await;
            let exit = AttachResponse {
                payload: Some(attach_response::Payload::Exit(ExitStatus {
                    status_code: 7,
                    error: String::new(),
                })),
            };
            let _ = tx.send(Ok(exit)).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[tonic::async_trait]
impl System for Fake {
    async fn version(&self, req: Request<Empty>) -> Res<VersionResponse> {
        self.note(&req, "version".into());
        Ok(Response::new(VersionResponse {
            version: "9.9.9".into(),
            api_version: "v1".into(),
            git_commit: "abc".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            kernel_version: "6.1.0".into(),
        }))
    }
    async fn ping(&self, _req: Request<Empty>) -> Res<Empty> {
        Ok(Response::new(Empty {}))
    }
}

struct Server {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    fake: Fake,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("gw.sock");
        let fake = Fake::default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let incoming = {
            let _g = runtime.enter();
            berth_common::unix_incoming(&sock).unwrap()
        };
        let f = fake.clone();
        runtime.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(ImagesServer::new(f.clone()))
                .add_service(ContainersServer::new(f.clone()))
                .add_service(SystemServer::new(f))
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        Server {
            _dir: dir,
            sock,
            fake,
            _runtime: runtime,
        }
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.berth_with_stdin(args, None)
    }

    fn berth_with_stdin(&self, args: &[&str], stdin: Option<&Path>) -> Output {
        let host = format!("unix://{}", self.sock.display());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(["-H", &host, "--namespace", "ns1"])
            .args(args)
            .env_remove("BERTH_HOST")
            .env_remove("BERTH_NAMESPACE")
            .env("BERTH_TEST_VAR", "from-cli");
        if let Some(p) = stdin {
            cmd.stdin(Stdio::from(std::fs::File::open(p).unwrap()));
        }
        cmd.output().unwrap()
    }

    fn calls(&self) -> Vec<String> {
        self.fake.log.lock().unwrap().calls.clone()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn run_attaches_before_start_and_exits_with_the_code() {
    let s = Server::start();
    let o = s.berth(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "-e",
        "BERTH_TEST_VAR",
        "-e",
        "BERTH_UNSET_VAR",
        "busybox",
        "sh",
        "-c",
        "echo hi",
    ]);
    assert_eq!(o.status.code(), Some(7), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
    let id = "c".repeat(64);
    assert_eq!(
        s.calls(),
        [
            "create".to_string(),
            format!("attach {id}"),
            format!("start {id}")
        ]
    );
    let log = s.fake.log.lock().unwrap();
    let create = log.create.clone().unwrap();
    assert_eq!(create.cmd.unwrap().values, ["sh", "-c", "echo hi"]);
    assert!(create.auto_remove);
    assert_eq!(create.env, ["A=1", "BERTH_TEST_VAR=from-cli"]);
    assert!(log.namespaces.iter().all(|n| n == "ns1"));
    // One command is one trace: every call carries the same trace ID.
    let trace_ids: Vec<&str> = log
        .traceparents
        .iter()
        .map(|t| t.split('-').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(trace_ids.len(), 3);
    assert_eq!(
        trace_ids[0].len(),
        32,
        "traceparents: {:?}",
        log.traceparents
    );
    assert!(
        trace_ids.iter().all(|t| *t == trace_ids[0]),
        "{:?}",
        log.traceparents
    );
}

#[test]
fn run_detached_and_create_print_the_id() {
    let s = Server::start();
    let o = s.berth(&["run", "-d", "busybox"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), format!("{}\n", "c".repeat(64)));
    let o = s.berth(&["create", "--name", "x", "busybox"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), format!("{}\n", "c".repeat(64)));
    assert_eq!(
        s.calls().iter().filter(|c| c.starts_with("attach")).count(),
        0
    );
}

#[test]
fn run_errors_use_docker_codes() {
    let s = Server::start();
    let o = s.berth(&["run", "nope"]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        "berth: Error response from daemon: No such image: nope.\nSee 'berth run --help'.\n"
    );
    let o = s.berth(&["run", "busybox", "missing"]);
    assert_eq!(o.status.code(), Some(127), "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("executable file not found"),
        "{}",
        stderr(&o)
    );
    let o = s.berth(&["run", "--bogus", "busybox"]);
    assert_eq!(o.status.code(), Some(125));
    let o = s.berth(&["create", "--stop-timeout", "x", "busybox"]);
    assert_eq!(o.status.code(), Some(125));
}

#[test]
fn several_containers_continue_after_errors() {
    let s = Server::start();
    let o = s.berth(&["rm", "-f", "a", "bad", "b"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "a\nb\n");
    assert_eq!(
        stderr(&o),
        "Error response from daemon: No such container: bad\n"
    );
    assert!(s.calls().contains(&"rm a true false".to_string()));

    let o = s.berth(&["stop", "-t", "3", "a"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "a\n".into()));
    assert!(s.calls().contains(&"stop a Some(3)".to_string()));
    let o = s.berth(&["kill", "-s", "HUP", "a"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "a\n".into()));
    assert!(s.calls().contains(&"kill a HUP".to_string()));
    let o = s.berth(&["wait", "a", "bad"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(1), "5\n".into()));
    let o = s.berth(&["start", "a"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "a\n".into()));
}

#[test]
fn start_attach_exits_with_the_container_code() {
    let s = Server::start();
    let o = s.berth(&["start", "-a", "web"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(s.calls(), ["attach web", "start web"]);
}

#[test]
fn ps_table_like_docker() {
    let s = Server::start();
    let o = s.berth(&["ps", "-a"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    // Columns: the widest cell plus 3 spaces (at least 10), like docker's
    // tabwriter; PORTS is empty. (Times are far from unit boundaries, so a
    // slow run does not change the text.)
    let expected = [
        "CONTAINER ID   IMAGE          COMMAND                  CREATED          STATUS                         PORTS     NAMES",
        "111111111111   busybox        \"sleep 1000\"             10 minutes ago   Up About a minute                        web",
        "222222222222   eeeeeeeeeeee   \"echo hello from pyt…\"   3 hours ago      Exited (0) About an hour ago             done",
    ];
    assert_eq!(lines, expected);

    let o = s.berth(&["ps", "-q"]);
    assert_eq!(stdout(&o), "111111111111\n");
    // A status filter (and --latest) look at all containers, like docker.
    let o = s.berth(&["ps", "-q", "-f", "status=exited"]);
    assert_eq!(stdout(&o), "222222222222\n");
    let o = s.berth(&["ps", "-lq"]);
    assert_eq!(stdout(&o), "111111111111\n");
    let o = s.berth(&["ps", "-aq", "--filter", "name=do"]);
    assert_eq!(stdout(&o), "222222222222\n");
    let o = s.berth(&["ps", "--format", "{{.Names}}: {{.Status}}"]);
    assert_eq!(stdout(&o), "web: Up About a minute\n");
}

#[test]
fn images_table_like_docker() {
    let s = Server::start();
    let o = s.berth(&["images"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let expected = "\
REPOSITORY          TAG       IMAGE ID       CREATED         SIZE
busybox             latest    ffffffffffff   2 minutes ago   4.26MB
localhost:5000/bb   1         ffffffffffff   2 minutes ago   4.26MB
<none>              <none>    0123456789ab   3 days ago      999B
";
    assert_eq!(stdout(&o), expected);
    let o = s.berth(&["image", "ls", "-q"]);
    assert_eq!(stdout(&o), "ffffffffffff\nffffffffffff\n0123456789ab\n");
    let o = s.berth(&["images", "-q", "-f", "dangling=true"]);
    assert_eq!(stdout(&o), "0123456789ab\n");
    let o = s.berth(&["images", "--format", "{{.Repository}}:{{.Tag}}", "busybox"]);
    assert_eq!(stdout(&o), "busybox:latest\n");
}

#[test]
fn inspect_prints_documents_and_templates() {
    let s = Server::start();
    let o = s.berth(&["image", "inspect", "busybox"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("[\n    {\n        \"Id\": \"sha256:fff\",\n"));
    let o = s.berth(&[
        "image",
        "inspect",
        "-f",
        "{{join .Config.Env \",\"}} {{index .Config.Labels \"k\"}}",
        "busybox",
    ]);
    assert_eq!(stdout(&o), "PATH=/bin,A=1 v\n");

    // Top level: container first, then image.
    let o = s.berth(&["inspect", "--format", "{{.State.Pid}}", "web"]);
    assert_eq!(stdout(&o), "42\n");
    let o = s.berth(&["inspect", "-f", "{{json .RepoTags}}", "busybox"]);
    assert_eq!(stdout(&o), "[\"busybox:latest\"]\n");
    let o = s.berth(&["inspect", "nothing"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "[]\n");
    assert_eq!(stderr(&o), "Error: No such object: nothing\n");
}

#[test]
fn import_streams_chunks_and_prints_the_id() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("rootfs.tar");
    std::fs::write(&tar, vec![7u8; 256 * 1024 * 2 + 5]).unwrap();
    let o = s.berth_with_stdin(
        &["import", "-c", "CMD [\"sh\"]", "-m", "msg", "-", "bb:1"],
        Some(&tar),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("sha256:{}\n", "a".repeat(64)));
    {
        let log = s.fake.log.lock().unwrap();
        assert_eq!(log.import_chunks, [262144, 262144, 5]);
        let h = log.import_header.clone().unwrap();
        assert_eq!(
            (h.reference.as_str(), h.message.as_str(), h.source.as_str()),
            ("bb:1", "msg", "-")
        );
        assert_eq!(h.changes, ["CMD [\"sh\"]"]);
    }
    let o = s.berth(&["image", "import", tar.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn rmi_tag_logs_version() {
    let s = Server::start();
    let o = s.berth(&["rmi", "busybox", "other"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "Untagged: busybox:latest\nDeleted: sha256:fff\n"
    );
    assert_eq!(
        stderr(&o),
        "Error response from daemon: No such image: other\n"
    );

    let o = s.berth(&["tag", "busybox", "bb:2"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(s.calls().contains(&"tag busybox bb:2".to_string()));

    let o = s.berth(&["logs", "-t", "--tail", "5", "web"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "2024-01-01T00:00:00.000000001Z a\n");
    assert_eq!(stderr(&o), "2024-01-01T00:00:00.000000002Z b\n");
    assert!(s.calls().contains(&"logs web false 5".to_string()));

    let o = s.berth(&["version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("Server: berth\n Engine:\n  Version:          9.9.9\n"));
}

#[test]
fn no_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("unix://{}/none.sock", dir.path().display());
    let berth = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["-H", &host])
            .args(args)
            .output()
            .unwrap()
    };
    let msg = format!("Cannot connect to the berth daemon at {host}. Is the berth daemon running?");
    let o = berth(&["ps"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), format!("{msg}\n"));
    let o = berth(&["run", "busybox"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).starts_with(&format!("berth: {msg}")));
}
