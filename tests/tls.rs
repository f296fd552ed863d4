//! TLS on the real binary, with certificates made here (rcgen) and clients
//! nobody here wrote: the stock etcdctl 3.4 and the `etcd-client` crate.
//!
//! - etcdctl with `--cacert --cert --key` over `https://` (put, get, endpoint
//!   health), and `/health`, `/version`, `/metrics` over HTTPS on the same
//!   client port (a rustls client asking for HTTP/1.1, as curl does);
//! - a wrong CA, an expired client certificate, a client certificate from an
//!   untrusted CA, no client certificate, and plaintext clients (etcdctl over
//!   `http://`, a raw HTTP request) are each refused, and a good client is
//!   served right after each;
//! - the `etcd-client` crate over TLS with a client certificate;
//! - certificate rotation: new files on disk are served to the next
//!   connection, without a restart;
//! - a 3-member cluster with peer TLS, `--peer-client-cert-auth` and
//!   `--client-cert-auth`: a follower forwards lease keep-alives and member
//!   changes to the leader's TLS client port; the cluster survives the
//!   leader's kill -9, and the killed member rejoins over TLS; a member added at run time joins over TLS;
//! - `--auto-tls` / `--peer-auto-tls` make self-signed certificates under
//!   `<data-dir>/fixtures`;
//! - unusable certificate files stop the member at start with one clear
//!   line (exit status 1, no panic);
//! - inconsistent TLS flags are refused with etcd 3.4's message, checked
//!   against /usr/bin/etcd run with the same flags.
#![cfg(not(madsim))]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{etcdctl, free_port, Proc};

/// Deadline of every wait: generous for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Certificates.
// ---------------------------------------------------------------------------

/// A certificate authority made for one test.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate and key signed by this CA, for `cn`, valid for the
    /// loopback address and localhost, usable as server and client
    /// certificate (as etcd's docs make peer certificates).
    fn leaf(&self, cn: &str, expired: bool) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// Certificate files of a test, all in one directory.
struct Pki {
    dir: PathBuf,
    ca: Ca,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let pki = Pki {
            dir: dir.join("pki"),
            ca: Ca::new("cairn test CA"),
        };
        std::fs::create_dir_all(&pki.dir).expect("pki dir");
        write(&pki.ca_file(), &pki.ca.pem);
        pki
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Writes `<name>.pem` and `<name>-key.pem` signed by the test CA.
    fn issue(&self, name: &str, cn: &str, expired: bool) -> (PathBuf, PathBuf) {
        let (cert, key) = self.ca.leaf(cn, expired);
        self.write_pair(name, &cert, &key)
    }

    fn write_pair(&self, name: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        let cert_file = self.dir.join(format!("{name}.pem"));
        let key_file = self.dir.join(format!("{name}-key.pem"));
        write(&cert_file, cert);
        write(&key_file, key);
        (cert_file, key_file)
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn arg(flag: &str, path: &Path) -> String {
    format!("--{flag}={}", path.display())
}

// ---------------------------------------------------------------------------
// Members.
// ---------------------------------------------------------------------------

/// A cairn member on https client and peer URLs.
struct Member {
    proc: Proc,
    name: String,
    client_port: u16,
    peer_port: u16,
    flags: Vec<String>,
    dir: PathBuf,
}

impl Member {
    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.client_port)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn restart(&mut self) {
        self.proc = spawn_proc(
            &self.name,
            &self.dir,
            self.client_port,
            self.peer_port,
            &self.flags,
        );
    }
}

fn peer_url(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

/// Peers talk TLS when the flags give peer certificates or peer auto TLS.
fn peer_scheme(flags: &[String]) -> &'static str {
    match flags
        .iter()
        .any(|f| f.starts_with("--peer-cert-file") || f == "--peer-auto-tls")
    {
        true => "https",
        false => "http",
    }
}

/// Starts member `name` with https URLs on the ports given and `flags`
/// (TLS files, `--initial-cluster`, …).
fn spawn_proc(name: &str, dir: &Path, client_port: u16, peer_port: u16, flags: &[String]) -> Proc {
    let client = format!("https://127.0.0.1:{client_port}");
    let peer = format!("{}://127.0.0.1:{peer_port}", peer_scheme(flags));
    let mut all = vec![
        format!("--name={name}"),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
    ];
    if !flags.iter().any(|f| f.starts_with("--initial-cluster=")) {
        all.push(format!("--initial-cluster={name}={peer}"));
    }
    all.extend(flags.iter().cloned());
    common::spawn_member(
        common::Server::Cairn,
        name,
        dir,
        client_port,
        peer_port,
        &all,
        &[],
    )
}

fn start_member(name: &str, dir: &Path, flags: Vec<String>) -> Member {
    start_member_on(name, dir, free_port(), free_port(), flags)
}

fn start_member_on(
    name: &str,
    dir: &Path,
    client_port: u16,
    peer_port: u16,
    flags: Vec<String>,
) -> Member {
    Member {
        proc: spawn_proc(name, dir, client_port, peer_port, &flags),
        name: name.to_owned(),
        client_port,
        peer_port,
        flags,
        dir: dir.to_owned(),
    }
}

/// The TLS flags of a member serving clients with `server` and requiring
/// client certificates from the test CA.
fn client_tls_flags(pki: &Pki, server: &(PathBuf, PathBuf)) -> Vec<String> {
    vec![
        arg("cert-file", &server.0),
        arg("key-file", &server.1),
        arg("trusted-ca-file", &pki.ca_file()),
        "--client-cert-auth".to_owned(),
    ]
}

fn peer_tls_flags(pki: &Pki, peer: &(PathBuf, PathBuf)) -> Vec<String> {
    vec![
        arg("peer-cert-file", &peer.0),
        arg("peer-key-file", &peer.1),
        arg("peer-trusted-ca-file", &pki.ca_file()),
        "--peer-client-cert-auth".to_owned(),
    ]
}

// ---------------------------------------------------------------------------
// Clients.
// ---------------------------------------------------------------------------

/// How a client authenticates: the CA it trusts and its certificate.
#[derive(Clone)]
struct Creds {
    ca: PathBuf,
    cert: Option<(PathBuf, PathBuf)>,
}

impl Creds {
    fn etcdctl_args(&self) -> Vec<String> {
        let mut args = vec![arg("cacert", &self.ca)];
        if let Some((cert, key)) = &self.cert {
            args.push(arg("cert", cert));
            args.push(arg("key", key));
        }
        args
    }

