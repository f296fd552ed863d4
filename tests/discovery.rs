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
        "--keep-in-foreground".to_owned(),
        "--no-resolv".to_owned(),
        "--no-hosts".to_owned(),
        "--log-queries".to_owned(),
        format!("--port={dns_port}"),
        "--listen-address=127.0.0.1".to_owned(),
        "--bind-interfaces".to_owned(),
    ];
    // The targets must be names the members' own resolver knows too (they
    // dial the URLs discovery builds from them): localhost, on three ports.
    args.push("--host-record=localhost,127.0.0.1".to_owned());
    for (_, pp) in &ports {
        args.push(format!(
            "--srv-host=_etcd-server._tcp.cairn.test,localhost,{pp}"
        ));
    }
    let log = std::fs::File::create(dir.path().join("dnsmasq.log")).expect("log");
    let _dns = Dnsmasq(
        Command::new(if Path::new("/usr/sbin/dnsmasq").exists() {
            "/usr/sbin/dnsmasq"
        } else {
            "dnsmasq"
        })
        .args(&args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn dnsmasq (install the Debian package dnsmasq-base)"),
    );
    std::thread::sleep(Duration::from_millis(500));
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
