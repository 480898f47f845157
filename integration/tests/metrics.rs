//! The gateway's Prometheus endpoint (--metrics-addr): scraped directly,
//! and by Debian's real Prometheus server, whose query API must then return
//! a running container's memory usage.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_integration::{require_root, unique, Mode, Stack};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP response: status, headers (names lower-case), body.
struct Http {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over HTTP/1.0 (so no chunked encoding comes back).
fn http_get(port: u16, path: &str) -> std::io::Result<Http> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP header end in {text:?}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Http {
        status,
        headers,
        body: body.to_string(),
    })
}

/// The value of the sample `metric{labels...}` whose labels include all of
/// `want`, if the exposition has one.
fn sample(text: &str, metric: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        (name == metric
            && want
                .iter()
                .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\""))))
        .then(|| value.parse().ok())
        .flatten()
    })
}

/// Debian's Prometheus server, killed (and its data removed) on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(config: &str) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("berth-prom-")
            .tempdir()
            .unwrap();
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {PROMETHEUS} (apt-get install prometheus): {e}"));
        Prometheus { child, port, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The result vector of an instant query (empty while there is none).
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let mut q = String::new();
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                q.push(b as char);
            } else {
                q.push_str(&format!("%{b:02X}"));
            }
        }
        let Ok(r) = http_get(self.port, &format!("/api/v1/query?query={q}")) else {
            return Vec::new(); // not listening yet
        };
        if r.status != 200 {
            return Vec::new();
        }
        let v: serde_json::Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("query answer is not JSON ({e}): {}", r.body));
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("prometheus log:\n{}", self.log());
        }
    }
}