    /// A rustls client configuration offering HTTP/1.1 (as curl does).
    fn rustls(&self) -> Arc<rustls::ClientConfig> {
        #[allow(deprecated)] // *ring* without post-quantum key exchange, as the server.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in pem_certs(&self.ca) {
            roots.add(cert).expect("CA certificate");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let mut config = match &self.cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(pem_certs(cert), pem_key(key))
                .expect("client certificate"),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
        Arc::new(config)
    }
}

fn pem_certs(path: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .expect("PEM file")
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates")
}

fn pem_key(path: &Path) -> rustls::pki_types::PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::PrivateKeyDer::from_pem_file(path).expect("PEM key")
}

/// What one HTTPS request saw: the server's certificate and the answer.
struct HttpsAnswer {
    server_cert: Vec<u8>,
    status: u16,
    body: String,
}

/// GET `path` over HTTPS from `addr` (127.0.0.1:port) as `creds`.
fn https_get(addr: &str, path: &str, creds: &Creds) -> Result<HttpsAnswer, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("IP server name");
    let conn = rustls::ClientConnection::new(creds.rustls(), name.to_owned())
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("TLS: {e}"))?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // The server closes without close_notify after `Connection: close`.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(format!("TLS: {e}")),
    }
    let server_cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok(HttpsAnswer {
        server_cert,
        status,
        body: body.to_owned(),
    })
}

fn wait_healthy(m: &mut Member, creds: &Creds) {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(Some(status)) = m.proc.child.try_wait() {
            panic!("{} exited ({status}); log:\n{}", m.name, m.proc.log_text());
        }
        match https_get(&m.addr(), "/health", creds) {
            Ok(a) if a.status == 200 => return,
            Ok(a) => last = format!("{} {}", a.status, a.body),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "{} did not become healthy over https ({last}); log:\n{}",
        m.name,
        m.proc.log_text()
    );
}

