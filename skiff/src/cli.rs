//! The command line as CONTRACT.md defines it: every subcommand and flag, with its default.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "skiff",
    version,
    about = "A compact, networking-first Kubernetes: API server, controllers, kubelet, eBPF service proxy, cluster DNS and ingress in one binary.",
    propagate_version = true
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SKIFF_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sandboxed single-node cluster in its own network namespace `skiff-NAME`, with no route out.
    Up(UpArgs),
    /// The all-in-one control plane and node on this host's own network (root).
    Server(ServerArgs),
    /// Node daemon (kubelet, proxy, DNS, ingress) against any Kubernetes API server.
    Agent(AgentArgs),
    /// Latency benchmarking: HTTP/1.1, HTTP/2, gRPC, TCP, UDP and DNS with HDR percentiles.
    Bench(BenchArgs),
    /// The built-in echo server behind the image `skiff.dev/echo`.
    Echo(EchoArgs),
    /// The built-in gRPC echo server behind the image `skiff.dev/grpc-echo`.
    #[command(hide = true)]
    GrpcEcho(GrpcEchoArgs),
    /// The built-in image `skiff.dev/pause`: sleeps until SIGTERM or SIGINT.
    #[command(hide = true)]
    Pause(PauseArgs),
    /// Check manifests offline: parse, default and validate them as the API server will.
    Validate(ValidateArgs),
    /// Bearer tokens for nodes and components (`skiff agent`).
    Token(TokenArgs),
    /// The controllers and the scheduler alone, against any Kubernetes API server, with leader
    /// election (Lease `kube-system/skiff-controller`).
    Controller(ControllerArgs),
    /// The service proxy of a running `skiff up`: `skiff proxy dump` prints its programmed table
    /// and data plane state.
    Proxy(ProxyArgs),
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    #[command(subcommand)]
    pub command: ProxyCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Print the programmed service table and the data plane's maps or listeners.
    Dump(ProxyDump),
}

#[derive(Debug, Args)]
pub struct ProxyDump {
    /// The admin endpoint of the `skiff up` to ask (its `--admin-addr`).
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub admin_addr: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token in the server's data dir and print it; a running server accepts it at once.
    Create(TokenCreate),
}

#[derive(Debug, Args)]
pub struct TokenCreate {
    /// Who the token authenticates as, e.g. `node-a` or `skiff-proxy`.
    pub name: String,

    /// Groups of the token's user (repeatable).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,

    /// The server's data directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SERVER_DATA_DIR)]
    pub data_dir: PathBuf,
}

/// `skiff server`'s data directory unless `--data-dir` says otherwise.
pub const DEFAULT_SERVER_DATA_DIR: &str = ".skiff/server";

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Manifest files or folders (`-` reads standard input).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub manifests: Vec<PathBuf>,

    /// Also read the folders inside `-f` folders (kubectl's `-R`).
    #[arg(short = 'R', long)]
    pub recursive: bool,

    /// Unknown fields: an error (strict), a warning (warn) or dropped (ignore), like kubectl.
    #[arg(long, value_enum, default_value_t = FieldValidation::Strict)]
    pub validate: FieldValidation,

    /// The NodePort range Services are validated against.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    pub service_node_port_range: std::ops::RangeInclusive<u16>,

    /// Print each valid object as defaulted JSON.
    #[arg(long)]
    pub print: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

/// `LOW-HIGH`, both valid ports, LOW ≤ HIGH.
pub fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("{text:?} is not a port range: write LOW-HIGH, e.g. 30000-32767");
    let (low, high) = text.split_once('-').ok_or_else(bad)?;
    let low: u16 = low.trim().parse().map_err(|_| bad())?;
    let high: u16 = high.trim().parse().map_err(|_| bad())?;
    if low == 0 || low > high {
        return Err(bad());
    }
    Ok(low..=high)
}

