//! `member add | remove | update | list | promote`, `endpoint health |
//! status | hashkv [--cluster]`, `alarm list | disarm`, `move-leader` and
//! `version`, as etcdctl 3.4 runs and prints them.

use std::time::Instant;

use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, HashKvRequest, HashKvResponse, Member,
    MemberAddRequest, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberRemoveRequest, MemberUpdateRequest, MoveLeaderRequest, RangeRequest, ResponseHeader,
    StatusRequest, StatusResponse,
};
use prost::Message;

use super::client::{Client, Global};
use super::flags::Flags;
use super::kv::unary;
use super::output::*;
use super::{out, Failure, EXIT_BAD_ARGS, EXIT_ERROR};

use crate::backup::progress::human_bytes;

fn bad_args(msg: impl Into<String>) -> Failure {
    Failure(EXIT_BAD_ARGS, msg.into())
}

/// Go's `strconv.ParseUint(s, 16, 64)` with its error text.
fn parse_hex_u64(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "strconv.ParseUint: parsing {}: invalid syntax",
            go_quote(s)
        ));
    }
    u64::from_str_radix(s, 16).map_err(|_| {
        format!(
            "strconv.ParseUint: parsing {}: value out of range",
            go_quote(s)
        )
    })
}

fn member_id_arg(args: &[String]) -> Result<u64, Failure> {
    let [id] = args else {
        return Err(bad_args("member ID is not provided"));
    };
    parse_hex_u64(id).map_err(|e| bad_args(format!("bad member ID arg ({e}), expecting ID in Hex")))
}

fn member_json(m: &Member) -> String {
    let strs = |v: &[String]| nz_arr(v.iter().map(|s| jstr(s)).collect());
    obj(&[
        ("ID", nz_u(m.id)),
        ("name", nz_str(&m.name)),
        ("peerURLs", strs(&m.peer_ur_ls)),
        ("clientURLs", strs(&m.client_ur_ls)),
        ("isLearner", nz_b(m.is_learner)),
    ])
}

fn members_json(ms: &[Member]) -> Option<String> {
    nz_arr(ms.iter().map(member_json).collect())
}