/// etcdctl as `creds` against `endpoints`; (success, stdout + stderr).
fn ctl(endpoints: &str, creds: &Creds, args: &[&str]) -> (bool, String) {
    let mut all: Vec<String> = creds.etcdctl_args();
    all.push("--dial-timeout=3s".to_owned());
    all.extend(args.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = etcdctl(endpoints, &refs, None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn ctl_ok(endpoints: &str, creds: &Creds, args: &[&str]) -> String {
    let (ok, text) = ctl(endpoints, creds, args);
    assert!(ok, "etcdctl {args:?} failed: {text}");
    text
}

fn ctl_refused(endpoints: &str, creds: &Creds, args: &[&str], what: &str) -> String {
    let (ok, text) = ctl(endpoints, creds, args);
    assert!(!ok, "{what}: etcdctl {args:?} should fail, got: {text}");
    text
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

#[test]
fn etcdctl_and_http_endpoints_over_tls_with_client_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let server = pki.issue("server", "server", false);
    let client = pki.issue("client", "alice", false);
    let mut m = start_member("t1", dir.path(), client_tls_flags(&pki, &server));
    let good = Creds {
        ca: pki.ca_file(),
        cert: Some(client),
    };
    wait_healthy(&mut m, &good);

    let eps = m.endpoint();
    assert_eq!(ctl_ok(&eps, &good, &["put", "foo", "bar"]).trim(), "OK");
    assert_eq!(ctl_ok(&eps, &good, &["get", "foo"]).trim(), "foo\nbar");
    let health = ctl_ok(&eps, &good, &["endpoint", "health"]);
    assert!(health.contains("is healthy"), "{health}");

    let h = https_get(&m.addr(), "/health", &good).expect("/health over https");
    assert_eq!(
        (h.status, h.body.trim()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    let v = https_get(&m.addr(), "/version", &good).expect("/version over https");
    assert_eq!(v.status, 200);
    assert!(v.body.contains("etcdserver"), "{}", v.body);
    let metrics = https_get(&m.addr(), "/metrics", &good).expect("/metrics over https");
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("# TYPE"), "{}", metrics.body);
    assert_eq!(
        https_get(&m.addr(), "/nope", &good).expect("404").status,
        404
    );
}

#[test]
fn refused_clients_leave_the_server_serving_good_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let server = pki.issue("server", "server", false);
    let mut m = start_member("t2", dir.path(), client_tls_flags(&pki, &server));
    let good = Creds {
        ca: pki.ca_file(),
        cert: Some(pki.issue("client", "alice", false)),
    };
    wait_healthy(&mut m, &good);
    let eps = m.endpoint();
    let mut n = 0;
    let mut good_client_still_served = |after: &str| {
        n += 1;
        let key = format!("k{n}");
        assert_eq!(
            ctl_ok(&eps, &good, &["put", &key, after]).trim(),
            "OK",
            "after {after}"
        );
        assert_eq!(
            ctl_ok(&eps, &good, &["get", &key, "--print-value-only"]).trim(),
            after
        );
        let h = https_get(&m.addr(), "/health", &good).expect("health after a refusal");
        assert_eq!(h.status, 200, "after {after}");
    };
    good_client_still_served("start");

    // The client does not trust the server's CA.
    let other = Ca::new("another CA");
    let other_ca = pki.dir.join("other-ca.pem");
    write(&other_ca, &other.pem);
    let wrong_ca = Creds {
        ca: other_ca.clone(),
        cert: good.cert.clone(),
    };
    let text = ctl_refused(&eps, &wrong_ca, &["get", "k1"], "wrong CA");
    assert!(
        text.contains("certificate") || text.contains("deadline"),
        "{text}"
    );
    assert!(https_get(&m.addr(), "/health", &wrong_ca).is_err());
    good_client_still_served("wrong-ca");

    // An expired client certificate from the right CA.
    let expired = Creds {
        ca: pki.ca_file(),
        cert: Some(pki.issue("expired", "alice", true)),
    };
    ctl_refused(&eps, &expired, &["get", "k1"], "expired client certificate");
    assert!(https_get(&m.addr(), "/health", &expired).is_err());
    good_client_still_served("expired");

    // A client certificate from a CA the server does not trust.
    let (cert, key) = other.leaf("mallory", false);
    let untrusted = Creds {
        ca: pki.ca_file(),
        cert: Some(pki.write_pair("untrusted", &cert, &key)),
    };
    ctl_refused(&eps, &untrusted, &["get", "k1"], "untrusted client CA");
    assert!(https_get(&m.addr(), "/health", &untrusted).is_err());
    good_client_still_served("untrusted");

    // No client certificate at all.
    let anonymous = Creds {
        ca: pki.ca_file(),
        cert: None,
    };
    ctl_refused(&eps, &anonymous, &["get", "k1"], "no client certificate");
    assert!(https_get(&m.addr(), "/health", &anonymous).is_err());
    good_client_still_served("anonymous");

    // Plaintext: etcdctl over http://, and a raw HTTP request.
    let plain_eps = format!("http://{}", m.addr());
    let plain = etcdctl(&plain_eps, &["--dial-timeout=3s", "get", "k1"], None);
    assert!(!plain.status.success(), "plaintext etcdctl must fail");
    let raw = common::http_get(&m.addr(), "/health");
    assert!(
        !matches!(raw, Some((200, _))),
        "plaintext HTTP must not be answered: {raw:?}"
    );
    good_client_still_served("plaintext");

    let log = m.proc.log_text();
    assert!(
        log.contains("rejected client connection"),
        "refusals are logged: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_crate_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let server = pki.issue("server", "server", false);
    let (cert, key) = pki.issue("client", "alice", false);
    let m = start_member("t3", dir.path(), client_tls_flags(&pki, &server));
    let good = Creds {
        ca: pki.ca_file(),
        cert: Some((cert.clone(), key.clone())),
    };
    let healthy = {
        let (m_addr, good) = (m.addr(), good.clone());
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                if matches!(https_get(&m_addr, "/health", &good), Ok(a) if a.status == 200) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            false
        })
        .await
        .expect("health wait")
    };
    assert!(healthy, "member not healthy: {}", m.proc.log_text());

    let read = |p: &Path| std::fs::read_to_string(p).expect("read PEM");
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&pki.ca_file())))
        .identity(etcd_client::Identity::from_pem(read(&cert), read(&key)));
    let options = etcd_client::ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10));
    let mut client = etcd_client::Client::connect([m.endpoint()], Some(options))
        .await
        .expect("etcd-client connects over TLS");
    client.put("crate", "tls", None).await.expect("put");
    let got = client.get("crate", None).await.expect("get");
    assert_eq!(got.kvs()[0].value_str().expect("utf-8"), "tls");
    let status = client.status().await.expect("status");
    assert!(status.leader() != 0);

    // Without a client certificate the same crate is refused.
    let anonymous = etcd_client::ConnectOptions::new()
        .with_tls(
            etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&pki.ca_file()))),
        )
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5));
    let refused = match etcd_client::Client::connect([m.endpoint()], Some(anonymous)).await {
        Err(_) => true,
        Ok(mut c) => c.get("crate", None).await.is_err(),
    };
    assert!(refused, "a client without certificate must be refused");
    client.get("crate", None).await.expect("still served");
}

#[test]
fn rotated_certificate_files_are_served_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let server = pki.issue("server", "server-1", false);
    let mut m = start_member("t4", dir.path(), client_tls_flags(&pki, &server));
    let good = Creds {
        ca: pki.ca_file(),
        cert: Some(pki.issue("client", "alice", false)),
    };
    wait_healthy(&mut m, &good);
    let der = |p: &Path| pem_certs(p)[0].as_ref().to_vec();
    let first = https_get(&m.addr(), "/health", &good).expect("before rotation");
    assert_eq!(first.server_cert, der(&server.0));

    // Rotate as operators do: write new files beside, rename over the old.
    let (cert, key) = pki.ca.leaf("server-2", false);
    let (new_cert, new_key) = pki.write_pair("server-next", &cert, &key);
    std::fs::rename(&new_key, &server.1).expect("rename key");
    std::fs::rename(&new_cert, &server.0).expect("rename cert");
    let second = https_get(&m.addr(), "/health", &good).expect("after rotation");
    assert_eq!(second.status, 200);
    assert_eq!(
        second.server_cert,
        der(&server.0),
        "a new connection must see the new certificate"
    );
    assert_ne!(second.server_cert, first.server_cert);
    assert_eq!(
        ctl_ok(&m.endpoint(), &good, &["put", "after", "rotation"]).trim(),
        "OK"
    );

    // A rotation that leaves a broken file keeps the last good certificate.
    write(&server.0, "not a certificate");
    let third = https_get(&m.addr(), "/health", &good).expect("broken rotation");
    assert_eq!(third.server_cert, second.server_cert);
    // And the CA file is re-read too: a client CA rotated in is trusted.
    let new_ca = Ca::new("rotated CA");
    write(&pki.ca_file(), &format!("{}{}", pki.ca.pem, new_ca.pem));
    write(&server.0, &cert);
    let (ccert, ckey) = new_ca.leaf("bob", false);
    let bob = Creds {
        ca: pki.ca_file(),
        cert: Some(pki.write_pair("bob", &ccert, &ckey)),
    };
    let answer = https_get(&m.addr(), "/health", &bob).expect("client of the new CA");
    assert_eq!(answer.status, 200);
}