fn scrape(port: u16) -> String {
    let r = http_get(port, "/metrics").expect("scrape berth's metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The container's series as berth serves them, and the API counter.
fn check_scrape(s: &Stack, port: u16, name: &str, id: &str, image: &str) {
    let r = http_get(port, "/metrics").expect("scrape berth's metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.body;
    let labels = [("name", name), ("id", id), ("image", image)];
    for metric in [
        "container_cpu_usage_seconds_total",
        "container_cpu_user_seconds_total",
        "container_cpu_system_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_spec_memory_limit_bytes",
        "container_processes",
        "container_threads",
        "container_start_time_seconds",
    ] {
        assert!(
            sample(&text, metric, &labels).is_some(),
            "no {metric} for {name} in\n{text}\n{}",
            s.daemon_logs()
        );
    }
    let mem = sample(&text, "container_memory_usage_bytes", &labels).unwrap_or(0.0);
    assert!(mem > 0.0, "memory usage {mem} in\n{text}");
    // `sleep` is one process; --memory 64m is the cgroup's limit.
    assert_eq!(sample(&text, "container_processes", &labels), Some(1.0));
    assert_eq!(
        sample(&text, "container_spec_memory_limit_bytes", &labels),
        Some((64u64 << 20) as f64)
    );
    // The default bridge gives it eth0.
    assert!(
        sample(
            &text,
            "container_network_receive_bytes_total",
            &[("name", name), ("interface", "eth0")]
        )
        .is_some(),
        "no network series in\n{text}"
    );
    assert_eq!(
        sample(
            &text,
            "berth_containers",
            &[("namespace", "default"), ("state", "running")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "berth_images", &[("namespace", "default")]),
        Some(1.0)
    );
    let creates = sample(
        &text,
        "berth_api_requests_total",
        &[
            ("method", "/berth.gateway.v1.Containers/Create"),
            ("code", "OK"),
        ],
    );
    assert_eq!(creates, Some(1.0), "{text}");
    assert!(
        sample(
            &text,
            "berth_api_request_duration_seconds_count",
            &[("method", "/berth.gateway.v1.Containers/Create")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // Only /metrics is served.
    assert_eq!(http_get(port, "/").unwrap().status, 404);
    assert_eq!(http_get(port, "/metricsx").unwrap().status, 404);
}

/// The loop device (/dev/loopN) backing a size-limited volume of the
/// stack whose root is `root`.
fn loop_device_of(root: &Path, vol: &str) -> String {
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(backing) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = Path::new(backing.trim());
        if backing.starts_with(root) && backing.components().any(|c| c.as_os_str() == vol) {
            return format!("/dev/{name}");
        }
    }
    panic!("no loop device backs volume {vol} under {}", root.display());
}

fn run_sleeper(s: &Stack, name: &str, image: &str) -> String {
    s.berth(&[
        "run", "-d", "--name", name, "--memory", "64m", image, "sleep", "1000",
    ])
    .ok();
    s.id_of(name)
}

#[test]
fn prometheus_scrapes_a_running_containers_memory() {
    require_root!();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let s = Stack::start_with_env(Mode::AllInOne, &[("BERTH_METRICS_ADDR", addr.as_str())]);
    let image = unique("metrics-bb");
    s.import_busybox(&image);
    let name = unique("metrics");
    let id = run_sleeper(&s, &name, &image);
    let image_label = s
        .berth(&["inspect", "-f", "{{.Config.Image}}", &name])
        .ok()
        .trim()
        .to_string();
    check_scrape(&s, port, &name, &id, &image_label);

    // Debian's Prometheus scrapes berth every second; its query API
    // returns the container's memory usage.
    let prom = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: berth\n    scrape_timeout: 1s\n    \
         static_configs:\n      - targets: ['{addr}']\n"
    ));
    let query = format!("container_memory_usage_bytes{{name=\"{name}\"}}");
    let deadline = Instant::now() + Duration::from_secs(90);
    let found = loop {
        let result = prom.query(&query);
        if let Some(r) = result.first() {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "prometheus has no {query} (up: {:?}); its log:\n{}",
            prom.query("up"),
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let value: f64 = found["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {found}"));
    assert!(value > 0.0, "{found}");
    assert_eq!(found["metric"]["id"], id.as_str(), "{found}");
    assert_eq!(found["metric"]["image"], image_label.as_str(), "{found}");
    assert_eq!(found["metric"]["job"], "berth", "{found}");
    drop(prom);

    // Block I/O: direct I/O on a size-limited volume (an ext4 image on a
    // loop device of its own), per device as cAdvisor reports it. cgroup
    // v1's blkio counters (with blk-mq, the throttle ones) only count I/O
    // to a device that has a throttle limit somewhere: the container gets
    // a generous one on its volume's device.
    let vol = unique("metrics-vol");
    s.berth(&["volume", "create", "--opt", "size=16m", &vol])
        .ok();
    let loopdev = loop_device_of(&s.root, &vol);
    let io_name = unique("metrics-io");
    s.berth(&[
        "run",
        "-d",
        "--name",
        &io_name,
        "--device-write-bps",
        &format!("{loopdev}:1gb"),
        "--device-read-bps",
        &format!("{loopdev}:1gb"),
        "-v",
        &format!("{vol}:/data"),
        &image,
        "sh",
        "-c",
        "dd if=/dev/zero of=/data/f bs=1M count=3 oflag=direct && \
         dd if=/data/f of=/dev/null bs=1M iflag=direct && echo io-done; sleep 1000",
    ])
    .ok();
    s.wait_until("the I/O container has done its I/O", || {
        s.berth(&["logs", &io_name]).stdout.contains("io-done")
    });
    let text = scrape(port);
    let io = |metric: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{metric}{{"))
                    && l.contains(&format!("name=\"{io_name}\""))
                    && l.contains("device=\"/dev/loop")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>()
    };
    let mib3 = (3u64 << 20) as f64;
    assert!(io("container_fs_writes_bytes_total") >= mib3, "{text}");
    assert!(io("container_fs_reads_bytes_total") >= mib3, "{text}");
    assert!(io("container_fs_writes_total") >= 1.0, "{text}");
    assert!(io("container_fs_reads_total") >= 1.0, "{text}");
    s.berth(&["rm", "-f", &io_name]).ok();

    // Stopped: its series go, the state counts follow.
    s.berth(&["stop", "-t", "1", &name]).ok();
    let text = scrape(port);
    assert_eq!(
        sample(&text, "container_memory_usage_bytes", &[("name", &name)]),
        None,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "berth_containers",
            &[("namespace", "default"), ("state", "exited")]
        ),
        Some(1.0)
    );
}

#[test]
fn the_split_gateway_serves_metrics() {
    require_root!();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // Every daemon gets the variable; only the gateway listens on it.
    let s = Stack::start_with_env(Mode::Split, &[("BERTH_METRICS_ADDR", addr.as_str())]);
    let image = unique("metrics-bb");
    s.import_busybox(&image);
    let name = unique("metrics");
    let id = run_sleeper(&s, &name, &image);
    let image_label = s
        .berth(&["inspect", "-f", "{{.Config.Image}}", &name])
        .ok()
        .trim()
        .to_string();
    check_scrape(&s, port, &name, &id, &image_label);
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn the_example_prometheus_config_is_valid() {
    let config = repo_file("deploy/prometheus.yml");
    let out = Command::new(PROMTOOL)
        .args(["check", "config"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("run {PROMTOOL} (apt-get install prometheus): {e}"));
    assert!(
        out.status.success(),
        "promtool check config {}: {}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It scrapes berth's default metrics address.
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("127.0.0.1:9323"), "{text}");
}
