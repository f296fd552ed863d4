//! Bootstrapping through discovery (`src/discovery.rs`), with real servers:
//! three cairn members started with `--discovery` and no `--initial-cluster`
//! form one cluster through a token hosted by cairn (`--enable-v2`) and by
//! etcd 3.4; a fourth member finds the cluster full, a member whose id is
//! registered already is a duplicate, a token without `_config/size` is
//! refused — each with etcd's message. And `--discovery-srv`: three members
//! find each other through SRV records served by a real DNS server (Debian's
//! dnsmasq on a loopback port; `CAIRN_DNS_SERVER` points the lookups at it,
//! production uses the system's resolver).
#![cfg(not(madsim))]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A PUT of a form to a v2 key; the status.
fn v2_put(endpoint: &str, key: &str, form: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(endpoint).expect("connect");
    let req = format!(
        "PUT /v2/keys{key} HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A discovery host: one member of `server` with `--enable-v2`.
fn start_host(server: Server, dir: &Path) -> Proc {
    let (cp, pp) = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{pp}");
    let mut flags = founding_flags("host", &peer, &format!("host={peer}"));
    flags.push("--enable-v2".into());
    let p = spawn_member(server, "host", dir, cp, pp, &flags, &[]);
    wait_healthy(&p);
    p
}

/// A cairn member bootstrapping through `flags` (discovery), not waited on.
fn start_discovering(
    name: &str,
    dir: &Path,
    ports: (u16, u16),
    flags: &[String],
    env: &[(String, String)],
) -> Proc {
    let peer = format!("http://127.0.0.1:{}", ports.1);
    let mut all = vec![
        format!("--name={name}"),
        format!("--initial-advertise-peer-urls={peer}"),
    ];
    all.extend(flags.iter().cloned());
    spawn_member(Server::Cairn, name, dir, ports.0, ports.1, &all, env)
}

fn member_names(endpoint: &str) -> Vec<String> {
    let mut names: Vec<String> = member_list(endpoint)
        .expect("member list")
        .into_iter()
        .map(|m| m.name)
        .collect();
    names.sort();
    names
}

fn bootstraps_through_token_hosted_on(host_server: Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = start_host(host_server, dir.path());
    let token = "/discovery/6c007a14875d53d9bf0ef5a6fc0257c8";
    assert_eq!(
        v2_put(
            &host.endpoint(),
            &format!("{token}/_config/size"),
            "value=3"
        ),
        201
    );
    let url = format!("--discovery=http://{}/v2/keys{token}", host.endpoint());
    let ports: Vec<(u16, u16)> = (0..4).map(|_| (free_port(), free_port())).collect();
    let mut members: Vec<Proc> = (0..3)
        .map(|i| start_discovering(&format!("d{i}"), dir.path(), ports[i], &[url.clone()], &[]))
        .collect();
    for m in &members {
        wait_healthy(m);
    }
    for m in &members {
        assert_eq!(member_names(&m.endpoint()), vec!["d0", "d1", "d2"]);
    }
    ctl_ok(&members[0].endpoint(), &["put", "k", "v"]);
    assert!(ctl_ok(&members[2].endpoint(), &["get", "k"]).contains('v'));

    // A fourth member: the cluster is full.
    let mut late = start_discovering("d3", dir.path(), ports[3], &[url.clone()], &[]);
    let status = late
        .wait_exit(Duration::from_secs(20))
        .expect("the fourth member exits");
    assert!(!status.success());
    let log = late.log_text();
    assert!(log.contains("discovery: cluster is full"), "{log}");

    // A member with d0's peer URL (hence its id) on a fresh data dir: its
    // registration is there already.
    members[0].kill9();
    let fresh = dir.path().join("again");
    std::fs::create_dir_all(&fresh).expect("dir");
    let mut again = start_discovering("d0", &fresh, ports[0], &[url], &[]);
    let status = again
        .wait_exit(Duration::from_secs(20))
        .expect("the duplicate exits");
    assert!(!status.success());
    assert!(
        again.log_text().contains("discovery: found duplicate id"),
        "{}",
        again.log_text()
    );

    // A token without a size.
    let bare = format!(
        "--discovery=http://{}/v2/keys/discovery/nosize",
        host.endpoint()
    );
    let mut nosize = start_discovering("x", dir.path(), (free_port(), free_port()), &[bare], &[]);
    let status = nosize.wait_exit(Duration::from_secs(20)).expect("exits");
    assert!(!status.success());
    assert!(
        nosize.log_text().contains("discovery: size key not found"),
        "{}",
        nosize.log_text()
    );
}

#[test]
fn three_members_bootstrap_through_a_token_hosted_on_cairn() {
    bootstraps_through_token_hosted_on(Server::Cairn);
}

#[test]
fn three_members_bootstrap_through_a_token_hosted_on_etcd() {
    bootstraps_through_token_hosted_on(Server::Etcd);
}

#[test]
fn discovery_and_initial_cluster_together_are_refused_as_etcd_refuses_them() {
    let out = Command::new(cairn_bin())
        .args([
            "--discovery=http://127.0.0.1:1/v2/keys/x",
            "--initial-cluster=a=http://127.0.0.1:2380",
            "--name=a",
        ])
        .output()
        .expect("run cairn");
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "cairn: multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\""
    );
}

struct Dnsmasq(Child);

/// dnsmasq with `args` (and quiet defaults), its queries logged to
/// `<dir>/<log>`.
fn start_dnsmasq(dir: &Path, log: &str, args: &[String]) -> Dnsmasq {
    let log = std::fs::File::create(dir.join(log)).expect("log");
    let dns = Dnsmasq(
        Command::new(if Path::new("/usr/sbin/dnsmasq").exists() {
            "/usr/sbin/dnsmasq"
        } else {
            "dnsmasq"
        })
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--log-queries",
            "--bind-interfaces",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn dnsmasq (install the Debian package dnsmasq-base)"),
    );
    std::thread::sleep(Duration::from_millis(500));
    dns
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn three_members_bootstrap_through_dns_srv_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dns_port = free_port();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let mut args = vec![
        format!("--port={dns_port}"),
        "--listen-address=127.0.0.1".to_owned(),
    ];
    // The targets must be names the members' own resolver knows too (they
    // dial the URLs discovery builds from them): localhost, on three ports.
    args.push("--host-record=localhost,127.0.0.1".to_owned());
    for (_, pp) in &ports {
        args.push(format!(
            "--srv-host=_etcd-server._tcp.cairn.test,localhost,{pp}"
        ));
    }
    let _dns = start_dnsmasq(dir.path(), "dnsmasq.log", &args);
    let env = vec![(
        "CAIRN_DNS_SERVER".to_owned(),
        format!("127.0.0.1:{dns_port}"),
    )];
    let members: Vec<Proc> = (0..3)
        .map(|i| {
            start_discovering(
                &format!("s{i}"),
                dir.path(),
                ports[i],
                &["--discovery-srv=cairn.test".to_owned()],
                &env,
            )
        })
        .collect();
    for m in &members {
        wait_healthy(m);
    }
    // Each member published its own name once the cluster formed.
    poll_until(
        Duration::from_secs(20),
        "every member publishes its name",
        || {
            let names = member_names(&members[0].endpoint());
            if names == ["s0", "s1", "s2"] {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        },
    );
    ctl_ok(&members[1].endpoint(), &["put", "srv", "ok"]);
    assert!(ctl_ok(&members[0].endpoint(), &["get", "srv"]).contains("ok"));
}

/// The address the client-discovery test's DNS server listens on, port 53
/// (Go's resolver asks port 53 of the servers in /etc/resolv.conf only).
const CLIENT_DNS: &str = "127.0.0.77";

/// Runs `program` (etcdctl or cairnctl) with `args` in a mount namespace of
/// its own where /etc/resolv.conf names `resolv`'s server: both resolve
/// through the system's resolver configuration, as a user's would.
fn ctl_with_resolv(program: &str, resolv: &Path, args: &[String]) -> String {
    let out = Command::new("unshare")
        .args([
            "--mount",
            "sh",
            "-c",
            r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#,
        ])
        .arg(resolv)
        .arg(program)
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare (util-linux)");
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .replace(&name, "etcdctl");
    let text = mask_ctl_noise(&text);
    format!(
        "$ etcdctl {}\n[exit {:?}]\n{text}",
        args.join(" "),
        out.status.code()
    )
}

/// etcdctl's `--discovery-srv`, `--discovery-srv-name` and
/// `--insecure-discovery` with `program`, against the member on
/// `client_port` that the SRV records of `cairn.test` list.
fn srv_session(program: &str, resolv: &Path, client_port: u16) -> Vec<String> {
    let steps: &[&str] = &[
        "--discovery-srv=cairn.test put srv/k v1",
        "--discovery-srv=cairn.test get srv/k",
        // etcdctl's endpoint commands act on the --endpoints flag's
        // endpoints unless --cluster (then on the members the discovered
        // endpoints list).
        "--discovery-srv=nope.test --endpoints=127.0.0.1:PORT endpoint health",
        "--discovery-srv=cairn.test endpoint health --cluster",
        "-d cairn.test --discovery-srv-name=blue get srv/k --print-value-only",
        // Secure discovery drops the http:// endpoints, falls back to the
        // --endpoints flag's, and dials them with TLS, verified as the
        // domain: a plain member cannot answer.
        "--discovery-srv=cairn.test --insecure-discovery=false --endpoints=127.0.0.1:PORT --dial-timeout=1s --command-timeout=2s get srv/k",
        "--discovery-srv=nope.test --dial-timeout=1s --command-timeout=2s get srv/k",
    ];
    steps
        .iter()
        .map(|step| {
            let args: Vec<String> = step
                .replace("PORT", &client_port.to_string())
                .split_whitespace()
                .map(String::from)
                .collect();
            ctl_with_resolv(program, resolv, &args)
        })
        .collect()
}

#[test]
fn cairnctl_finds_endpoints_through_srv_records_as_etcdctl_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cp, pp) = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{pp}");
    let m = spawn_member(
        Server::Cairn,
        "d1",
        dir.path(),
        cp,
        pp,
        &founding_flags("d1", &peer, &format!("d1={peer}")),
        &[],
    );
    wait_healthy(&m);
    let _dns = start_dnsmasq(
        dir.path(),
        "client-dnsmasq.log",
        &[
            "--port=53".to_owned(),
            format!("--listen-address={CLIENT_DNS}"),
            // Names under .test that dnsmasq does not hold do not exist.
            "--local=/test/".to_owned(),
            "--host-record=localhost,127.0.0.1".to_owned(),
            format!("--srv-host=_etcd-client._tcp.cairn.test,localhost,{cp}"),
            format!("--srv-host=_etcd-client-blue._tcp.cairn.test,localhost,{cp}"),
        ],
    );
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {CLIENT_DNS}\n")).expect("resolv.conf");
    let want = srv_session("etcdctl", &resolv, cp);
    let got = srv_session(cairnctl_bin(), &resolv, cp);
    assert_same_steps(
        &want,
        &got,
        ("etcdctl", "cairnctl"),
        "SRV discovery session",
    );
    // The session means something: found through DNS, with the target's
    // trailing dot; the insecure endpoint dropped; an unknown domain an
    // error.
    assert!(got[1].contains("[exit Some(0)]\nsrv/k\nv1"), "{}", got[1]);
    assert!(
        got[2].contains(&format!("127.0.0.1:{cp} is healthy")),
        "{}",
        got[2]
    );
    assert!(
        got[3].contains(&format!("http://127.0.0.1:{cp} is healthy")),
        "{}",
        got[3]
    );
    assert!(got[4].contains("[exit Some(0)]\nv1"), "{}", got[4]);
    assert!(
        got[5].contains("ignoring discovered insecure endpoint"),
        "{}",
        got[5]
    );
    assert!(got[5].contains("[exit Some(1)]"), "{}", got[5]);
    assert!(
        got[6].contains("[exit Some(1)]\nError: dns lookup errors"),
        "{}",
        got[6]
    );
}