/// The member leading, by `endpoint status` on every endpoint given.
fn leader_id(eps: &str, creds: &Creds) -> Option<u64> {
    let (ok, text) = ctl(eps, creds, &["endpoint", "status", "-w", "json"]);
    if !ok {
        return None;
    }
    let start = text.find('[')?;
    let json: serde_json::Value = serde_json::from_str(text[start..].lines().next()?).ok()?;
    json.as_array()?
        .iter()
        .filter_map(|e| e["Status"]["leader"].as_u64())
        .find(|l| *l != 0)
}

fn member_id(eps: &str, creds: &Creds) -> Option<u64> {
    let (ok, text) = ctl(eps, creds, &["endpoint", "status", "-w", "json"]);
    if !ok {
        return None;
    }
    let start = text.find('[')?;
    let json: serde_json::Value = serde_json::from_str(text[start..].lines().next()?).ok()?;
    json.as_array()?.first()?["Status"]["header"]["member_id"].as_u64()
}

#[test]
fn three_members_with_peer_tls_and_client_cert_auth_survive_the_leaders_kill9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let names = ["n1", "n2", "n3"];
    let ports: Vec<(u16, u16)> = names.iter().map(|_| (free_port(), free_port())).collect();
    let cluster = names
        .iter()
        .zip(&ports)
        .map(|(n, (_, pp))| format!("{n}={}", peer_url(*pp)))
        .collect::<Vec<_>>()
        .join(",");
    let mut members: Vec<Member> = names
        .iter()
        .zip(&ports)
        .map(|(name, (cp, pp))| {
            let server = pki.issue(&format!("{name}-server"), name, false);
            let peer = pki.issue(&format!("{name}-peer"), name, false);
            let mut flags = client_tls_flags(&pki, &server);
            flags.extend(peer_tls_flags(&pki, &peer));
            flags.push(format!("--initial-cluster={cluster}"));
            flags.push("--initial-cluster-state=new".to_owned());
            start_member_on(name, dir.path(), *cp, *pp, flags)
        })
        .collect();
    let good = Creds {
        ca: pki.ca_file(),
        cert: Some(pki.issue("client", "root", false)),
    };
    for m in members.iter_mut() {
        wait_healthy(m, &good);
    }
    let all_eps = members
        .iter()
        .map(Member::endpoint)
        .collect::<Vec<_>>()
        .join(",");
    let members_list = ctl_ok(&all_eps, &good, &["member", "list"]);
    assert_eq!(members_list.lines().count(), 3, "{members_list}");
    assert!(members_list.contains("https://127.0.0.1"), "{members_list}");
    for i in 0..20 {
        let (k, v) = (format!("key{i}"), format!("v{i}"));
        assert_eq!(ctl_ok(&all_eps, &good, &["put", &k, &v]).trim(), "OK");
    }

    // Kill -9 the leader.
    let leader = common::poll_until(WAIT, "a leader", || {
        leader_id(&all_eps, &good).ok_or_else(|| "no leader yet".to_owned())
    });
    let leader_index = members
        .iter()
        .position(|m| member_id(&m.endpoint(), &good) == Some(leader))
        .expect("the leader is one of the members");

    // A follower hands lease keep-alives and membership changes to the
    // leader's client port, over TLS with its own certificate.
    let follower = members[(leader_index + 1) % members.len()].endpoint();
    let granted = ctl_ok(&follower, &good, &["lease", "grant", "60"]);
    let lease = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_owned();
    let kept = ctl_ok(&follower, &good, &["lease", "keep-alive", "--once", &lease]);
    assert!(kept.contains("keepalived with TTL"), "{kept}");
    // etcd refuses member changes until every member has been connected
    // for a while (`unhealthy cluster`): a young cluster is retried.
    let learner_url = format!("--peer-urls={}", peer_url(free_port()));
    let added = common::poll_until(WAIT, "member add through a follower", || {
        match ctl(
            &follower,
            &good,
            &["member", "add", "n4", "--learner", &learner_url],
        ) {
            (true, text) => Ok(text),
            (false, text) if text.contains("unhealthy cluster") => Err(text),
            (false, text) => panic!("member add through a follower failed: {text}"),
        }
    });
    let learner = added
        .split_whitespace()
        .nth(1)
        .expect("the new member's id")
        .to_owned();
    ctl_ok(&follower, &good, &["member", "remove", &learner]);

    members[leader_index].proc.kill9();
    let rest: Vec<&Member> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader_index)
        .map(|(_, m)| m)
        .collect();
    let rest_eps = rest
        .iter()
        .map(|m| m.endpoint())
        .collect::<Vec<_>>()
        .join(",");
    let new_leader = common::poll_until(WAIT, "a new leader over peer TLS", || {
        match leader_id(&rest_eps, &good) {
            Some(l) if l != leader => Ok(l),
            other => Err(format!("leader {other:?}")),
        }
    });
    assert_ne!(new_leader, leader);
    for i in 20..30 {
        let (k, v) = (format!("key{i}"), format!("v{i}"));
        assert_eq!(ctl_ok(&rest_eps, &good, &["put", &k, &v]).trim(), "OK");
    }
    let keys = ctl_ok(&rest_eps, &good, &["get", "key", "--prefix", "--keys-only"]);
    assert_eq!(
        keys.split_whitespace().count(),
        30,
        "every acknowledged write: {keys}"
    );

    // The killed member comes back and catches up over peer TLS.
    members[leader_index].restart();
    let back = &mut members[leader_index];
    wait_healthy(back, &good);
    common::poll_until(WAIT, "the restarted member caught up", || {
        let (ok, text) = ctl(
            &back.endpoint(),
            &good,
            &["get", "key29", "--consistency=s", "--print-value-only"],
        );
        match ok && text.trim() == "v29" {
            true => Ok(()),
            false => Err(text),
        }
    });
}

