//! Networking end to end, with real traffic: bridges and veths, masquerade,
//! isolation, published ports (from another host's namespace, from the
//! host's 127.0.0.1, hairpin), connect/disconnect, container: mode, and
//! teardown that leaves nothing.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use berth_integration::net::{sh, OtherHost, SubnetLease};
use berth_integration::{require_root, Mode, Stack};

/// A busybox web server answering `body` on port 80.
fn serve_args(body: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("mkdir -p /w && echo {body} > /w/index.html && exec httpd -f -p 80 -h /w"),
    ]
}

/// GET / from the host; the body, or None when it cannot connect.
fn get(ip: Ipv4Addr, port: u16) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split("\r\n\r\n").nth(1).map(|b| b.trim().to_string())
}

/// GET / with busybox nc inside a container (exec); the body or "".
fn get_in(stack: &Stack, container: &str, ip: &str, port: u16) -> String {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port} | tail -n 1");
    stack
        .berth(&["exec", container, "sh", "-c", &script])
        .stdout
        .trim()
        .to_string()
}

/// GET / from another host's namespace (the host's busybox nc).
fn get_from(host: &OtherHost, ip: &str, port: u16) -> String {
    let mut c = host.cmd(&["busybox", "nc", "-w", "3", ip, &port.to_string()]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = c.spawn().expect("run nc in the other host");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string()
}

fn inspect(stack: &Stack, c: &str, f: &str) -> String {
    stack
        .berth(&["inspect", "-f", f, c])
        .ok()
        .trim()
        .to_string()
}

fn ping(stack: &Stack, c: &str, ip: &str) -> bool {
    stack
        .berth(&["exec", c, "ping", "-c", "1", "-W", "2", ip])
        .code
        == 0
}

fn run_d(stack: &Stack, args: &[&str]) -> String {
    let mut a = vec!["run", "-d"];
    a.extend_from_slice(args);
    let r = stack.berth(&a);
    assert_eq!(r.code, 0, "{r:?}\n{}", stack.daemon_logs());
    r.stdout.trim().to_string()
}

fn links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The links this stack's berth-network made: its bridges (alias
/// "berth:<table>") and the ports of those bridges (the containers' veths).
/// Other tests run beside this one, so the host's whole list cannot be
/// compared.
fn stack_links(stack: &Stack) -> Vec<String> {
    let alias = format!("berth:{}", stack.nft_table);
    let mut bridges = Vec::new();
    for n in links() {
        let a = std::fs::read_to_string(format!("/sys/class/net/{n}/ifalias")).unwrap_or_default();
        if a.trim() == alias {
            bridges.push(n);
        }
    }
    let mut out = bridges.clone();
    for n in links() {
        let master = std::fs::read_link(format!("/sys/class/net/{n}/master"))
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
        if master.is_some_and(|m| bridges.contains(&m)) {
            out.push(n);
        }
    }
    out.sort();
    out
}

fn table(stack: &Stack) -> String {
    sh(&["nft", "list", "table", "inet", &stack.nft_table])
}

fn conntrack_lines(ip: &str) -> usize {
    let needle = format!("={ip} ");
    std::fs::read_to_string("/proc/net/nf_conntrack")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

#[test]
fn default_bridge_containers_talk_and_go_out_through_masquerade() {
    require_root!();
    let stack = Stack::start(Mode::AllInOne);
    stack.import_busybox("bb");
    let other = OtherHost::new();
    let a = run_d(&stack, &["--name", "ca", "bb", "sleep", "300"]);
    let mut web = vec!["--name", "web", "bb"];
    let srv = serve_args("hello-bridge");
    web.extend(srv.iter().map(String::as_str));
    run_d(&stack, &web);
    let a_ip = inspect(&stack, "ca", "{{.NetworkSettings.IPAddress}}");
    let web_ip = inspect(&stack, "web", "{{.NetworkSettings.IPAddress}}");
    let gw = inspect(&stack, "ca", "{{.NetworkSettings.Gateway}}");
    // Addresses come from the default bridge's subnet; the gateway is .1.
    assert_eq!(gw, stack.bridge_subnet.ip(1).to_string());
    for ip in [&a_ip, &web_ip] {
        let ip: Ipv4Addr = ip.parse().unwrap();
        assert_eq!(ip.octets()[..3], stack.bridge_subnet.base.octets()[..3]);
        assert_ne!(ip, stack.bridge_subnet.ip(1));
    }
    assert_ne!(a_ip, web_ip);
    assert_eq!(
        inspect(
            &stack,
            "ca",
            "{{.NetworkSettings.Networks.bridge.IPAddress}}"
        ),
        a_ip
    );
    // The bridge has the gateway address.
    let addr = sh(&["ip", "-o", "-4", "addr", "show", "dev", &stack.bridge]);
    assert!(addr.contains(&format!("{gw}/24")), "{addr}");
    // Ping and TCP between containers.
    assert!(ping(&stack, "ca", &web_ip));
    assert_eq!(get_in(&stack, "ca", &web_ip, 80), "hello-bridge");
    // hosts and hostname: the container's own address.
    let hosts = stack.berth(&["exec", "ca", "cat", "/etc/hosts"]).ok();
    assert!(hosts.contains(&format!("{a_ip}\t{}", &a[..12])), "{hosts}");
    // Out to another host: it sees the host's address (masquerade).
    let port = 40123;
    let mut listener = other
        .cmd(&[
            "python3",
            "-c",
            &format!(
                "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);\
                 s.bind(('0.0.0.0',{port}));s.listen();print('ready',flush=True);c,a=s.accept();\
                 print(a[0],flush=True);c.sendall(b'hi-from-outside\\n');c.close()"
            ),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = listener.stdout.take().unwrap();
    let mut first = [0u8; 6];
    out.read_exact(&mut first).unwrap();
    let got = stack
        .berth(&[
            "exec",
            "ca",
            "sh",
            "-c",
            &format!("nc -w 3 {} {port} </dev/null", other.ip()),
        ])
        .stdout;
    assert_eq!(got.trim(), "hi-from-outside");
    let mut seen = String::new();
    out.read_to_string(&mut seen).unwrap();
    let _ = listener.wait();
    assert_eq!(seen.trim(), other.host_ip().to_string());
    // Teardown: no veth, netns, address or conntrack entry survives.
    let host_if_count = |stack: &Stack| {
        sh(&["ip", "-o", "link", "show", "master", &stack.bridge])
            .lines()
            .count()
    };
    assert_eq!(host_if_count(&stack), 2);
    let a_full = stack.id_of("ca");
    let ns_file = stack.state.join("netns").join(&a_full);
    assert!(ns_file.exists());
    assert!(conntrack_lines(&a_ip) > 0, "the test's flows are tracked");
    stack.berth(&["rm", "-f", "ca", "web"]).ok();
    assert_eq!(host_if_count(&stack), 0);
    assert!(!ns_file.exists());
    assert_eq!(conntrack_lines(&a_ip), 0);
    assert_eq!(conntrack_lines(&web_ip), 0);
    // The addresses are free again: a new container may get one of them.
    let fresh = inspect(
        &stack,
        &run_d(&stack, &["bb", "sleep", "300"]),
        "{{.NetworkSettings.IPAddress}}",
    );
    assert!(!fresh.is_empty());
}

/// A free TCP port on the host (bound and released).
fn free_port() -> u16 {
    TcpListener::bind(("0.0.0.0", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn published_ports_answer_from_everywhere_and_go_with_the_container() {
    require_root!();
    let stack = Stack::start(Mode::AllInOne);
    stack.import_busybox("bb");
    let other = OtherHost::new();
    let (p_all, p_lo, p_udp, p_any) = (free_port(), free_port(), free_port(), free_port());
    let srv = serve_args("hello-port");
    let mut args = vec![
        "--name".to_string(),
        "web".into(),
        "-p".into(),
        format!("{p_all}:80"),
        "-p".into(),
        format!("127.0.0.1:{p_lo}:80"),
        "-p".into(),
        "81".into(),
        "-p".into(),
        format!("0.0.0.0:{p_any}:80"),
        "bb".into(),
    ];
    args.extend(srv);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run_d(&stack, &a);
    let web_ip = inspect(&stack, "web", "{{.NetworkSettings.IPAddress}}");
    // From the host: its own addresses and 127.0.0.1.
    assert_eq!(
        get(Ipv4Addr::LOCALHOST, p_all).as_deref(),
        Some("hello-port")
    );
    assert_eq!(
        get(Ipv4Addr::LOCALHOST, p_lo).as_deref(),
        Some("hello-port")
    );
    assert_eq!(get(other.host_ip(), p_all).as_deref(), Some("hello-port"));
    // From another host.
    assert_eq!(
        get_from(&other, &other.host_ip().to_string(), p_all),
        "hello-port"
    );
    // A port bound to 127.0.0.1 is not reachable from outside.
    assert_eq!(get_from(&other, &other.host_ip().to_string(), p_lo), "");
    // 0.0.0.0 is every address.
    assert_eq!(
        get_from(&other, &other.host_ip().to_string(), p_any),
        "hello-port"
    );
    // Only published ports come in: a host that routes the container
    // subnet through us cannot reach the container's address directly.
    other.exec(&[
        "ip",
        "route",
        "add",
        &stack.bridge_subnet.cidr(),
        "via",
        &other.host_ip().to_string(),
    ]);
    assert_eq!(get_from(&other, &web_ip, 80), "");
    // Hairpin: a sibling through the gateway and the host address, and
    // the container to its own published port.
    run_d(&stack, &["--name", "sib", "bb", "sleep", "300"]);
    let gw = inspect(&stack, "web", "{{.NetworkSettings.Gateway}}");
    assert_eq!(get_in(&stack, "sib", &gw, p_all), "hello-port");
    assert_eq!(
        get_in(&stack, "sib", &other.host_ip().to_string(), p_all),
        "hello-port"
    );
    assert_eq!(
        get_in(&stack, "web", &other.host_ip().to_string(), p_all),
        "hello-port"
    );
    // berth port: the asked ports and the random one.
    let lines = stack.berth(&["port", "web"]).ok();
    assert!(
        lines.contains(&format!("80/tcp -> 0.0.0.0:{p_all}")),
        "{lines}"
    );
    assert!(
        lines.contains(&format!("80/tcp -> 127.0.0.1:{p_lo}")),
        "{lines}"
    );
    let random: u16 = stack
        .berth(&["port", "web", "81"])
        .ok()
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(random, 0);
    assert!(stack
        .berth(&["port", "web", "82"])
        .stderr
        .contains("No public port '82/tcp'"),);
    // The published port is held: nobody else can take it.
    assert!(TcpListener::bind(("0.0.0.0", p_all)).is_err());
    // A port someone holds gives docker's error, and nothing half-made.
    let held = TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let taken = held.local_addr().unwrap().port();
    let before = stack_links(&stack);
    let r = stack.berth(&[
        "run",
        "-d",
        "--name",
        "clash",
        "-p",
        &format!("{taken}:80"),
        "bb",
        "sleep",
        "300",
    ]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(&format!(
            "0.0.0.0:{taken} failed: port is already allocated"
        )),
        "{r:?}"
    );
    assert_eq!(stack_links(&stack), before, "a failed start leaves no veth");
    assert!(!table(&stack).contains(&format!("dport {taken}")));
    // A start that fails after the network was made (no such command)
    // leaves no address in inspect, and no veth.
    let r = stack.berth(&["run", "-d", "--name", "nocmd", "bb", "/no/such/command"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert_eq!(
        inspect(&stack, "nocmd", "{{.NetworkSettings.IPAddress}}"),
        ""
    );
    assert_eq!(stack_links(&stack), before, "no veth after a failed start");
    drop(held);
    // UDP, from another host: an echo server (the host's python, mounted
    // read-only; busybox has no UDP server) answers through the DNAT.
    let udp_port = p_udp;
    let echo = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                s.bind(('0.0.0.0',5353))\nwhile True:\n d,a=s.recvfrom(100)\n s.sendto(b'echo:'+d,a)\n";
    run_d(
        &stack,
        &[
            "--name",
            "udp",
            "-p",
            &format!("{udp_port}:5353/udp"),
            "-v",
            "/usr:/usr:ro",
            "-v",
            "/usr/lib:/lib:ro",
            "-v",
            "/lib64:/lib64:ro",
            "bb",
            "/usr/bin/python3",
            "-c",
            echo,
        ],
    );
    let ask = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(1)\n\
         s.sendto(b'udp-hello',('{}',{udp_port}))\nprint(s.recvfrom(100)[0].decode())",
        other.host_ip()
    );
    stack.wait_until("the UDP echo answers another host", || {
        let out = other.cmd(&["python3", "-c", &ask]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "echo:udp-hello"
    });
    // A host range for one container port takes its first free port.
    let held = TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let r0 = held.local_addr().unwrap().port();
    let range = format!("{r0}-{}:80", r0 + 9);
    run_d(
        &stack,
        &["--name", "rng", "-p", &range, "bb", "sleep", "300"],
    );
    let got: u16 = stack
        .berth(&["port", "rng", "80"])
        .ok()
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(got > r0 && got <= r0 + 9, "{got} is not in {range}");
    assert_eq!(
        inspect(&stack, "rng", "{{json .HostConfig.PortBindings}}"),
        format!(
            "{{\"80/tcp\":[{{\"HostIp\":\"\",\"HostPort\":\"{r0}-{}\"}}]}}",
            r0 + 9
        )
    );
    drop(held);
    // -P publishes the exposed ports to random ones.
    run_d(
        &stack,
        &[
            "--name", "all", "-P", "--expose", "7000", "--expose", "7001/udp", "bb", "sleep", "300",
        ],
    );
    let ports = inspect(&stack, "all", "{{json .NetworkSettings.Ports}}");
    assert!(
        ports.contains("\"7000/tcp\":[{\"HostIp\":\"0.0.0.0\",\"HostPort\":\""),
        "{ports}"
    );
    assert!(ports.contains("\"7001/udp\":[{"), "{ports}");
    // Removing the container removes its rules and frees its ports.
    let rules = table(&stack);
    assert!(
        rules.contains(&format!("tcp dport {p_all} dnat ip to {web_ip}:80")),
        "{rules}"
    );
    stack.berth(&["rm", "-f", "web"]).ok();
    let rules = table(&stack);
    assert!(!rules.contains(&web_ip), "{rules}");
    TcpListener::bind(("0.0.0.0", p_all)).expect("the port is free again");
    assert_eq!(get(Ipv4Addr::LOCALHOST, p_all), None);
    assert_eq!(conntrack_lines(&web_ip), 0);
}

#[test]
fn user_networks_are_isolated_and_internal_ones_have_no_way_out() {
    require_root!();
    let stack = Stack::start(Mode::Split);
    stack.import_busybox("bb");
    let other = OtherHost::new();
    let (l1, l2, l3) = (
        SubnetLease::take(),
        SubnetLease::take(),
        SubnetLease::take(),
    );
    let range = format!("{}/25", l1.ip(128));
    stack
        .berth(&[
            "network",
            "create",
            "--subnet",
            &l1.cidr(),
            "--ip-range",
            &range,
            "--label",
            "k=v",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "n1",
        ])
        .ok();
    stack
        .berth(&["network", "create", "--subnet", &l2.cidr(), "n2"])
        .ok();
    stack
        .berth(&[
            "network",
            "create",
            "--internal",
            "--subnet",
            &l3.cidr(),
            "n3",
        ])
        .ok();
    // network ls, filters and inspect.
    let names = stack
        .berth(&["network", "ls", "--format", "{{.Name}}"])
        .ok();
    for n in ["bridge", "host", "none", "n1", "n2", "n3"] {
        assert!(names.lines().any(|l| l == n), "{names}");
    }
    let custom = stack
        .berth(&[
            "network",
            "ls",
            "-q",
            "--filter",
            "type=custom",
            "--filter",
            "label=k=v",
        ])
        .ok();
    assert_eq!(custom.lines().count(), 1, "{custom}");
    assert_eq!(
        stack
            .berth(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}} {{(index .IPAM.Config 0).IPRange}} {{.Labels.k}} {{.Internal}}", "n1"])
            .ok()
            .trim(),
        format!("{} {range} v false", l1.cidr())
    );
    // The bridge, with the gateway address and the MTU.
    let br = stack
        .berth(&[
            "network",
            "inspect",
            "-f",
            "{{index .Options \"com.docker.network.bridge.name\"}}",
            "n1",
        ])
        .ok()
        .trim()
        .to_string();
    let link = sh(&["ip", "-o", "link", "show", "dev", &br]);
    assert!(link.contains("mtu 1400"), "{link}");
    // Containers: a static address, a dynamic one from the range.
    run_d(
        &stack,
        &[
            "--name",
            "a1",
            "--network",
            "n1",
            "--ip",
            &l1.ip(10).to_string(),
            "--network-alias",
            "svc",
            "bb",
            "sleep",
            "300",
        ],
    );
    run_d(
        &stack,
        &["--name", "a2", "--network", "n1", "bb", "sleep", "300"],
    );
    run_d(
        &stack,
        &["--name", "b1", "--network", "n2", "bb", "sleep", "300"],
    );
    run_d(
        &stack,
        &["--name", "i1", "--network", "n3", "bb", "sleep", "300"],
    );
    assert_eq!(
        inspect(&stack, "a1", "{{.NetworkSettings.Networks.n1.IPAddress}}"),
        l1.ip(10).to_string()
    );
    assert_eq!(
        inspect(
            &stack,
            "a1",
            "{{json .NetworkSettings.Networks.n1.Aliases}}"
        ),
        "[\"svc\"]"
    );
    let a2_ip: Ipv4Addr = inspect(&stack, "a2", "{{.NetworkSettings.Networks.n1.IPAddress}}")
        .parse()
        .unwrap();
    assert!(a2_ip.octets()[3] >= 128, "{a2_ip} is from the ip-range");
    let b1_ip = inspect(&stack, "b1", "{{.NetworkSettings.Networks.n2.IPAddress}}");
    let mtu = stack
        .berth(&["exec", "a1", "cat", "/sys/class/net/eth0/mtu"])
        .ok();
    assert_eq!(mtu.trim(), "1400");
    // Same network: reachable. Other network: not.
    assert!(ping(&stack, "a2", &l1.ip(10).to_string()));
    assert!(!ping(&stack, "a1", &b1_ip));
    assert!(!ping(&stack, "b1", &l1.ip(10).to_string()));
    // Both reach another host; the internal network has no way out.
    assert!(ping(&stack, "b1", &other.ip().to_string()));
    assert!(!ping(&stack, "i1", &other.ip().to_string()));
    assert!(!ping(&stack, "i1", &b1_ip));
    let route = stack.berth(&["exec", "i1", "ip", "route"]).ok();
    assert!(!route.contains("default"), "{route}");
    // Connect and disconnect, live.
    stack
        .berth(&[
            "network",
            "connect",
            "--ip",
            &l2.ip(50).to_string(),
            "n2",
            "a1",
        ])
        .ok();
    let addrs = stack.berth(&["exec", "a1", "ip", "-o", "-4", "addr"]).ok();
    assert!(
        addrs.contains(&format!("eth1    inet {}/24", l2.ip(50))),
        "{addrs}"
    );
    assert!(ping(&stack, "b1", &l2.ip(50).to_string()));
    let r = stack.berth(&["network", "connect", "n2", "a1"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("already exists in network n2"), "{r:?}");
    // rm refuses while containers are attached, and names them.
    let r = stack.berth(&["network", "rm", "n2"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("has active endpoints")
            && r.stderr.contains("a1")
            && r.stderr.contains("b1"),
        "{r:?}"
    );
    stack.berth(&["network", "disconnect", "n2", "a1"]).ok();
    let addrs = stack.berth(&["exec", "a1", "ip", "-o", "-4", "addr"]).ok();
    assert!(!addrs.contains("eth1"), "{addrs}");
    let r = stack.berth(&["network", "disconnect", "n2", "a1"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is not connected to network n2"), "{r:?}");
    // The freed static address can be taken; a taken one cannot.
    let r = stack.berth(&[
        "run",
        "-d",
        "--network",
        "n1",
        "--ip",
        &l1.ip(10).to_string(),
        "bb",
        "true",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("Address already in use"), "{r:?}");
    // Bad input: clear errors, nothing made.
    let before = stack_links(&stack);
    for (args, want) in [
        (
            vec!["network", "create", "--subnet", &l1.cidr()[..], "dup"],
            "overlaps",
        ),
        (
            vec!["network", "create", "--subnet", &l2.cidr()[..], "n1"],
            "already exists",
        ),
        (
            vec![
                "network",
                "create",
                "--subnet",
                "10.1.2.0/24",
                "--gateway",
                "10.1.3.1",
                "gwout",
            ],
            "no matching subnet for gateway",
        ),
        (
            vec!["network", "create", "--subnet", "nonsense", "bad"],
            "invalid subnet",
        ),
        (
            vec!["network", "create", "-d", "overlay", "ov"],
            "plugin \"overlay\" not found",
        ),
        (vec!["network", "rm", "nosuchnet"], "not found"),
        (vec!["network", "rm", "bridge"], "pre-defined network"),
        (
            vec!["run", "--network", "nosuchnet", "bb", "true"],
            "network nosuchnet not found",
        ),
        (
            vec!["run", "--network", "n1", "--ip", "192.0.2.99", "bb", "true"],
            "no configured subnet or ip-range contain",
        ),
        (
            vec!["run", "--ip", "10.9.9.9", "bb", "true"],
            "user defined networks only",
        ),
        (
            vec!["run", "-p", "80:80:80:80", "bb", "true"],
            "invalid port specification",
        ),
        (
            vec!["run", "-p", "70000:80", "bb", "true"],
            "invalid host port",
        ),
        (vec!["run", "-p", "80/sctp", "bb", "true"], "invalid proto"),
        (
            vec!["run", "--network", "none", "-p", "80", "bb", "true"],
            "conflicting options",
        ),
        (vec!["network", "connect", "nosuchnet", "a1"], "not found"),
    ] {
        let r = stack.berth(&args);
        assert_ne!(r.code, 0, "{args:?} succeeded");
        assert!(r.stderr.contains(want), "{args:?}: {r:?}");
    }
    assert_eq!(stack_links(&stack), before, "bad input made no link");
    // Removing the networks removes their bridges.
    stack.berth(&["rm", "-f", "a1", "a2", "b1", "i1"]).ok();
    stack.berth(&["network", "rm", "n1", "n2"]).ok();
    assert!(!links().contains(&br));
    let pruned = stack.berth(&["network", "prune", "-f"]).ok();
    assert!(pruned.contains("n3"), "{pruned}");
    let names = stack
        .berth(&["network", "ls", "--format", "{{.Name}}"])
        .ok();
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["bridge", "host", "none"]
    );
}

#[test]
fn container_mode_shares_a_namespace_and_links_name_their_targets() {
    require_root!();
    let stack = Stack::start(Mode::AllInOne);
    stack.import_busybox("bb");
    let srv = serve_args("hello-shared");
    let mut a = vec!["--name", "web", "bb"];
    a.extend(srv.iter().map(String::as_str));
    run_d(&stack, &a);
    run_d(
        &stack,
        &[
            "--name",
            "side",
            "--network",
            "container:web",
            "bb",
            "sleep",
            "300",
        ],
    );
    let ip = inspect(&stack, "web", "{{.NetworkSettings.IPAddress}}");
    let seen = stack
        .berth(&["exec", "side", "ip", "-o", "-4", "addr", "show", "eth0"])
        .ok();
    assert!(seen.contains(&format!("inet {ip}/")), "{seen}");
    assert_eq!(get_in(&stack, "side", "127.0.0.1", 80), "hello-shared");
    assert_eq!(
        inspect(&stack, "side", "{{.HostConfig.NetworkMode}}"),
        format!("container:{}", stack.id_of("web"))
    );
    // A container sharing a stopped container's network cannot start.
    stack
        .berth(&[
            "create",
            "--name",
            "late",
            "--network",
            "container:web",
            "bb",
            "true",
        ])
        .ok();
    stack.berth(&["stop", "-t", "1", "side", "web"]).ok();
    let r = stack.berth(&["start", "late"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("non running container"), "{r:?}");
    // --link on the default bridge, --add-host, --dns, --hostname.
    stack.berth(&["start", "web"]).ok();
    let ip = inspect(&stack, "web", "{{.NetworkSettings.IPAddress}}");
    run_d(
        &stack,
        &[
            "--name",
            "client",
            "--link",
            "web:site",
            "--add-host",
            "db.test:10.1.2.3",
            "--dns",
            "192.0.2.53",
            "--dns-search",
            "corp.test",
            "--dns-option",
            "ndots:2",
            "--hostname",
            "cli",
            "bb",
            "sleep",
            "300",
        ],
    );
    let hosts = stack.berth(&["exec", "client", "cat", "/etc/hosts"]).ok();
    assert!(hosts.contains(&format!("{ip}\tsite web ")), "{hosts}");
    assert!(hosts.contains("10.1.2.3\tdb.test"), "{hosts}");
    assert!(hosts.contains("\tcli\n"), "{hosts}");
    let resolv = stack
        .berth(&["exec", "client", "cat", "/etc/resolv.conf"])
        .ok();
    assert_eq!(
        resolv,
        "nameserver 192.0.2.53\nsearch corp.test\noptions ndots:2\n"
    );
    assert_eq!(
        stack.berth(&["exec", "client", "hostname"]).ok().trim(),
        "cli"
    );
    assert_eq!(get_in(&stack, "client", "site", 80), "hello-shared");
    let r = stack.berth(&["run", "--link", "nosuch:x", "bb", "true"]);
    assert!(
        r.stderr.contains("could not get container for nosuch"),
        "{r:?}"
    );
}

#[test]
fn networking_survives_restarts_and_a_flushed_table() {
    require_root!();
    let mut stack = Stack::start(Mode::Split);
    stack.import_busybox("bb");
    let lease = SubnetLease::take();
    stack
        .berth(&["network", "create", "--subnet", &lease.cidr(), "keep"])
        .ok();
    let port = free_port();
    let srv = serve_args("still-here");
    let mut a = vec![
        "--name".to_string(),
        "web".into(),
        "--network".into(),
        "keep".into(),
        "-p".into(),
        format!("{port}:80"),
        "bb".into(),
    ];
    a.extend(srv);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    run_d(&stack, &a);
    run_d(
        &stack,
        &["--name", "peer", "--network", "keep", "bb", "sleep", "300"],
    );
    let web_ip = inspect(&stack, "web", "{{.NetworkSettings.IPAddress}}");
    assert_eq!(
        get(Ipv4Addr::LOCALHOST, port).as_deref(),
        Some("still-here")
    );
    // Someone flushes our table, or deletes it: berth-network puts it back.
    sh(&["nft", "flush", "table", "inet", &stack.nft_table]);
    stack.wait_until("the table is restored after a flush", || {
        get(Ipv4Addr::LOCALHOST, port).as_deref() == Some("still-here")
    });
    sh(&["nft", "delete", "table", "inet", &stack.nft_table]);
    stack.wait_until("the table is restored after a delete", || {
        get(Ipv4Addr::LOCALHOST, port).as_deref() == Some("still-here")
    });
    // The whole stack is killed and restarted: containers keep their
    // network, the port stays published and held, records stay.
    stack.kill9_and_restart();
    assert!(ping(&stack, "peer", &web_ip));
    assert_eq!(
        get(Ipv4Addr::LOCALHOST, port).as_deref(),
        Some("still-here")
    );
    stack.wait_until("the port is held again", || {
        TcpListener::bind(("0.0.0.0", port)).is_err()
    });
    assert_eq!(
        inspect(&stack, "web", "{{.NetworkSettings.IPAddress}}"),
        web_ip
    );
    let r = stack.berth(&["network", "rm", "keep"]);
    assert!(r.stderr.contains("has active endpoints"), "{r:?}");
    // After the restart, rm still tears everything down.
    stack.berth(&["rm", "-f", "web", "peer"]).ok();
    assert!(!table(&stack).contains(&web_ip));
    assert_eq!(get(Ipv4Addr::LOCALHOST, port), None);
    let br = stack
        .berth(&[
            "network",
            "inspect",
            "-f",
            "{{index .Options \"com.docker.network.bridge.name\"}}",
            "keep",
        ])
        .ok();
    let ports = sh(&["ip", "-o", "link", "show", "master", br.trim()]);
    assert_eq!(ports.trim(), "", "no veth is left on the bridge");
    stack.berth(&["network", "rm", "keep"]).ok();
}

/// A DNS query for `name` (type A) over TCP from inside `container`, with
/// the host's python mounted read-only; the answered addresses.
fn tcp_dns_query(stack: &Stack, container: &str, server: &str, name: &str) -> Vec<String> {
    let script = format!(
        r#"
import socket, struct
q = struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0)
for part in '{name}'.split('.'):
    q += bytes([len(part)]) + part.encode()
q += b'\x00' + struct.pack('>HH', 1, 1)
s = socket.create_connection(('{server}', 53), timeout=3)
s.sendall(struct.pack('>H', len(q)) + q)
n = struct.unpack('>H', s.recv(2))[0]
r = b''
while len(r) < n:
    r += s.recv(n - len(r))
an = struct.unpack('>H', r[6:8])[0]
i = 12
while r[i] != 0:
    i += r[i] + 1
i += 5
def skip_name(i):
    while True:
        if r[i] & 0xc0 == 0xc0:
            return i + 2
        if r[i] == 0:
            return i + 1
        i += r[i] + 1
for _ in range(an):
    i = skip_name(i)
    t, c, ttl, l = struct.unpack('>HHIH', r[i:i+10])
    i += 10
    if t == 1:
        print('.'.join(str(b) for b in r[i:i+4]))
    i += l
"#
    );
    let r = stack.berth(&["exec", container, "/usr/bin/python3", "-c", &script]);
    r.stdout.lines().map(String::from).collect()
}

/// The first address of each answer of `count` lookups of `name` (with
/// busybox's nslookup, which asks the resolv.conf server itself; called by
/// its full name since the image's /usr/bin may be the host's).
fn first_answers(stack: &Stack, container: &str, name: &str, count: usize) -> Vec<String> {
    let script = format!(
        "for i in $(seq {count}); do busybox nslookup -type=a {name} | grep -A1 '^Name:' | sed -n 2p; done"
    );
    stack
        .berth(&["exec", container, "sh", "-c", &script])
        .ok()
        .lines()
        .filter_map(|l| l.strip_prefix("Address: ").map(|a| a.trim().to_string()))
        .collect()
}

#[test]
fn embedded_dns_answers_names_and_aliases_and_forwards_the_rest() {
    require_root!();
    // The upstream resolver: dnsmasq on loopback, knowing only up.test.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let up_port = probe.local_addr().unwrap().port();
    drop(probe);
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("dnsmasq.log");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _dnsmasq = Kill(
        std::process::Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                &format!("--port={up_port}"),
                "--address=/up.test/10.9.9.9",
                // Its own answers have TTL 0 unless told: then nothing may cache.
                "--local-ttl=300",
                "--log-queries",
                &format!("--log-facility={}", log.display()),
                "--user=root",
                "--pid-file=",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base)"),
    );
    let upstream = format!("127.0.0.1:{up_port}");
    let stack = Stack::start_with_env(Mode::AllInOne, &[("BERTH_DNS_UPSTREAM", upstream.as_str())]);
    stack.import_busybox("bb");
    let (l1, l2, l3) = (
        SubnetLease::take(),
        SubnetLease::take(),
        SubnetLease::take(),
    );
    stack
        .berth(&["network", "create", "--subnet", &l1.cidr(), "front"])
        .ok();
    stack
        .berth(&["network", "create", "--subnet", &l2.cidr(), "back"])
        .ok();
    stack
        .berth(&[
            "network",
            "create",
            "--internal",
            "--subnet",
            &l3.cidr(),
            "sealed",
        ])
        .ok();
    let py = [
        "-v",
        "/usr:/usr:ro",
        "-v",
        "/usr/lib:/lib:ro",
        "-v",
        "/lib64:/lib64:ro",
    ];
    for (name, alias) in [("web1", "svc"), ("web2", "svc")] {
        let mut a = vec![
            "--name",
            name,
            "--network",
            "front",
            "--network-alias",
            alias,
        ];
        a.extend_from_slice(&["bb", "sleep", "300"]);
        run_d(&stack, &a);
    }
    let mut c = vec!["--name", "client", "--network", "front"];
    c.extend_from_slice(&py);
    c.extend_from_slice(&["bb", "sleep", "300"]);
    run_d(&stack, &c);
    run_d(
        &stack,
        &[
            "--name",
            "hidden",
            "--network",
            "back",
            "bb",
            "sleep",
            "300",
        ],
    );
    run_d(
        &stack,
        &[
            "--name",
            "lonely",
            "--network",
            "sealed",
            "bb",
            "sleep",
            "300",
        ],
    );
    run_d(
        &stack,
        &[
            "--name",
            "lonely2",
            "--network",
            "sealed",
            "bb",
            "sleep",
            "300",
        ],
    );
    let ip = |c: &str, n: &str| {
        inspect(
            &stack,
            c,
            &format!("{{{{.NetworkSettings.Networks.{n}.IPAddress}}}}"),
        )
    };
    let (web1, web2, hidden) = (
        ip("web1", "front"),
        ip("web2", "front"),
        ip("hidden", "back"),
    );
    // resolv.conf points at the network's embedded DNS (its gateway).
    let resolv = stack
        .berth(&["exec", "client", "cat", "/etc/resolv.conf"])
        .ok();
    assert!(
        resolv.starts_with(&format!("nameserver {}\n", l1.ip(1))),
        "{resolv}"
    );
    // Names, short ids and aliases, over UDP.
    assert_eq!(
        first_answers(&stack, "client", "web1", 1),
        vec![web1.clone()]
    );
    let short = &stack.id_of("web2")[..12];
    assert_eq!(
        first_answers(&stack, "client", short, 1),
        vec![web2.clone()]
    );
    // The C library's resolver (ping) uses it too.
    assert!(ping(&stack, "client", "web2"));
    // Shared aliases answer in shuffled order: each address comes first.
    let firsts = first_answers(&stack, "client", "svc", 50);
    assert_eq!(firsts.len(), 50, "{firsts:?}");
    assert!(
        firsts.contains(&web1) && firsts.contains(&web2),
        "{firsts:?}"
    );
    assert!(
        firsts.iter().all(|a| *a == web1 || *a == web2),
        "{firsts:?}"
    );
    // TCP.
    let mut tcp = tcp_dns_query(&stack, "client", &l1.ip(1).to_string(), "svc");
    tcp.sort();
    let mut want = vec![web1.clone(), web2.clone()];
    want.sort();
    assert_eq!(tcp, want);
    // Names of other networks are not visible.
    let out = stack.berth(&["exec", "client", "busybox", "nslookup", "-type=a", "hidden"]);
    assert!(!out.stdout.contains(&hidden), "{out:?}");
    // Unknown names go upstream, and the answer is cached.
    for _ in 0..2 {
        assert_eq!(
            first_answers(&stack, "client", "up.test", 1),
            vec!["10.9.9.9"]
        );
    }
    let asked = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        asked.matches("query[A] up.test").count(),
        1,
        "one upstream query for two lookups:\n{asked}"
    );
    // A container only on an internal network resolves its neighbours,
    // never outside names.
    assert_eq!(
        first_answers(&stack, "lonely", "lonely2", 1),
        vec![ip("lonely2", "sealed")]
    );
    let out = stack.berth(&[
        "exec", "lonely", "busybox", "nslookup", "-type=a", "up.test",
    ]);
    assert!(!out.stdout.contains("10.9.9.9"), "{out:?}");
    // Nobody but the network's containers is answered (it is not an open
    // resolver): the host asking the gateway address gets nothing.
    let out = std::process::Command::new("timeout")
        .args([
            "3",
            "busybox",
            "nslookup",
            "-type=a",
            "up.test",
            &l1.ip(1).to_string(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && !text.contains("10.9.9.9"),
        "{text}"
    );
    // Nor are containers of the default bridge (no names there, as docker).
    run_d(&stack, &["--name", "outsider", "bb", "sleep", "300"]);
    let out = stack.berth(&[
        "exec",
        "outsider",
        "timeout",
        "3",
        "busybox",
        "nslookup",
        "-type=a",
        "web1",
        &l1.ip(1).to_string(),
    ]);
    assert!(!out.stdout.contains(&web1), "{out:?}");
    // The default bridge has no embedded DNS, as in docker.
    run_d(&stack, &["--name", "plain", "bb", "sleep", "300"]);
    let resolv = stack
        .berth(&["exec", "plain", "cat", "/etc/resolv.conf"])
        .ok();
    assert!(
        !resolv.contains(&stack.bridge_subnet.ip(1).to_string()),
        "{resolv}"
    );
    // A removed container's name goes.
    stack.berth(&["rm", "-f", "web1"]).ok();
    let firsts = first_answers(&stack, "client", "svc", 5);
    assert!(firsts.iter().all(|a| *a == web2), "{firsts:?}");
}