/// Flags shared by `up` and `server`: the control plane, its storage and the cluster defaults.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Where state, certificates, keys and the admin kubeconfig live
    /// [default: ./.skiff/NAME for `up`, ./.skiff/server for `server`].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// `sqlite://PATH` [default: sqlite://DIR/state.db] or `etcd://HOST:PORT[,HOST:PORT...]`.
    #[arg(long, value_name = "URL")]
    pub datastore: Option<String>,

    /// The AES-256-GCM key (32 bytes, base64) that encrypts Secrets at rest
    /// [default: DIR/encryption.key, generated on first start].
    #[arg(long, value_name = "FILE")]
    pub encryption_key_file: Option<PathBuf>,

    /// Kubernetes API (HTTPS) port; 0 picks a free one.
    #[arg(long, default_value_t = 6443)]
    pub api_port: u16,

    /// Manifests (files or folders) to apply once the cluster is ready.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub manifests: Vec<PathBuf>,

    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    #[arg(long, default_value = "10.96.0.0/12,fd00:10:96::/112")]
    pub service_cidr: String,

    /// ClusterIP of the `kube-system/kube-dns` Service.
    #[arg(long, default_value = "10.96.0.10")]
    pub cluster_dns: String,

    #[arg(long, default_value = "10.244.0.0/16,fd00:10:244::/56")]
    pub pod_cidr: String,

    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    pub service_node_port_range: std::ops::RangeInclusive<u16>,

    /// Addresses handed to LoadBalancer Services (they exist only inside the node's namespaces).
    #[arg(long, default_value = "172.18.255.0/24")]
    pub lb_pool: String,

    /// Also serve Ingresses of this IngressClass name, whatever its controller. The
    /// IngressClass `skiff` (controller `skiff.dev/ingress-controller`) is created at start,
    /// marked default, and always served.
    #[arg(long, default_value = "skiff")]
    pub ingress_class: String,

    /// Where requests no Ingress rule matches go (else 404): `[NAMESPACE/]NAME[:PORT]`, PORT a
    /// number or a port name; the namespace defaults to `default`, the port to 80.
    #[arg(long, value_name = "SERVICE", value_parser = skiff_ingress::BackendRef::parse)]
    pub default_backend: Option<skiff_ingress::BackendRef>,

    /// DNS record TTL in seconds (0-3600).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub dns_ttl: u32,

    /// Upstream DNS servers for non-cluster names [default: the host's resolv.conf].
    #[arg(long, value_name = "ADDR[,ADDR]")]
    pub dns_upstream: Option<String>,

    #[arg(long, value_enum, default_value_t = PodRecords::Insecure)]
    pub pods: PodRecords,

    #[arg(long, value_enum, default_value_t = ProxyMode::Ebpf)]
    pub proxy_mode: ProxyMode,

    /// YAML: image pattern → `builtin:NAME` or a command.
    #[arg(long, value_name = "FILE")]
    pub image_map: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Cluster name: the network namespace is `skiff-NAME`.
    #[arg(long, default_value = "skiff")]
    pub name: String,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Ingress HTTP port on the host loopback; 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,

    /// Ingress HTTPS port on the host loopback; 0 picks a free one.
    #[arg(long, default_value_t = 8443)]
    pub https_port: u16,

    /// Cluster DNS port (UDP and TCP) on the host loopback; 0 picks a free one.
    #[arg(long, default_value_t = 1053)]
    pub dns_port: u16,

    /// Admin endpoint (plain HTTP): `/metrics` of the proxy, DNS and ingress, `/proxy/dump`, `/healthz`.
    /// Port 0 picks a free one (logged).
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub admin_addr: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Node name [default: the host name].
    #[arg(long)]
    pub name: Option<String>,

    /// Address the API listens on. Loopback by default; `0.0.0.0` serves every interface.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: std::net::IpAddr,

    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PodRecords {
    Insecure,
    Verified,
    Disabled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProxyMode {
    Ebpf,
    Userspace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum Component {
    Kubelet,
    Proxy,
    Dns,
    Ingress,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Kubeconfig of the API server to join (not needed with --cleanup).
    #[arg(long, value_name = "FILE", required_unless_present = "cleanup")]
    pub kubeconfig: Option<PathBuf>,

    /// Which node components to run (this build runs `proxy` in agent mode).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kubelet,proxy,dns,ingress"
    )]
    pub components: Vec<Component>,

    /// This node's name: its Node object gives the addresses NodePorts answer on [default:
    /// the host name].
    #[arg(long)]
    pub node_name: Option<String>,

    /// The node's addresses for NodePorts and health-check NodePorts [default: the Node's
    /// InternalIP addresses].
    #[arg(long, value_name = "IP[,IP]", value_delimiter = ',')]
    pub node_ip: Vec<std::net::IpAddr>,

    /// Run the node components inside this named network namespace (`/run/netns/NAME`)
    /// instead of the agent's own: for sandboxed nodes and tests.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,

    #[arg(long, default_value = "10.96.0.0/12,fd00:10:96::/112")]
    pub service_cidr: String,

    /// Addresses of LoadBalancer Services (routed as the node's own).
    #[arg(long, default_value = "172.18.255.0/24")]
    pub lb_pool: String,

    #[arg(long, value_enum, default_value_t = ProxyMode::Ebpf)]
    pub proxy_mode: ProxyMode,

    /// `/metrics`, `/proxy/dump` and `/healthz`, plain HTTP (kube-proxy's metrics port).
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub admin_addr: std::net::SocketAddr,

    /// The BPF file system where the eBPF data plane pins its maps (and, on a clean stop,
    /// its programs' links), under `skiff/<node-name>/`, so a restarted agent keeps
    /// established connections. Must be a mounted bpffs (`mount -t bpf bpf /sys/fs/bpf`).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf")]
    pub bpffs: PathBuf,

    /// eBPF mode: the network namespaces under /run/netns whose names start with PREFIX
    /// (repeatable or comma-separated; CNI plugins name pod namespaces `cni-<id>`) are load
    /// balanced too, from the moment they appear until they go, so pods that another runtime
    /// runs on this node reach Services. Without it only the node namespace is.
    #[arg(long, value_name = "PREFIX", value_delimiter = ',')]
    pub pod_netns_prefix: Vec<String>,

    /// Remove what an agent for this node leaves on exit (pinned BPF maps and programs under --bpffs,
    /// the routes of --service-cidr and --lb-pool in the node namespace, tc filters of
    /// kernels before 6.6) and exit, like `kube-proxy --cleanup`. Run it with the agent
    /// stopped.
    #[arg(long)]
    pub cleanup: bool,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Kubeconfig of the API server to run the controllers against.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: PathBuf,

    /// Addresses handed to LoadBalancer Services.
    #[arg(long, default_value = "172.18.255.0/24")]
    pub lb_pool: String,

    /// A node whose heartbeat (Lease) is older than this is marked unreachable.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,

    /// Where `/metrics` (Prometheus text) is served, plain HTTP.
    #[arg(long, default_value = "127.0.0.1:10257")]
    pub metrics_addr: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// HTTP/1.1.
    Http(BenchRun),
    /// HTTP/2 (TLS or h2c).
    H2(BenchRun),
    /// gRPC unary.
    Grpc(BenchRun),
    /// Raw TCP connect and request/response.
    Tcp(BenchRun),
    /// UDP request/response.
    Udp(BenchRun),
    /// DNS queries (UDP; --tcp for DNS over TCP).
    Dns(BenchRun),
    /// SVG latency-percentile plot comparing runs.
    Plot(BenchPlot),
}