#[test]
fn a_member_added_at_run_time_joins_over_peer_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let flags_of = |name: &str| {
        let mut flags = client_tls_flags(&pki, &pki.issue(&format!("{name}-server"), name, false));
        flags.extend(peer_tls_flags(
            &pki,
            &pki.issue(&format!("{name}-peer"), name, false),
        ));
        flags
    };
    let good = Creds {
        ca: pki.ca_file(),
        cert: Some(pki.issue("client", "root", false)),
    };
    let mut first = start_member("j1", dir.path(), flags_of("j1"));
    wait_healthy(&mut first, &good);
    assert_eq!(
        ctl_ok(&first.endpoint(), &good, &["put", "before", "join"]).trim(),
        "OK"
    );

    // `member add` on the only member (the leader), then start the new
    // member as etcd's runbook says: it learns the cluster through its
    // peers' TLS peer port.
    let (cp, pp) = (free_port(), free_port());
    let added = ctl_ok(
        &first.endpoint(),
        &good,
        &[
            "member",
            "add",
            "j2",
            &format!("--peer-urls={}", peer_url(pp)),
        ],
    );
    assert!(added.contains("ETCD_INITIAL_CLUSTER="), "{added}");
    let mut flags = flags_of("j2");
    flags.push(format!(
        "--initial-cluster=j1={},j2={}",
        peer_url(first.peer_port),
        peer_url(pp)
    ));
    flags.push("--initial-cluster-state=existing".to_owned());
    let mut second = start_member_on("j2", dir.path(), cp, pp, flags);
    wait_healthy(&mut second, &good);
    common::poll_until(WAIT, "the new member has the data", || {
        let (ok, text) = ctl(
            &second.endpoint(),
            &good,
            &["get", "before", "--consistency=s", "--print-value-only"],
        );
        match ok && text.trim() == "join" {
            true => Ok(()),
            false => Err(text),
        }
    });
    let list = ctl_ok(&first.endpoint(), &good, &["member", "list"]);
    assert_eq!(list.matches("started").count(), 2, "{list}");
}

#[test]
fn auto_tls_makes_self_signed_certificates_under_the_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = start_member(
        "t5",
        dir.path(),
        vec!["--auto-tls".to_owned(), "--peer-auto-tls".to_owned()],
    );
    let data_dir = m.proc.data_dir.clone();
    let eps = m.endpoint();
    let insecure = |args: &[&str]| {
        // etcdctl 3.4 uses TLS without certificate files only when told to.
        let mut all = vec![
            "--insecure-transport=false",
            "--insecure-skip-tls-verify",
            "--dial-timeout=3s",
        ];
        all.extend_from_slice(args);
        etcdctl(&eps, &all, None)
    };
    common::poll_until(WAIT, "the auto-TLS member serves", || {
        let out = insecure(&["put", "auto", "tls"]);
        match out.status.success() {
            true => Ok(()),
            false => Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                m.proc.log_text()
            )),
        }
    });
    let got = insecure(&["get", "auto", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "tls");
    for side in ["client", "peer"] {
        for file in ["cert.pem", "key.pem"] {
            let path = data_dir.join("fixtures").join(side).join(file);
            assert!(path.exists(), "{} missing", path.display());
        }
    }
}

/// Runs cairn with `flags` and expects it to exit 1 at once with `want`
/// in its one-line error.
fn refused_at_start(dir: &Path, flags: &[String], want: &str) {
    let out = Command::new(common::cairn_bin())
        .args(flags)
        .arg(format!(
            "--data-dir={}",
            dir.join("refused.cairn").display()
        ))
        .stdin(Stdio::null())
        .output()
        .expect("run cairn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{flags:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("cairn: "), "{last}");
    assert!(last.contains(want), "{flags:?}: want {want:?} in {last:?}");
}

#[test]
fn unusable_certificate_files_are_clear_startup_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let (cert, key) = pki.issue("server", "server", false);
    let (_, other_key) = pki.issue("other", "other", false);
    let garbage = pki.dir.join("garbage.pem");
    write(&garbage, "this is not PEM\n");
    let port = free_port();
    let base = vec![
        format!("--listen-client-urls=https://127.0.0.1:{port}"),
        format!("--advertise-client-urls=https://127.0.0.1:{port}"),
        format!("--listen-peer-urls=http://127.0.0.1:{}", free_port()),
    ];
    let with = |more: &[String]| {
        let mut flags = base.clone();
        flags.extend_from_slice(more);
        flags
    };
    let missing = pki.dir.join("missing.pem");
    refused_at_start(
        dir.path(),
        &with(&[arg("cert-file", &missing), arg("key-file", &key)]),
        &format!("cannot read --cert-file {}", missing.display()),
    );
    refused_at_start(
        dir.path(),
        &with(&[arg("cert-file", &garbage), arg("key-file", &key)]),
        "tls: failed to find any PEM data in certificate input",
    );
    refused_at_start(
        dir.path(),
        &with(&[arg("cert-file", &cert), arg("key-file", &garbage)]),
        "tls: failed to find any PEM data in key input",
    );
    refused_at_start(
        dir.path(),
        &with(&[arg("cert-file", &cert), arg("key-file", &other_key)]),
        "do not make a usable key pair",
    );
    refused_at_start(
        dir.path(),
        &with(&[
            arg("cert-file", &cert),
            arg("key-file", &key),
            arg("trusted-ca-file", &garbage),
            "--client-cert-auth".to_owned(),
        ]),
        "--trusted-ca-file",
    );
    // Flag checks, in etcd's words.
    refused_at_start(
        dir.path(),
        &base,
        "TLS key/cert (--cert-file, --key-file) must be provided for client url",
    );
    refused_at_start(
        dir.path(),
        &with(&["--cipher-suites=TLS_RSA_WITH_RC4_128_SHA".to_owned()]),
        "is not supported by cairn",
    );
}