fn member_rows(ms: &[Member]) -> Vec<Vec<String>> {
    ms.iter()
        .map(|m| {
            vec![
                format!("{:x}", m.id),
                if m.name.is_empty() {
                    "unstarted"
                } else {
                    "started"
                }
                .to_owned(),
                m.name.clone(),
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect()
}

const MEMBER_HEADERS: &[&str] = &[
    "ID",
    "Status",
    "Name",
    "Peer Addrs",
    "Client Addrs",
    "Is Learner",
];

fn print_member_list(format: Format, r: &MemberListResponse) -> Result<Vec<u8>, Failure> {
    Ok(match format {
        Format::Simple => member_rows(&r.members)
            .iter()
            .map(|row| row.join(", ") + "\n")
            .collect::<String>()
            .into_bytes(),
        Format::Json => (obj(&[
            ("header", opt_header(&r.header)),
            ("members", members_json(&r.members)),
        ]) + "\n")
            .into_bytes(),
        Format::Fields => {
            let mut t = header_fields_text(&r.header);
            for m in &r.members {
                t += &format!("\"ID\" : {}\n\"Name\" : {}\n", m.id, go_quote(&m.name));
                for u in &m.peer_ur_ls {
                    t += &format!("\"PeerURL\" : {}\n", go_quote(u));
                }
                for u in &m.client_ur_ls {
                    t += &format!("\"ClientURL\" : {}\n", go_quote(u));
                }
                t += &format!("\"IsLearner\" : {}\n\n", m.is_learner);
            }
            t.into_bytes()
        }
        Format::Table => table(MEMBER_HEADERS, &member_rows(&r.members)).into_bytes(),
        Format::Protobuf => r.encode_to_vec(),
    })
}

/// The JSON of a member change's answer: header, (member,) members.
fn change_json(h: &Option<ResponseHeader>, member: Option<&Member>, ms: &[Member]) -> String {
    let mut fields = vec![("header", opt_header(h))];
    if let Some(m) = member {
        fields.push(("member", Some(member_json(m))));
    }
    fields.push(("members", members_json(ms)));
    obj(&fields) + "\n"
}

pub fn member(sub: &str, g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    match sub {
        "list" => {
            let g = g.with_format(f)?;
            let r = unary(g.clone(), |mut c| async move {
                c.call(|ctx| {
                    let req = ctx.req(MemberListRequest {
                        linearizable: false,
                    });
                    async move {
                        ClusterClient::new(ctx.channel)
                            .member_list(req)
                            .await
                            .map(tonic::Response::into_inner)
                    }
                })
                .await
            })?;
            out(&print_member_list(g.format, &r)?)
        }
        "add" => {
            let Some(name) = args.first() else {
                return Err(bad_args("member name not provided"));
            };
            if args.len() > 1 {
                let mut ev = "too many arguments".to_owned();
                for s in args {
                    if s.to_lowercase().starts_with("http") {
                        ev += &format!(", did you mean --peer-urls={s}");
                    }
                }
                return Err(bad_args(ev));
            }
            let peer_urls = f.str_or("peer-urls", "");
            if peer_urls.is_empty() {
                return Err(bad_args("member peer urls not provided"));
            }
            let urls: Vec<String> = peer_urls.split(',').map(str::to_owned).collect();
            let learner = f.bool("learner")?;
            let g = g.with_format(f)?;
            let r = unary(g.clone(), |mut c| async move {
                c.call(|ctx| {
                    let req = ctx.req(MemberAddRequest {
                        peer_ur_ls: urls.clone(),
                        is_learner: learner,
                    });
                    async move {
                        ClusterClient::new(ctx.channel)
                            .member_add(req)
                            .await
                            .map(tonic::Response::into_inner)
                    }
                })
                .await
            })?;
            let new_id = r.member.as_ref().map_or(0, |m| m.id);
            let cluster = r.header.as_ref().map_or(0, |h| h.cluster_id);
            let text = match g.format {
                Format::Simple => {
                    let mut conf = Vec::new();
                    for m in &r.members {
                        for u in &m.peer_ur_ls {
                            let n = if m.id == new_id { name } else { &m.name };
                            conf.push(format!("{n}={u}"));
                        }
                    }
                    format!(
                        "Member {new_id:16x} added to cluster {cluster:16x}\n\nETCD_NAME={}\nETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_ADVERTISE_PEER_URLS={}\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
                        go_quote(name),
                        go_quote(&conf.join(",")),
                        go_quote(&peer_urls)
                    )
                    .into_bytes()
                }
                Format::Json => change_json(&r.header, r.member.as_ref(), &r.members).into_bytes(),
                Format::Protobuf => r.encode_to_vec(),
                other => return Err(other.unsupported()),
            };
            out(&text)
        }
        "remove" | "promote" => {
            let id = member_id_arg(args)?;
            let g = g.with_format(f)?;
            let remove = sub == "remove";
            let (header, members, bytes) = unary(g.clone(), |mut c| async move {
                c.call(|ctx| async move {
                    let mut client = ClusterClient::new(ctx.channel.clone());
                    if remove {
                        let r = client
                            .member_remove(ctx.req(MemberRemoveRequest { id }))
                            .await?
                            .into_inner();
                        Ok((r.header.clone(), r.members.clone(), r.encode_to_vec()))
                    } else {
                        let r = client
                            .member_promote(ctx.req(MemberPromoteRequest { id }))
                            .await?
                            .into_inner();
                        Ok((r.header.clone(), r.members.clone(), r.encode_to_vec()))
                    }
                })
                .await
            })?;
            let cluster = header.as_ref().map_or(0, |h| h.cluster_id);
            let text = match (g.format, remove) {
                (Format::Simple, true) => {
                    format!("Member {id:16x} removed from cluster {cluster:16x}\n").into_bytes()
                }
                (Format::Simple, false) => {
                    format!("Member {id:16x} promoted in cluster {cluster:16x}\n").into_bytes()
                }
                (Format::Json, true) => change_json(&header, None, &members).into_bytes(),
                (Format::Protobuf, true) => bytes,
                (other, _) => return Err(other.unsupported()),
            };
            out(&text)
        }
        _ => {
            let id = member_id_arg(args)?;
            let peer_urls = f.str_or("peer-urls", "");
            if peer_urls.is_empty() {
                return Err(bad_args("member peer urls not provided"));
            }
            let urls: Vec<String> = peer_urls.split(',').map(str::to_owned).collect();
            let g = g.with_format(f)?;
            let r = unary(g.clone(), |mut c| async move {
                c.call(|ctx| {
                    let req = ctx.req(MemberUpdateRequest {
                        id,
                        peer_ur_ls: urls.clone(),
                    });
                    async move {
                        ClusterClient::new(ctx.channel)
                            .member_update(req)
                            .await
                            .map(tonic::Response::into_inner)
                    }
                })
                .await
            })?;
            let cluster = r.header.as_ref().map_or(0, |h| h.cluster_id);
            let text = match g.format {
                Format::Simple => {
                    format!("Member {id:16x} updated in cluster {cluster:16x}\n").into_bytes()
                }
                Format::Json => change_json(&r.header, None, &r.members).into_bytes(),
                Format::Protobuf => r.encode_to_vec(),
                other => return Err(other.unsupported()),
            };
            out(&text)
        }
    }
}

/// The endpoints a command acts on: those given, or with `--cluster` the
/// client URLs of every member.
async fn targets(g: &Global, cluster: bool) -> Result<Vec<String>, Failure> {
    if !cluster {
        return Ok(g.endpoints.clone());
    }
    super::snapshot::member_client_urls(g).await
}

pub fn endpoint(sub: &str, g: Global, f: &Flags, _args: &[String]) -> Result<(), Failure> {
    let cluster = f.bool("cluster")?;
    let g = g.with_format(f)?;
    match sub {
        "health" => health(g, cluster),
        "status" => status(g, cluster),
        _ => hash_kv(g, cluster, f.int_or("rev", 0)?),
    }
}

struct Health {
    ep: String,
    health: bool,
    took: String,
    error: String,
}

fn health(g: Global, cluster: bool) -> Result<(), Failure> {
    let list = super::client::runtime()?.block_on(async {
        let eps = targets(&g, cluster).await?;
        let checks = eps.into_iter().map(|ep| {
            let mut one = g.clone();
            one.endpoints = vec![ep.clone()];
            async move {
                let mut c = Client::new(one);
                if let Err(Failure(_, e)) = c.ensure_login().await {
                    return Health {
                        ep,
                        health: false,
                        took: String::new(),
                        error: e,
                    };
                }
                let start = Instant::now();
                let r = c
                    .range(RangeRequest {
                        key: b"health".to_vec(),
                        ..RangeRequest::default()
                    })
                    .await;
                let took = go_duration_string(start.elapsed());
                match r {
                    Ok(_) => Health {
                        ep,
                        health: true,
                        took,
                        error: String::new(),
                    },
                    Err(e) if e == "etcdserver: permission denied" => Health {
                        ep,
                        health: true,
                        took,
                        error: String::new(),
                    },
                    Err(e) => Health {
                        ep,
                        health: false,
                        took,
                        error: e,
                    },
                }
            }
        });
        Ok::<_, Failure>(futures::future::join_all(checks).await)
    })?;
    let unhealthy = list.iter().any(|h| !h.error.is_empty());
    match g.format {
        Format::Simple => {
            for h in &list {
                if h.error.is_empty() {
                    eprintln!(
                        "{} is healthy: successfully committed proposal: took = {}",
                        h.ep, h.took
                    );
                } else {
                    eprintln!(
                        "{} is unhealthy: failed to commit proposal: {}",
                        h.ep, h.error
                    );
                }
            }
        }
        Format::Json => {
            let items = list
                .iter()
                .map(|h| {
                    obj(&[
                        ("endpoint", Some(jstr(&h.ep))),
                        ("health", Some(h.health.to_string())),
                        ("took", Some(jstr(&h.took))),
                        ("error", nz_str(&h.error)),
                    ])
                })
                .collect();
            out((arr(items) + "\n").as_bytes())?;
        }
        Format::Fields => {
            let mut t = String::new();
            for h in &list {
                t += &format!(
                    "\"Endpoint\" : {}\n\"Health\" : {}\n\"Took\" : {}\n\"Error\" : {}\n\n",
                    go_quote(&h.ep),
                    h.health,
                    h.took,
                    h.error
                );
            }
            out(t.as_bytes())?;
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|h| {
                    vec![
                        h.ep.clone(),
                        h.health.to_string(),
                        h.took.clone(),
                        h.error.clone(),
                    ]
                })
                .collect();
            out(table(&["endpoint", "health", "took", "error"], &rows).as_bytes())?;
        }
        Format::Protobuf => return Err(g.format.unsupported()),
    }
    if unhealthy {
        return Err(Failure(EXIT_ERROR, "unhealthy cluster".into()));
    }
    Ok(())
}

/// `call` at the member `ep` itself (a connection of its own, as clientv3's
/// maintenance calls to one endpoint), within the command timeout.
async fn at_member<T, F, Fut>(g: &Global, ep: &str, call: F) -> Result<T, String>
where
    F: FnMut(super::client::Ctx) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut one = g.clone();
    one.endpoints = vec![ep.to_owned()];
    let mut c = Client::new(one);
    c.ensure_login().await.map_err(|Failure(_, e)| e)?;
    c.call(call).await
}

fn status(g: Global, cluster: bool) -> Result<(), Failure> {
    let (list, failed) = super::client::runtime()?.block_on(async {
        let eps = targets(&g, cluster).await?;
        let mut list: Vec<(String, StatusResponse)> = Vec::new();
        let mut failed = false;
        for ep in eps {
            match at_member(&g, &ep, |ctx| {
                let req = ctx.req(StatusRequest {});
                async move {
                    MaintenanceClient::new(ctx.channel)
                        .status(req)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await
            {
                Ok(r) => list.push((ep, r)),
                Err(e) => {
                    failed = true;
                    eprintln!("Failed to get the status of endpoint {ep} ({e})");
                }
            }
        }
        Ok::<_, Failure>((list, failed))
    })?;
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|(ep, r)| {
            let h = r.header.clone().unwrap_or_default();
            vec![
                ep.clone(),
                format!("{:x}", h.member_id),
                r.version.clone(),
                human_bytes(r.db_size.max(0) as u64),
                (r.leader == h.member_id).to_string(),
                r.is_learner.to_string(),
                r.raft_term.to_string(),
                r.raft_index.to_string(),
                r.raft_applied_index.to_string(),
                r.errors.join(", "),
            ]
        })
        .collect();
    let text = match g.format {
        Format::Simple => rows.iter().map(|r| r.join(", ") + "\n").collect::<String>(),
        Format::Json => {
            let items = list
                .iter()
                .map(|(ep, r)| {
                    let status = obj(&[
                        ("header", opt_header(&r.header)),
                        ("version", nz_str(&r.version)),
                        ("dbSize", nz_i(r.db_size)),
                        ("leader", nz_u(r.leader)),
                        ("raftIndex", nz_u(r.raft_index)),
                        ("raftTerm", nz_u(r.raft_term)),
                        ("raftAppliedIndex", nz_u(r.raft_applied_index)),
                        ("errors", nz_arr(r.errors.iter().map(|e| jstr(e)).collect())),
                        ("dbSizeInUse", nz_i(r.db_size_in_use)),
                        ("isLearner", nz_b(r.is_learner)),
                    ]);
                    obj(&[("Endpoint", Some(jstr(ep))), ("Status", Some(status))])
                })
                .collect();
            arr(items) + "\n"
        }
        Format::Fields => {
            let mut t = String::new();
            for (ep, r) in &list {
                t += &header_fields_text(&r.header);
                t += &format!(
                    "\"Version\" : {}\n\"DBSize\" : {}\n\"Leader\" : {}\n\"IsLearner\" : {}\n\"RaftIndex\" : {}\n\"RaftTerm\" : {}\n\"RaftAppliedIndex\" : {}\n\"Errors\" : [{}]\n\"Endpoint\" : {}\n\n",
                    go_quote(&r.version),
                    r.db_size,
                    r.leader,
                    r.is_learner,
                    r.raft_index,
                    r.raft_term,
                    r.raft_applied_index,
                    r.errors.join(" "),
                    go_quote(ep)
                );
            }
            t
        }
        Format::Table => table(
            &[
                "endpoint",
                "ID",
                "version",
                "db size",
                "is leader",
                "is learner",
                "raft term",
                "raft index",
                "raft applied index",
                "errors",
            ],
            &rows,
        ),
        Format::Protobuf => return Err(g.format.unsupported()),
    };
    out(text.as_bytes())?;
    if failed {
        return Err(Failure(EXIT_ERROR, String::new()));
    }
    Ok(())
}

fn hash_kv(g: Global, cluster: bool, rev: i64) -> Result<(), Failure> {
    let (list, err) = super::client::runtime()?.block_on(async {
        let eps = targets(&g, cluster).await?;
        let mut list: Vec<(String, HashKvResponse)> = Vec::new();
        let mut err = None;
        for ep in eps {
            match at_member(&g, &ep, |ctx| {
                let req = ctx.req(HashKvRequest { revision: rev });
                async move {
                    MaintenanceClient::new(ctx.channel)
                        .hash_kv(req)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await
            {
                Ok(r) => list.push((ep, r)),
                Err(e) => {
                    eprintln!("Failed to get the hash of endpoint {ep} ({e})");
                    err = Some(e);
                }
            }
        }
        Ok::<_, Failure>((list, err))
    })?;
    let text = match g.format {
        Format::Simple => list
            .iter()
            .map(|(ep, r)| format!("{ep}, {}\n", r.hash))
            .collect::<String>(),
        Format::Json => {
            let items = list
                .iter()
                .map(|(ep, r)| {
                    let h = obj(&[
                        ("header", opt_header(&r.header)),
                        ("hash", nz_u(u64::from(r.hash))),
                        ("compact_revision", nz_i(r.compact_revision)),
                    ]);
                    obj(&[("Endpoint", Some(jstr(ep))), ("HashKV", Some(h))])
                })
                .collect();
            arr(items) + "\n"
        }
        Format::Fields => list
            .iter()
            .map(|(ep, r)| {
                header_fields_text(&r.header)
                    + &format!("\"Endpoint\" : {}\n\"Hash\" : {}\n\n", go_quote(ep), r.hash)
            })
            .collect(),
        Format::Table => table(
            &["endpoint", "hash"],
            &list
                .iter()
                .map(|(ep, r)| vec![ep.clone(), r.hash.to_string()])
                .collect::<Vec<_>>(),
        ),
        Format::Protobuf => return Err(g.format.unsupported()),
    };
    out(text.as_bytes())?;
    match err {
        Some(e) => Err(Failure(EXIT_ERROR, e)),
        None => Ok(()),
    }
}

fn alarm_name(a: i32) -> &'static str {
    match a {
        1 => "NOSPACE",
        2 => "CORRUPT",
        _ => "NONE",
    }
}

fn print_alarms(format: Format, r: &AlarmResponse) -> Result<Vec<u8>, Failure> {
    Ok(match format {
        Format::Simple => r
            .alarms
            .iter()
            .map(|a| format!("memberID:{} alarm:{} \n", a.member_id, alarm_name(a.alarm)))
            .collect::<String>()
            .into_bytes(),
        Format::Json => {
            let alarms = nz_arr(
                r.alarms
                    .iter()
                    .map(|a| {
                        obj(&[
                            ("memberID", nz_u(a.member_id)),
                            ("alarm", nz_i(i64::from(a.alarm))),
                        ])
                    })
                    .collect(),
            );
            (obj(&[("header", opt_header(&r.header)), ("alarms", alarms)]) + "\n").into_bytes()
        }
        Format::Fields => {
            let mut t = header_fields_text(&r.header);
            for a in &r.alarms {
                t += &format!(
                    "\"MemberID\" : {}\n\"AlarmType\" : {}\n\n",
                    a.member_id,
                    alarm_name(a.alarm)
                );
            }
            t.into_bytes()
        }
        Format::Protobuf => r.encode_to_vec(),
        Format::Table => return Err(format.unsupported()),
    })
}

pub fn alarm(sub: &str, g: Global, f: &Flags, _args: &[String]) -> Result<(), Failure> {
    let g = g.with_format(f)?;
    let disarm = sub == "disarm";
    let r = unary(g.clone(), |mut c| async move {
        let list = c
            .call(|ctx| {
                let req = ctx.req(AlarmRequest::default());
                async move {
                    MaintenanceClient::new(ctx.channel)
                        .alarm(req)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?;
        if !disarm {
            return Ok(list);
        }
        // clientv3's AlarmDisarm of every alarm: the list, then what each
        // deactivation answers, appended to it.
        let mut all = list.clone();
        for a in &list.alarms {
            let a: AlarmMember = a.clone();
            let d = c
                .call(|ctx| {
                    let req = ctx.req(AlarmRequest {
                        action: 2,
                        member_id: a.member_id,
                        alarm: a.alarm,
                    });
                    async move {
                        MaintenanceClient::new(ctx.channel)
                            .alarm(req)
                            .await
                            .map(tonic::Response::into_inner)
                    }
                })
                .await?;
            all.alarms.extend(d.alarms);
        }
        Ok(all)
    })?;
    out(&print_alarms(g.format, &r)?)
}

pub fn move_leader(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    let [target] = args else {
        return Err(bad_args("move-leader command needs 1 argument"));
    };
    let target = parse_hex_u64(target).map_err(bad_args)?;
    let g = g.with_format(f)?;
    let eps = g.endpoints.clone();
    let gg = g.clone();
    let leader = super::client::runtime()?.block_on(async move {
        for ep in &eps {
            let r = at_member(&gg, ep, |ctx| {
                let req = ctx.req(StatusRequest {});
                async move {
                    MaintenanceClient::new(ctx.channel)
                        .status(req)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await
            .map_err(|e| Failure(EXIT_ERROR, e))?;
            let me = r.header.as_ref().map_or(0, |h| h.member_id);
            if me == r.leader {
                let resp = at_member(&gg, ep, |ctx| {
                    let req = ctx.req(MoveLeaderRequest { target_id: target });
                    async move {
                        MaintenanceClient::new(ctx.channel)
                            .move_leader(req)
                            .await
                            .map(tonic::Response::into_inner)
                    }
                })
                .await
                .map_err(|e| Failure(EXIT_ERROR, e))?;
                return Ok((r.leader, resp));
            }
        }
        Err(bad_args(format!(
            "no leader endpoint given at [{}]",
            eps.join(" ")
        )))
    })?;
    let (leader, resp) = leader;
    let text = match g.format {
        Format::Simple => {
            format!("Leadership transferred from {leader:x} to {target:x}\n").into_bytes()
        }
        Format::Json => (obj(&[("header", opt_header(&resp.header))]) + "\n").into_bytes(),
        Format::Protobuf => resp.encode_to_vec(),
        other => return Err(other.unsupported()),
    };
    out(&text)
}

pub fn version() -> Result<(), Failure> {
    out(format!(
        "etcdctl version: 3.4.23\nAPI version: 3.4\ncairnctl version: {}\n",
        env!("CARGO_PKG_VERSION")
    )
    .as_bytes())
}