#[derive(Debug, Args)]
pub struct BenchRun {
    /// What to load: a URL for http/h2 (`http://` or `https://`), `[http(s)://]HOST:PORT` for
    /// grpc, `HOST:PORT` for tcp/udp/dns (dns: port 53 by default).
    pub target: String,

    /// How long to measure (after the warm-up).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load without recording first (connections open, caches warm).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Concurrent connections (closed loop: each keeps one request, or --pipeline/--streams, in flight).
    #[arg(long, default_value_t = 10)]
    pub connections: usize,

    /// Open loop at this rate (`R/s` or `R`), latency measured from each request's intended send
    /// time (coordinated-omission correction, like wrk2). Without it: closed loop.
    #[arg(long, value_name = "R/s", value_parser = skiff_loadgen::parse_rate)]
    pub rate: Option<f64>,

    /// Write the results (also partial ones) as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Client worker threads [default: one per CPU].
    #[arg(long)]
    pub threads: Option<usize>,

    /// A request unanswered this long is an error (`timeout`) and its connection is replaced.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Every request on a new connection (handshakes included in the latency).
    #[arg(long)]
    pub new_conn: bool,

    /// h2/grpc: concurrent streams per connection.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,

    /// http, dns --tcp: requests written back to back per connection before reading the answers.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,