/// The last line of a server's stderr that reports a fatal error, without
/// its prefix: cairn's `cairn: `, etcd's `<date> <time> C | etcdmain: `.
fn fatal_message(stderr: &str) -> Option<String> {
    stderr.lines().rev().find_map(|l| {
        l.strip_prefix("cairn: ")
            .or_else(|| l.split_once(" C | etcdmain: ").map(|(_, m)| m))
            .map(str::to_owned)
    })
}

/// Runs `program` with `flags` on fresh ports and data dir; its exit code
/// and fatal message.
fn run_to_failure(program: &str, dir: &Path, flags: &[String]) -> (Option<i32>, Option<String>) {
    let data = dir.join(format!("d{}", free_port()));
    let mut child = Command::new(program)
        .arg(format!("--data-dir={}", data.display()))
        .args(flags)
        .env_remove("ETCD_NAME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let _ = child.wait();
    (status, fatal_message(&stderr))
}

#[test]
fn flag_errors_are_etcd_3_4s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let (cert, _) = pki.issue("server", "server", false);
    let cases: Vec<Box<dyn Fn() -> Vec<String>>> = vec![
        // An https client URL without a certificate.
        Box::new(|| {
            let (c, p) = (free_port(), free_port());
            vec![
                format!("--listen-client-urls=https://127.0.0.1:{c}"),
                format!("--advertise-client-urls=https://127.0.0.1:{c}"),
                format!("--listen-peer-urls=http://127.0.0.1:{p}"),
            ]
        }),
        // An https peer URL without a certificate.
        Box::new(|| {
            let (c, p) = (free_port(), free_port());
            vec![
                format!("--listen-client-urls=http://127.0.0.1:{c}"),
                format!("--advertise-client-urls=http://127.0.0.1:{c}"),
                format!("--listen-peer-urls=https://127.0.0.1:{p}"),
                format!("--initial-advertise-peer-urls=https://127.0.0.1:{p}"),
                format!("--initial-cluster=default=https://127.0.0.1:{p}"),
            ]
        }),
        // A certificate without its key.
        Box::new(|| {
            let (c, p) = (free_port(), free_port());
            vec![
                format!("--listen-client-urls=https://127.0.0.1:{c}"),
                format!("--advertise-client-urls=https://127.0.0.1:{c}"),
                format!("--listen-peer-urls=http://127.0.0.1:{p}"),
                arg("cert-file", &cert),
            ]
        }),
        // A cipher suite Go does not know.
        Box::new(|| {
            let (c, p) = (free_port(), free_port());
            vec![
                format!("--listen-client-urls=http://127.0.0.1:{c}"),
                format!("--advertise-client-urls=http://127.0.0.1:{c}"),
                format!("--listen-peer-urls=http://127.0.0.1:{p}"),
                "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,FOO".to_owned(),
            ]
        }),
    ];
    for make in cases {
        let flags = make();
        let etcd = run_to_failure(&common::etcd_bin(), dir.path(), &flags);
        let cairn = run_to_failure(common::cairn_bin(), dir.path(), &flags);
        assert_eq!(etcd.0, Some(1), "etcd 3.4 refuses {flags:?}: {etcd:?}");
        assert!(etcd.1.is_some(), "etcd's message: {etcd:?}");
        assert_eq!(cairn, etcd, "cairn answers as etcd 3.4 for {flags:?}");
    }
}

// ---------------------------------------------------------------------------
// TLS and auth together.
// ---------------------------------------------------------------------------

/// Starts `server` (cairn or etcd 3.4) alone with client TLS and
/// client-certificate auth, plain peer URL.
fn start_single_tls(server: common::Server, dir: &Path, pki: &Pki, name: &str) -> Member {
    let (cp, pp) = (free_port(), free_port());
    let client = format!("https://127.0.0.1:{cp}");
    let peer = format!("http://127.0.0.1:{pp}");
    let mut flags = vec![
        format!("--name={name}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster={name}={peer}"),
    ];
    flags.extend(client_tls_flags(
        pki,
        &pki.issue(&format!("{name}-server"), name, false),
    ));
    Member {
        proc: common::spawn_member(server, name, dir, cp, pp, &flags, &[]),
        name: name.to_owned(),
        client_port: cp,
        peer_port: pp,
        flags,
        dir: dir.to_owned(),
    }
}

