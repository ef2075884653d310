//! A cluster of real nodes in Docker containers of the `FROM scratch`
//! image, on a private bridge network with its own subnet, and the host-side
//! fault primitives the nemeses use (`docs/reliability.md`, "Fault model").
//!
//! Every resource is named `sdbchaos-<seed>-<pid>-…` so that concurrent
//! runs (and other engineers' containers) are never touched; the guard
//! removes its containers, volumes and network on drop.
//!
//! The image holds no tools, so network faults are set from the host inside
//! a container's network namespace: `nsenter -t <pid> -n ip route add
//! prohibit <peer>/32` (a partition: the node can neither send to the peer
//! nor answer it) and `nsenter -t <pid> -n iptables -A INPUT -s <peer> -j
//! DROP` (one-way: the peer's packets vanish silently, so the peer's calls
//! time out while this node's calls fail fast). The host itself (the
//! network's gateway) is never blocked: the controller always reaches every
//! node.

use anyhow::{anyhow, bail, Context};
use sessiondb_test_support::poll_until;
use std::process::{Command, Output};
use std::time::Duration;

/// Port every node listens on inside its container.
pub const NODE_PORT: u16 = 7070;
pub const ADMIN_TOKEN: &str = "chaos-admin-token-0123456789abcdef";
pub const CLUSTER_SECRET: &str = "chaos-cluster-secret-0123456789abcdef";
/// Short Raft election timeouts (hidden `--raft-election-timeout-ms`), so
/// a lost leader is replaced within a couple of seconds.
pub const ELECTION_TIMEOUT_MS: u64 = 500;
/// Bound on a (re)started node answering `/v1/health`.
pub const HEALTH_WAIT_MAX: Duration = Duration::from_secs(60);
/// Most time one reachability probe from inside a namespace may take.
const PROBE_TIMEOUT_S: &str = "1";
/// Private networks tried for a run: `10.<SUBNET_SECOND_OCTET>.<n>.0/24`,
/// starting from a seed-derived `n`, skipping those that clash with an
/// existing network.
const SUBNET_SECOND_OCTET: u8 = 213;
const SUBNET_ATTEMPTS_MAX: u32 = 20;

/// The image under test: `SESSIONDB_IMAGE`, default `sessiondb:dev` (built
/// by `cluster-config/build-image`).
pub fn image() -> String {
    std::env::var("SESSIONDB_IMAGE").unwrap_or_else(|_| "sessiondb:dev".to_string())
}