    /// TLS: accept any server certificate.
    #[arg(long)]
    pub insecure: bool,

    /// TLS: trust the CA certificates of this PEM file [default: the system's].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// TLS: server name to send and verify [default: the target's host].
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,

    /// TLS: full handshakes only, no session resumption on reconnects.
    #[arg(long)]
    pub no_resumption: bool,

    /// http/h2: request method.
    #[arg(long, default_value = "GET")]
    pub http_method: String,

    /// http/h2/grpc: extra request header `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,

    /// Request body (http/h2), request bytes (tcp/udp); grpc: the request message as JSON with
    /// --proto-set or --grpc-reflection, else the echo text (grpc-echo) or the raw encoded message.
    #[arg(long, visible_alias = "data", default_value = "")]
    pub payload: String,

    /// tcp/udp: answer bytes to wait for per request [default: tcp the payload's length; udp one datagram].
    #[arg(long, value_name = "BYTES")]
    pub expect: Option<usize>,

    /// grpc: method path [default: skiff.dev/grpc-echo's Echo].
    #[arg(long, value_name = "/PKG.SVC/METHOD", default_value = skiff_loadgen::GRPC_ECHO_METHOD)]
    pub method: String,

    /// grpc: the method's descriptors, a serialized FileDescriptorSet (`protoc --include_imports
    /// -o FILE.pb`, `buf build -o FILE.pb`); --payload is then the request as JSON.
    #[arg(long, value_name = "FILE.pb", conflicts_with = "grpc_reflection")]
    pub proto_set: Option<PathBuf>,

    /// grpc: ask the target for the method's descriptors by gRPC server reflection (v1, else
    /// v1alpha); --payload is then the request as JSON.
    #[arg(long)]
    pub grpc_reflection: bool,

    /// dns: question name.
    #[arg(long, default_value = "kubernetes.default.svc.cluster.local.")]
    pub qname: String,

    /// dns: question type.
    #[arg(long, default_value = "A")]
    pub qtype: String,

    /// dns: over TCP (RFC 7766: length-prefixed messages, each connection reused, --pipeline
    /// queries in flight on it, answers matched by ID in any order) instead of UDP.
    #[arg(long)]
    pub tcp: bool,

    /// No progress line on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `Name: value`.
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not a header: write Name: value"))?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{name:?} is not a header name"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

#[derive(Debug, Args)]
pub struct BenchPlot {
    /// JSON results of `skiff bench ... --json`.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,

    #[arg(short = 'o', long = "output", value_name = "OUT.svg")]
    pub output: PathBuf,

