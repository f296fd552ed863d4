//! Watch fan-out measurement: one cairn member (RocksDB in a temporary
//! directory, gRPC on loopback, all in this process), N watchers on one
//! prefix spread over S Watch streams, W writers putting to that prefix.
//! Reports events delivered per second and the put-to-event latency (put
//! sent → event received by a watcher) percentiles. Not a test: numbers
//! depend on the machine.
//!
//! ```sh
//! cargo run --release --example watch_fanout -- --watchers 1000 --streams 10 --puts 2000 --writers 4
//! ```

#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(fanout::run(fanout::Args::parse()));
}

#[cfg(not(madsim))]
mod fanout {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use cairn::server::{Server, ServerConfig};
    use cairn_proto::etcdserverpb::kv_client::KvClient;
    use cairn_proto::etcdserverpb::watch_client::WatchClient;
    use cairn_proto::etcdserverpb::watch_request::RequestUnion;
    use cairn_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest};
    use cairn_runtime::client_port::{self, Listener};
    use cairn_runtime::transport::{GrpcTransport, TransportConfig};
    use cairn_runtime::{NodeId, TokioClock};
    use tokio::sync::mpsc;

    pub struct Args {
        watchers: usize,
        streams: usize,
        puts: usize,
        writers: usize,
        value_bytes: usize,
    }

    impl Args {
        pub fn parse() -> Args {
            let mut a = Args {
                watchers: 1000,
                streams: 10,
                puts: 2000,
                writers: 4,
                value_bytes: 64,
            };
            let argv: Vec<String> = std::env::args().skip(1).collect();
            for pair in argv.chunks(2) {
                let v: usize = pair
                    .get(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{} needs a number", pair[0]));
                match pair[0].as_str() {
                    "--watchers" => a.watchers = v,
                    "--streams" => a.streams = v.max(1),
                    "--puts" => a.puts = v,
                    "--writers" => a.writers = v.max(1),
                    "--value-bytes" => a.value_bytes = v.max(20),
                    other => panic!("unknown flag {other}"),
                }
            }
            a
        }
    }

    async fn start_member(dir: &std::path::Path) -> (Server, String) {
        let config = ServerConfig::single("fanout", 1);
        let storage = client_port::open_storage(
            &dir.join("data"),
            &cairn::server::apply::all_column_families(),
        )
        .expect("open RocksDB");
        let (tx, rx) = mpsc::channel(1024);
        let transport = Arc::new(GrpcTransport::new(
            NodeId(1),
            config.cluster_id,
            TransportConfig::default(),
            BTreeMap::new(),
            tx,
        ));
        let server = Server::start(config, storage, transport, Arc::new(TokioClock::new()), rx)
            .expect("start member");
        let listener = Listener::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr());
        tokio::spawn(client_port::serve_client_port(
            listener,
            cairn::api::client_router(&server),
            cairn::api::http::handler(server.clone()),
        ));
        while server.leader().is_none() || !server.is_published() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (server, url)
    }

    fn percentile(sorted: &[u64], p: f64) -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i] as f64 / 1000.0
    }

    pub async fn run(args: Args) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, url) = start_member(dir.path()).await;
        let epoch = Instant::now();
        let channel = tonic::transport::Endpoint::from_shared(url)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");

        // Watch streams, each with its share of the watchers.
        let per_stream = args.watchers.div_ceil(args.streams);
        let expected = args.puts;
        let (done_tx, mut done_rx) = mpsc::channel::<(usize, Vec<u64>)>(args.streams);
        let (created_tx, mut created_rx) = mpsc::channel::<usize>(args.streams);
        let mut created_total = 0;
        for s in 0..args.streams {
            let n = per_stream.min(args.watchers.saturating_sub(s * per_stream));
            if n == 0 {
                break;
            }
            let (req_tx, req_rx) = mpsc::channel(n + 1);
            for _ in 0..n {
                let create = WatchCreateRequest {
                    key: b"bench/".to_vec(),
                    range_end: b"bench0".to_vec(),
                    ..Default::default()
                };
                req_tx
                    .send(WatchRequest {
                        request_union: Some(RequestUnion::CreateRequest(create)),
                    })
                    .await
                    .expect("queue create");
            }
            let mut client = WatchClient::new(channel.clone()).max_decoding_message_size(64 << 20);
            let mut responses = client
                .watch(tokio_stream::wrappers::ReceiverStream::new(req_rx))
                .await
                .expect("watch")
                .into_inner();
            let (done_tx, created_tx) = (done_tx.clone(), created_tx.clone());
            created_total += n;
            tokio::spawn(async move {
                let _keep_open = req_tx;
                let mut latencies = Vec::with_capacity(n * expected);
                let mut events = 0usize;
                let mut created = 0;
                while let Ok(Some(resp)) = responses.message().await {
                    if resp.created {
                        created += 1;
                        if created == n {
                            let _ = created_tx.send(n).await;
                        }
                    }
                    let now = epoch.elapsed().as_nanos() as u64;
                    for ev in &resp.events {
                        let kv = ev.kv.as_ref().expect("kv");
                        let sent: u64 = std::str::from_utf8(&kv.value[..20])
                            .ok()
                            .and_then(|s| s.trim().parse().ok())
                            .expect("timestamped value");
                        latencies.push(now.saturating_sub(sent) / 1000);
                    }
                    events += resp.events.len();
                    if events >= n * expected {
                        break;
                    }
                }
                let _ = done_tx.send((events, latencies)).await;
            });
        }
        drop(done_tx);
        let mut created = 0;
        while created < created_total {
            created += created_rx.recv().await.expect("created");
        }
        println!(
            "{} watchers on {} streams created; {} writers put {} keys of {} bytes",
            created_total, args.streams, args.writers, args.puts, args.value_bytes
        );

        // Writers: sequential puts each, values carrying the send time (ns).
        let start = Instant::now();
        let per_writer = args.puts.div_ceil(args.writers);
        let mut writers = Vec::new();
        for w in 0..args.writers {
            let mut kv = KvClient::new(channel.clone());
            let n = per_writer.min(args.puts.saturating_sub(w * per_writer));
            let value_bytes = args.value_bytes;
            writers.push(tokio::spawn(async move {
                for i in 0..n {
                    let mut value =
                        format!("{:>20}", epoch.elapsed().as_nanos() as u64).into_bytes();
                    value.resize(value_bytes, b'x');
                    kv.put(PutRequest {
                        key: format!("bench/{w}/{i}").into_bytes(),
                        value,
                        ..Default::default()
                    })
                    .await
                    .expect("put");
                }
            }));
        }
        for w in writers {
            w.await.expect("writer");
        }
        let puts_done = start.elapsed();
        let mut events = 0;
        let mut latencies = Vec::new();
        let deadline = tokio::time::sleep(Duration::from_secs(120));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                got = done_rx.recv() => match got {
                    Some((e, l)) => { events += e; latencies.extend(l); }
                    None => break,
                },
                _ = &mut deadline => { println!("timed out waiting for events"); break; }
            }
        }
        let elapsed = start.elapsed();
        latencies.sort_unstable();
        println!(
            "puts: {:.0}/s ({:.2} s); events delivered: {} of {} in {:.2} s = {:.0} events/s",
            args.puts as f64 / puts_done.as_secs_f64(),
            puts_done.as_secs_f64(),
            events,
            args.puts * created_total,
            elapsed.as_secs_f64(),
            events as f64 / elapsed.as_secs_f64()
        );
        println!(
            "put-to-event latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.last().map_or(0.0, |m| *m as f64 / 1000.0)
        );
        // The clients have hung up: their streams and watchers go away.
        for _ in 0..100 {
            if server.watch_counts().streams == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let counts = server.watch_counts();
        println!(
            "hub at the end: {} streams, {} watchers, {} unsynced",
            counts.streams, counts.watchers, counts.unsynced
        );
        server.shutdown();
    }
}