fn run_command(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{program}` (needed by the chaos harness)"))
}

/// Runs `program args`; its trimmed stdout, or an error with its stderr.
fn checked(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = run_command(program, args)?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    checked("docker", args)
}

/// Fails (never skips) when Docker or the image is missing.
pub fn require_docker_and_image() -> anyhow::Result<()> {
    docker(&["info", "--format", "{{.ServerVersion}}"]).context(
        "Docker Engine is required for the chaos tests and is not reachable; \
         start the daemon (scripts/test does) and run again",
    )?;
    let image = image();
    docker(&["image", "inspect", "--format", "{{.Id}}", &image]).with_context(|| {
        format!("the image {image} does not exist: build it with cluster-config/build-image")
    })?;
    Ok(())
}

/// One node: its container, data volume and fixed address.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    pub id: u64,
    pub container: String,
    pub volume: String,
    pub ip: String,
}

/// A network rule set from the host, to be removed at heal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// `ip route add prohibit <peer>/32` inside `node`'s namespace.
    Prohibit { node: u64, peer_ip: String },
    /// `iptables -A INPUT -s <peer> -j DROP` inside `node`'s namespace.
    DropFrom { node: u64, peer_ip: String },
}

/// The containers, volumes and network of one run.
#[derive(Debug)]
pub struct DockerCluster {
    pub prefix: String,
    pub network: String,
    /// First three octets of the network, e.g. `10.213.40`.
    pub subnet_prefix: String,
    pub nodes: Vec<NodeHandle>,
    pub shards: u32,
    pub start_ms: i64,
    rules: Vec<Rule>,
    created_containers: Vec<String>,
    created_volumes: Vec<String>,
}

impl DockerCluster {
    /// Creates the network (a free /24 derived from `seed`) and names the
    /// nodes; starts nothing.
    pub fn create(seed: u64, nodes: u64, shards: u32, start_ms: i64) -> anyhow::Result<Self> {
        require_docker_and_image()?;
        let prefix = format!("sdbchaos-{seed}-{}", std::process::id());
        let network = format!("{prefix}-net");
        let mut third = (seed
            .wrapping_mul(31)
            .wrapping_add(u64::from(std::process::id()))
            % 200) as u32
            + 20;
        let mut last_error = None;
        for _ in 0..SUBNET_ATTEMPTS_MAX {
            let subnet_prefix = format!("10.{SUBNET_SECOND_OCTET}.{third}");
            let subnet = format!("{subnet_prefix}.0/24");
            match docker(&[
                "network", "create", "--driver", "bridge", "--subnet", &subnet, &network,
            ]) {
                Ok(_) => {
                    let nodes = (1..=nodes)
                        .map(|id| NodeHandle {
                            id,
                            container: format!("{prefix}-n{id}"),
                            volume: format!("{prefix}-n{id}-data"),
                            ip: format!("{subnet_prefix}.{}", 10 + id),
                        })
                        .collect();
                    return Ok(DockerCluster {
                        prefix,
                        network,
                        subnet_prefix,
                        nodes,
                        shards,
                        start_ms,
                        rules: Vec::new(),
                        created_containers: Vec::new(),
                        created_volumes: Vec::new(),
                    });
                }
                Err(error) => {
                    last_error = Some(error);
                    third = (third + 7) % 200 + 20;
                }
            }
        }
        Err(last_error
            .expect("at least one attempt")
            .context("no free subnet for the run"))
    }

    pub fn node(&self, id: u64) -> &NodeHandle {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .unwrap_or_else(|| panic!("no node {id} in the cluster"))
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|node| node.id).collect()
    }

    /// The node's URL as the host reaches it: its address on the network.
    pub fn url(&self, id: u64) -> String {
        format!("http://{}:{NODE_PORT}", self.node(id).ip)
    }

    /// `docker run -d` of node `id` on its volume and address; node 1
    /// bootstraps, the others join node 1 (ignored once they are members).
    /// `fault_args` are hidden testing flags (disk faults).
    pub fn run_node(&mut self, id: u64, fault_args: &[String]) -> anyhow::Result<()> {
        let node = self.node(id).clone();
        let image = image();
        let advertise = format!("{}:{NODE_PORT}", node.ip);
        let start_ms = self.start_ms.to_string();
        let shards = self.shards.to_string();
        let election = ELECTION_TIMEOUT_MS.to_string();
        let volume = format!("{}:/data", node.volume);
        let join = format!("http://{}:{NODE_PORT}", self.node(1).ip);
        let id_text = id.to_string();
        let mut args: Vec<&str> = vec![
            "run",
            "-d",
            "--name",
            &node.container,
            "--network",
            &self.network,
            "--ip",
            &node.ip,
            "--volume",
            &volume,
            "-e",
            "SESSIONDB_ADMIN_TOKEN",
            "-e",
            "SESSIONDB_CLUSTER_SECRET",
            &image,
            "--node-id",
            &id_text,
            "--advertise",
            &advertise,
            "--manual-clock",
            &start_ms,
            "--shards",
            &shards,
            "--raft-election-timeout-ms",
            &election,
        ];
        if id != 1 {
            args.push("--join");
            args.push(&join);
        }
        args.extend(fault_args.iter().map(String::as_str));
        if !self.created_volumes.contains(&node.volume) {
            self.created_volumes.push(node.volume.clone());
        }
        if !self.created_containers.contains(&node.container) {
            self.created_containers.push(node.container.clone());
        }
        let output = Command::new("docker")
            .args(&args)
            .env("SESSIONDB_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SESSIONDB_CLUSTER_SECRET", CLUSTER_SECRET)
            .output()
            .context("run docker")?;
        if !output.status.success() {
            bail!(
                "`docker {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// kill -9 of the node's process (`docker kill -s KILL`).
    pub fn kill(&self, id: u64) -> anyhow::Result<()> {
        docker(&["kill", "--signal", "KILL", &self.node(id).container]).map(|_| ())
    }

    /// The host pid of the node's `sessiondb` process (the container's
    /// init), for a kill that must land within milliseconds.
    pub fn process_id(&self, id: u64) -> anyhow::Result<String> {
        self.pid(id)
    }

    /// kill -9 of the exact process `pid` (from [`Self::process_id`]),
    /// without the Docker CLI's round trip.
    pub fn kill_process(&self, pid: &str) -> anyhow::Result<()> {
        checked("kill", &["-KILL", pid]).map(|_| ())
    }

    /// Starts a killed node again on the same data and address.
    pub fn start(&self, id: u64) -> anyhow::Result<()> {
        docker(&["start", &self.node(id).container]).map(|_| ())
    }

    /// Removes the node's container (after a kill -9: `rm --force` sends
    /// SIGKILL) and runs it again on the same volume with `fault_args`.
    pub fn recreate(&mut self, id: u64, fault_args: &[String]) -> anyhow::Result<()> {
        docker(&["rm", "--force", &self.node(id).container])?;
        self.rules.retain(|rule| match rule {
            Rule::Prohibit { node, .. } | Rule::DropFrom { node, .. } => *node != id,
        });
        self.run_node(id, fault_args)
    }

    pub fn pause(&self, id: u64) -> anyhow::Result<()> {
        docker(&["pause", &self.node(id).container]).map(|_| ())
    }

    pub fn unpause(&self, id: u64) -> anyhow::Result<()> {
        docker(&["unpause", &self.node(id).container]).map(|_| ())
    }

    /// `{{.State.Status}}`: `running`, `paused`, `exited`…
    pub fn state(&self, id: u64) -> anyhow::Result<String> {
        docker(&[
            "inspect",
            "--format",
            "{{.State.Status}}",
            &self.node(id).container,
        ])
    }

    fn pid(&self, id: u64) -> anyhow::Result<String> {
        let pid = docker(&[
            "inspect",
            "--format",
            "{{.State.Pid}}",
            &self.node(id).container,
        ])?;
        if pid == "0" || pid.is_empty() {
            bail!("node {id} has no process (not running)");
        }
        Ok(pid)
    }

    fn in_namespace(&self, id: u64, command: &[&str]) -> anyhow::Result<String> {
        let pid = self.pid(id)?;
        let mut args = vec!["-t", pid.as_str(), "-n"];
        args.extend_from_slice(command);
        checked("nsenter", &args)
    }

    /// `node` can no longer exchange packets with `peer` (one route inside
    /// `node`'s namespace; TCP needs both directions, so both are cut).
    pub fn prohibit(&mut self, node: u64, peer: u64) -> anyhow::Result<()> {
        let peer_ip = self.node(peer).ip.clone();
        let target = format!("{peer_ip}/32");
        self.in_namespace(node, &["ip", "route", "add", "prohibit", &target])?;
        self.rules.push(Rule::Prohibit { node, peer_ip });
        Ok(())
    }

    /// Packets from `peer` to `node` are dropped silently (inside `node`'s
    /// namespace); `node`'s own packets to `peer` still leave.
    pub fn drop_from(&mut self, node: u64, peer: u64) -> anyhow::Result<()> {
        let peer_ip = self.node(peer).ip.clone();
        self.in_namespace(
            node,
            &["iptables", "-A", "INPUT", "-s", &peer_ip, "-j", "DROP"],
        )?;
        self.rules.push(Rule::DropFrom { node, peer_ip });
        Ok(())
    }

    /// Removes every rule set so far. A rule of a node whose namespace is
    /// gone (restarted) went with it.
    pub fn heal_network(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for rule in std::mem::take(&mut self.rules) {
            let result = match &rule {
                Rule::Prohibit { node, peer_ip } => {
                    let target = format!("{peer_ip}/32");
                    self.in_namespace(*node, &["ip", "route", "del", "prohibit", &target])
                }
                Rule::DropFrom { node, peer_ip } => self.in_namespace(
                    *node,
                    &["iptables", "-D", "INPUT", "-s", peer_ip, "-j", "DROP"],
                ),
            };
            if let Err(error) = result {
                problems.push(format!("{rule:?}: {error:#}"));
            }
        }
        problems
    }

    /// Whether `from` can open a connection to `to`'s API and get an
    /// answer, probed from inside `from`'s namespace with the host's curl.
    pub fn can_reach(&self, from: u64, to: u64) -> anyhow::Result<bool> {
        let pid = self.pid(from)?;
        let url = format!("{}/v1/health", self.url(to));
        let output = run_command(
            "nsenter",
            &[
                "-t",
                &pid,
                "-n",
                "curl",
                "--silent",
                "--output",
                "/dev/null",
                "--max-time",
                PROBE_TIMEOUT_S,
                &url,
            ],
        )?;
        Ok(output.status.success())
    }

    /// The last lines of the node's log (for failure reports).
    pub fn logs(&self, id: u64, lines: usize) -> String {
        let lines = lines.to_string();
        match run_command(
            "docker",
            &["logs", "--tail", &lines, &self.node(id).container],
        ) {
            Ok(output) => format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => format!("(no logs: {error:#})"),
        }
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        if std::env::var_os("CHAOS_KEEP").is_some() {
            eprintln!(
                "CHAOS_KEEP set: leaving containers {:?}",
                self.created_containers
            );
            return;
        }
        for container in &self.created_containers {
            let _ = run_command("docker", &["rm", "--force", container]);
        }
        for volume in &self.created_volumes {
            let _ = run_command("docker", &["volume", "rm", "--force", volume]);
        }
        let _ = run_command("docker", &["network", "rm", &self.network]);
    }
}

/// Polls `condition` (the tests' one bounded wait,
/// [`sessiondb_test_support::poll_until`]) until it holds or `wait_max`
/// passes; the error names `what`.
pub async fn wait_until<F, Fut>(
    what: &str,
    wait_max: Duration,
    mut condition: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll_until(wait_max, async || {
        if condition().await {
            Ok(())
        } else {
            Err("the condition is false")
        }
    })
    .await
    .map_err(|timed_out| anyhow!("{what}: {timed_out}"))
}