/// The auth session over TLS: admin steps as the certificate `CN=root`,
/// then requests whose user is the certificate's CN, a password login that
/// overrides the CN, a CN naming no user.
fn tls_auth_session(eps: &str, pki: &Pki) -> Vec<String> {
    let as_cn = |cn: &str| Creds {
        ca: pki.ca_file(),
        cert: Some(pki.issue(&format!("user-{cn}"), cn, false)),
    };
    let (root, alice, nobody) = (as_cn("root"), as_cn("alice"), as_cn("nobody"));
    let steps: Vec<(&Creds, &str)> = vec![
        (&root, "user add root:rootpw"),
        (&root, "user grant-role root root"),
        (&root, "role add reader"),
        (&root, "role grant-permission reader read /p/ --prefix"),
        (&root, "user add alice:alicepw"),
        (&root, "user grant-role alice reader"),
        (&root, "put /p/a 1"),
        (&alice, "auth enable"),
        (&root, "auth enable"),
        (&root, "put /p/b 2"),
        (&alice, "get /p/a"),
        (&alice, "put /p/a 3"),
        (&alice, "user list"),
        (&alice, "user get alice"),
        (&nobody, "get /p/a"),
        (&alice, "--user=root:rootpw put /p/c 4"),
        (&alice, "--user=root:wrong put /p/c 4"),
        (&root, "get /p/ --prefix --keys-only"),
        (&root, "user revoke-role alice reader"),
        (&alice, "get /p/a"),
        (&root, "auth disable"),
        (&nobody, "get /p/a --print-value-only"),
    ];
    steps
        .into_iter()
        .map(|(creds, cmd)| {
            let args: Vec<&str> = cmd.split_whitespace().collect();
            let (ok, text) = ctl(eps, creds, &args);
            let text: String = text
                .lines()
                .filter(|l| !l.starts_with("{\"level\":"))
                .map(|l| format!("{l}\n"))
                .collect();
            format!(
                "$ etcdctl {cmd}\n[{}]\n{text}",
                if ok { "ok" } else { "failed" }
            )
        })
        .collect()
}

#[test]
fn auth_over_tls_with_client_certificate_users_answers_as_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let root = Creds {
        ca: pki.ca_file(),
        cert: Some(pki.issue("probe", "root", false)),
    };
    let etcd_dir = dir.path().join("etcd");
    std::fs::create_dir_all(&etcd_dir).expect("dir");
    let etcd = start_single_tls(common::Server::Etcd, &etcd_dir, &pki, "e1");
    // etcd answers HTTP/2 to a client offering it: ask with etcdctl.
    common::poll_until(WAIT, "etcd healthy over TLS", || {
        match ctl(&etcd.endpoint(), &root, &["endpoint", "health"]) {
            (true, _) => Ok(()),
            (false, text) => Err(text),
        }
    });
    let want = tls_auth_session(&etcd.endpoint(), &pki);
    drop(etcd);
    let cairn_dir = dir.path().join("cairn");
    std::fs::create_dir_all(&cairn_dir).expect("dir");
    let mut cairn = start_single_tls(common::Server::Cairn, &cairn_dir, &pki, "e1");
    wait_healthy(&mut cairn, &root);
    let got = tls_auth_session(&cairn.endpoint(), &pki);
    common::assert_same_steps(&want, &got, ("etcd", "cairn"), "TLS auth session");
    // cairnctl, on a fresh cairn, answers as etcdctl did on etcd.
    drop(cairn);
    let ctl_dir = dir.path().join("cairnctl");
    std::fs::create_dir_all(&ctl_dir).expect("dir");
    let mut fresh = start_single_tls(common::Server::Cairn, &ctl_dir, &pki, "e1");
    wait_healthy(&mut fresh, &root);
    let by_cairnctl = common::with_ctl(common::cairnctl_bin(), || {
        tls_auth_session(&fresh.endpoint(), &pki)
    });
    common::assert_same_steps(
        &want,
        &by_cairnctl,
        ("etcdctl on etcd", "cairnctl on cairn"),
        "TLS auth session by cairnctl",
    );
    // The session means something: the CN is the user.
    assert!(
        got[10].contains("/p/a") && got[10].contains("[ok]"),
        "{}",
        got[10]
    );
    assert!(got[11].contains("permission denied"), "{}", got[11]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_crate_over_tls_logs_in_as_a_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let server = pki.issue("server", "server", false);
    let (cert, key) = pki.issue("client", "nobody", false);
    let m = start_member("t4", dir.path(), client_tls_flags(&pki, &server));
    let good = Creds {
        ca: pki.ca_file(),
        cert: Some((cert.clone(), key.clone())),
    };
    let (m_addr, probe) = (m.addr(), good.clone());
    let healthy = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if matches!(https_get(&m_addr, "/health", &probe), Ok(a) if a.status == 200) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    })
    .await
    .expect("health wait");
    assert!(healthy, "member not healthy: {}", m.proc.log_text());
    let read = |p: &Path| std::fs::read_to_string(p).expect("read PEM");
    let options = || {
        etcd_client::ConnectOptions::new()
            .with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(read(&pki.ca_file())))
                    .identity(etcd_client::Identity::from_pem(read(&cert), read(&key))),
            )
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
    };
    // Users and roles (auth off), then auth on.
    let mut admin = etcd_client::Client::connect([m.endpoint()], Some(options()))
        .await
        .expect("connect");
    admin.user_add("root", "rootpw", None).await.expect("root");
    admin
        .user_grant_role("root", "root")
        .await
        .expect("root role");
    admin.user_add("bob", "bobpw", None).await.expect("bob");
    admin.role_add("crate").await.expect("role");
    admin
        .role_grant_permission(
            "crate",
            etcd_client::Permission::read_write("crate/").with_prefix(),
        )
        .await
        .expect("grant");
    admin
        .user_grant_role("bob", "crate")
        .await
        .expect("grant role");
    admin.auth_enable().await.expect("auth enable");
    // The certificate's CN (`nobody`) is no user: refused.
    assert!(admin.put("crate/x", "1", None).await.is_err());
    // The crate logs in as bob over TLS; bob's token decides, not the CN.
    let mut bob =
        etcd_client::Client::connect([m.endpoint()], Some(options().with_user("bob", "bobpw")))
            .await
            .expect("bob connects over TLS");
    bob.put("crate/x", "1", None)
        .await
        .expect("bob may write crate/");
    let got = bob.get("crate/x", None).await.expect("bob may read crate/");
    assert_eq!(got.kvs()[0].value_str().expect("utf-8"), "1");
    let denied = bob
        .put("other", "1", None)
        .await
        .expect_err("outside crate/");
    assert!(denied.to_string().contains("permission denied"), "{denied}");
    let wrong =
        etcd_client::Client::connect([m.endpoint()], Some(options().with_user("bob", "nope")))
            .await;
    let refused = match wrong {
        Err(e) => e.to_string(),
        Ok(mut c) => c
            .get("crate/x", None)
            .await
            .expect_err("wrong password")
            .to_string(),
    };
    assert!(refused.contains("authentication failed"), "{refused}");
}