    /// Legend label per input, in order [default: the file name without .json].
    #[arg(long = "label", value_name = "NAME")]
    pub labels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Listen port.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Listen on this address only [default: every address, IPv6 and IPv4].
    #[arg(long, value_name = "IP")]
    pub listen: Option<std::net::IpAddr>,
}

#[derive(Debug, Args)]
pub struct GrpcEchoArgs {
    /// Listen port.
    #[arg(long, env = "PORT", default_value_t = 50051)]
    pub port: u16,

    /// Listen on this address only [default: every address, IPv6 and IPv4].
    #[arg(long, value_name = "IP")]
    pub listen: Option<std::net::IpAddr>,
}

#[derive(Debug, Args)]
pub struct PauseArgs {}

/// `10s`, `500ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: use e.g. 10s, 500ms, 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "us" | "µs" => value / 1_000_000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?}: use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("duration {text:?}: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn up_defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["skiff", "up"]).unwrap();
        let Command::Up(up) = cli.command else {
            panic!("not up")
        };
        assert_eq!(up.name, "skiff");
        assert_eq!(up.cluster.api_port, 6443);
        assert_eq!(
            (up.http_port, up.https_port, up.dns_port),
            (8080, 8443, 1053)
        );
        assert_eq!(up.cluster.service_cidr, "10.96.0.0/12,fd00:10:96::/112");
        assert_eq!(up.cluster.cluster_dns, "10.96.0.10");
        assert_eq!(up.cluster.pod_cidr, "10.244.0.0/16,fd00:10:244::/56");
        assert_eq!(up.cluster.service_node_port_range, 30000..=32767);
        assert_eq!(up.cluster.lb_pool, "172.18.255.0/24");
        assert_eq!(up.cluster.dns_ttl, 5);
        assert_eq!(up.cluster.proxy_mode, ProxyMode::Ebpf);
        assert_eq!(up.cluster.pods, PodRecords::Insecure);
        assert_eq!(up.cluster.ingress_class, "skiff");
        assert!(up.cluster.default_backend.is_none());
        let cli = Cli::try_parse_from(["skiff", "up", "--default-backend", "demo/fallback:http"])
            .unwrap();
        let Command::Up(up) = cli.command else {
            panic!("not up")
        };
        assert_eq!(
            up.cluster.default_backend.map(|b| b.to_string()).as_deref(),
            Some("demo/fallback:http")
        );
    }

    #[test]
    fn agent_components_and_bench_flags_parse() {
        let cli = Cli::try_parse_from([
            "skiff",
            "agent",
            "--kubeconfig",
            "k",
            "--components",
            "proxy,dns",
        ])
        .unwrap();
        let Command::Agent(agent) = cli.command else {
            panic!("not agent")
        };
        assert_eq!(agent.components, vec![Component::Proxy, Component::Dns]);
        assert_eq!(agent.bpffs, PathBuf::from("/sys/fs/bpf"));
        assert!(!agent.cleanup);
        // --cleanup needs no kubeconfig
        let cli = Cli::try_parse_from(["skiff", "agent", "--cleanup", "--netns", "n"]).unwrap();
        let Command::Agent(agent) = cli.command else {
            panic!("not agent")
        };
        assert!(agent.cleanup && agent.kubeconfig.is_none());

        let cli = Cli::try_parse_from([
            "skiff",
            "bench",
            "http",
            "http://127.0.0.1:3000/",
            "--duration",
            "500ms",
            "--rate",
            "2000/s",
        ])
        .unwrap();
        let Command::Bench(BenchArgs {
            command: BenchCommand::Http(run),
        }) = cli.command
        else {
            panic!("not bench http")
        };
        assert_eq!(run.duration, Duration::from_millis(500));
        assert_eq!(run.rate, Some(2000.0));
        assert_eq!(run.warmup, Duration::from_secs(1));
        assert_eq!(run.connections, 10);
    }

    #[test]
    fn bench_grpc_takes_descriptors_and_a_json_request() {
        let run = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Bench(BenchArgs {
                command: BenchCommand::Grpc(run),
            }) => run,
            _ => panic!("not bench grpc"),
        };
        let r = run(&[
            "skiff",
            "bench",
            "grpc",
            "127.0.0.1:50051",
            "--grpc-reflection",
            "--method",
            "/a.B/C",
            "--data",
            "{\"x\": 1}",
        ]);
        assert!(r.grpc_reflection && r.proto_set.is_none());
        assert_eq!(
            (r.method.as_str(), r.payload.as_str()),
            ("/a.B/C", "{\"x\": 1}")
        );
        let r = run(&["skiff", "bench", "grpc", "h:1", "--proto-set", "api.pb"]);
        assert_eq!(r.proto_set, Some(PathBuf::from("api.pb")));
        assert!(!r.grpc_reflection);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(Cli::try_parse_from(["skiff", "up", "--dns-ttl", "3601"]).is_err());
        assert!(Cli::try_parse_from(["skiff", "agent"]).is_err());
        assert!(Cli::try_parse_from(["skiff", "up", "--proxy-mode", "iptables"]).is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_port_range("30000-32767").unwrap(), 30000..=32767);
        for bad in ["30000", "0-10", "20-10", "a-b", "1-70000"] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
        assert!(Cli::try_parse_from(["skiff", "up", "--default-backend", "a/b/c"]).is_err());
        assert!(Cli::try_parse_from(["skiff", "up", "--default-backend", "web:0"]).is_err());
        assert!(Cli::try_parse_from(["skiff", "validate"]).is_err());
        assert!(Cli::try_parse_from(["skiff", "bench", "http", "x", "--rate", "fast"]).is_err());
        assert!(Cli::try_parse_from(["skiff", "bench", "http", "x", "-H", "nocolon"]).is_err());
        assert!(Cli::try_parse_from(["skiff", "bench", "plot", "a.json"]).is_err());
        assert!(
            Cli::try_parse_from([
                "skiff",
                "bench",
                "grpc",
                "x",
                "--proto-set",
                "a.pb",
                "--grpc-reflection"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["skiff", "server", "--bind-address", "nowhere"]).is_err());
        assert!(Cli::try_parse_from(["skiff", "token", "create"]).is_err());
        assert!(Cli::try_parse_from(["skiff", "controller"]).is_err());
        assert!(
            Cli::try_parse_from([
                "skiff",
                "controller",
                "--kubeconfig",
                "k",
                "--metrics-addr",
                "x"
            ])
            .is_err()
        );
    }

    #[test]
    fn validate_reads_subfolders_only_with_recursive() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Validate(v) => v.recursive,
            _ => panic!("not validate"),
        };
        assert!(!parse(&["skiff", "validate", "-f", "examples/"]));
        assert!(parse(&["skiff", "validate", "-R", "-f", "examples/"]));
        assert!(parse(&["skiff", "validate", "--recursive", "-f", "x"]));
    }

    #[test]
    fn controller_flags_and_defaults() {
        let cli = Cli::try_parse_from(["skiff", "controller", "--kubeconfig", "k"]).unwrap();
        let Command::Controller(c) = cli.command else {
            panic!("not controller")
        };
        assert_eq!(c.kubeconfig, PathBuf::from("k"));
        assert_eq!(c.lb_pool, "172.18.255.0/24");
        assert_eq!(c.node_monitor_grace_period, Duration::from_secs(40));
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:10257");
        let cli = Cli::try_parse_from([
            "skiff",
            "controller",
            "--kubeconfig",
            "k",
            "--lb-pool",
            "10.0.0.0/28",
            "--node-monitor-grace-period",
            "1m",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .unwrap();
        let Command::Controller(c) = cli.command else {
            panic!("not controller")
        };
        assert_eq!(c.lb_pool, "10.0.0.0/28");
        assert_eq!(c.node_monitor_grace_period, Duration::from_secs(60));
        assert_eq!(c.metrics_addr.port(), 0);
    }
}