// ---------------------------------------------------------------------------
// cairnctl's TLS flags, against etcdctl's.
// ---------------------------------------------------------------------------

/// The TLS flags of the command line (`--cacert --cert --key`,
/// `--insecure-skip-tls-verify`, `https://` and bare endpoints) and their
/// errors, run by the command line [`common::etcdctl`] runs on this thread
/// against `m`: each step's command, exit status and output (stderr's JSON
/// log lines dropped; `snapshot save` by its stdout alone, since etcdctl
/// logs its progress as JSON and cairnctl as text).
fn tls_flags_session(m: &Member, pki: &Pki, wrong_ca: &Path) -> Vec<String> {
    let ca = arg("cacert", &pki.ca_file());
    let (cert, key) = pki.issue("cli-alice", "alice", false);
    let (cert, key) = (arg("cert", &cert), arg("key", &key));
    let https = m.endpoint();
    let bare = m.addr();
    let plain = format!("http://{}", m.addr());
    let missing = m.dir.join("missing");
    let snap = m.dir.join("tls-snap.db");
    let quick = ["--dial-timeout=1s", "--command-timeout=2s"];
    let steps: Vec<(&str, Vec<String>)> = vec![
        (
            &https,
            vec![
                ca.clone(),
                cert.clone(),
                key.clone(),
                "put".into(),
                "tls/k".into(),
                "v1".into(),
            ],
        ),
        (
            &bare,
            vec![
                ca.clone(),
                cert.clone(),
                key.clone(),
                "get".into(),
                "tls/k".into(),
            ],
        ),
        (
            &https,
            vec![
                ca.clone(),
                cert.clone(),
                key.clone(),
                "endpoint".into(),
                "health".into(),
            ],
        ),
        (
            &https,
            vec![
                "--insecure-skip-tls-verify".into(),
                cert.clone(),
                key.clone(),
                "get".into(),
                "tls/k".into(),
                "--print-value-only".into(),
            ],
        ),
        (
            &https,
            [arg("cacert", wrong_ca), cert.clone(), key.clone()]
                .into_iter()
                .chain(quick.map(String::from))
                .chain(["get".into(), "tls/k".into()])
                .collect(),
        ),
        (
            &plain,
            [ca.clone(), cert.clone(), key.clone()]
                .into_iter()
                .chain(quick.map(String::from))
                .chain(["get".into(), "tls/k".into()])
                .collect(),
        ),
        (
            &https,
            vec![
                arg("cacert", &missing.join("ca.pem")),
                "get".into(),
                "tls/k".into(),
            ],
        ),
        (
            &https,
            vec![ca.clone(), cert.clone(), "get".into(), "tls/k".into()],
        ),
        (
            &https,
            vec![ca.clone(), key.clone(), "get".into(), "tls/k".into()],
        ),
        (
            &https,
            vec![
                ca.clone(),
                cert.clone(),
                arg("key", &missing.join("key.pem")),
                "get".into(),
                "tls/k".into(),
            ],
        ),
        (
            &https,
            vec![
                ca.clone(),
                cert.clone(),
                key.clone(),
                "snapshot".into(),
                "save".into(),
                snap.display().to_string(),
            ],
        ),
    ];
    steps
        .into_iter()
        .map(|(eps, args)| {
            let _ = std::fs::remove_file(&snap);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = etcdctl(eps, &refs, None);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let text = if args.iter().any(|a| a == "snapshot") {
                stdout
            } else {
                format!("{stdout}{stderr}")
            };
            let text = common::mask_ctl_noise(&text);
            format!(
                "$ etcdctl --endpoints={eps} {}\n[exit {:?}]\n{text}",
                args.join(" "),
                out.status.code()
            )
        })
        .collect()
}

#[test]
fn cairnctl_tls_flags_answer_as_etcdctls_against_etcd_and_cairn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let other = Pki::new(&dir.path().join("other"));
    let probe = Creds {
        ca: pki.ca_file(),
        cert: Some(pki.issue("probe", "root", false)),
    };
    for server in [common::Server::Etcd, common::Server::Cairn] {
        let sdir = dir.path().join(server.label());
        std::fs::create_dir_all(&sdir).expect("dir");
        let m = start_single_tls(server, &sdir, &pki, "c1");
        common::poll_until(WAIT, "healthy over TLS", || {
            match ctl(&m.endpoint(), &probe, &["endpoint", "health"]) {
                (true, _) => Ok(()),
                (false, text) => Err(text),
            }
        });
        let want = tls_flags_session(&m, &pki, &other.ca_file());
        let got = common::with_ctl(common::cairnctl_bin(), || {
            tls_flags_session(&m, &pki, &other.ca_file())
        });
        common::assert_same_steps(
            &want,
            &got,
            ("etcdctl", "cairnctl"),
            &format!("TLS flags against {}", server.label()),
        );
        // The session means something: TLS calls answered, bad ones refused.
        assert!(got[1].contains("tls/k\nv1"), "{}", got[1]);
        assert!(got[3].contains("[exit Some(0)]\nv1"), "{}", got[3]);
        assert!(got[4].contains("[exit Some(1)]"), "{}", got[4]);
        assert!(got[7].contains("[exit Some(128)]"), "{}", got[7]);
        assert!(got[10].contains("Snapshot saved at"), "{}", got[10]);
    }
}
