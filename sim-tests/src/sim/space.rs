//! The space operator: in seeds drawn with a small `--quota-backend-bytes`
//! (`scenario::run`), the store passes its quota under the normal load and
//! a member raises the NOSPACE alarm through Raft. This operator, on a node
//! of its own, does what etcd's runbook says: list the alarms, compact at
//! the current revision, defragment every member, disarm — under the same
//! faults, so any step may fail and is tried again.
//!
//! What must hold (checked elsewhere): a write refused with `database space
//! exceeded` had no effect (the workload records it as failed, so the
//! linearizability and list checks catch one that took effect); every
//! member applies the same entries with the same effects while the alarm
//! comes and goes (the raft oracle: a member that did not apply the alarm
//! would apply a put the others refused); and after healing, the operator
//! brings writes back (every client's final write must succeed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmType, DefragmentRequest,
};
use rand::rngs::StdRng;
use rand::Rng;

use super::faults::Timeline;
use super::membership::{maintenance_client, within_deadline};
use super::workload::{Client, Endpoints};
use crate::checker::{Request, Revision};

/// The quota of the seeds that draw one: small enough that the KV mix
/// passes it, large enough that the compacted store is well under it.
pub const SMALL_QUOTA: u64 = 8 * 1024;

/// The operator's client id in the recorded history.
pub const OPERATOR_CLIENT: u64 = 100;

/// How often the operator looks at the alarms.
const POLL: Duration = Duration::from_millis(500);
const CALL_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct SpaceReport {
    /// Times the operator saw a NOSPACE alarm listed.
    pub seen: u64,
    /// Disarms that succeeded.
    pub disarmed: u64,
}

async fn within<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, String> {
    within_deadline(CALL_DEADLINE, what, f).await
}

/// Runs until `stop`: every `POLL`, one round of the runbook when an alarm
/// is listed.
pub async fn run(
    mut client: Client,
    urls: Endpoints,
    timeline: Timeline,
    mut rng: StdRng,
    stop: Arc<AtomicBool>,
) -> SpaceReport {
    let mut report = SpaceReport::default();
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(POLL).await;
        let url = urls.pick(&mut rng);
        if let Err(e) = round(&mut client, &url, &urls, &timeline, &mut report).await {
            tracing::debug!(target: "cairn_sim::space", "{e}");
        }
    }
    report
}

async fn round(
    client: &mut Client,
    url: &str,
    urls: &Endpoints,
    timeline: &Timeline,
    report: &mut SpaceReport,
) -> Result<(), String> {
    let nospace = AlarmType::Nospace as i32;
    let listed = within("alarm list", async {
        let r = maintenance_client(url)
            .await?
            .alarm(AlarmRequest {
                action: AlarmAction::Get as i32,
                member_id: 0,
                alarm: nospace,
            })
            .await?;
        Ok(r.into_inner().alarms)
    })
    .await?;
    if listed.is_empty() {
        return Ok(());
    }
    report.seen += 1;
    // Compact at the current revision (a linearizable read's header), both
    // through the recorded client: the history must know of the compaction
    // (later reads of older revisions fail with "compacted").
    let revision = match client.call_at(url, Request::get("k0"), false).await {
        Some(resp) => resp.header_revision().map_or(0, |r| r.0),
        None => return Err("range failed".into()),
    };
    if revision == 0 {
        return Err("range answered an error".into());
    }
    // An error answer ("compacted": a client compacted there already) is
    // fine; no answer at all: try again next round.
    if client
        .call_at(
            url,
            Request::Compact {
                revision: Revision(revision),
            },
            false,
        )
        .await
        .is_none()
    {
        return Err("compact failed".into());
    }
    for member in urls.all() {
        let _ = within("defragment", async {
            maintenance_client(&member)
                .await?
                .defragment(DefragmentRequest {})
                .await
        })
        .await;
    }
    for a in listed {
        within("alarm disarm", async {
            maintenance_client(url)
                .await?
                .alarm(AlarmRequest {
                    action: AlarmAction::Deactivate as i32,
                    member_id: a.member_id,
                    alarm: a.alarm,
                })
                .await
        })
        .await?;
        report.disarmed += 1;
        timeline.space(format!(
            "NOSPACE of {:x} disarmed after compacting at {revision} (asking {url})",
            a.member_id
        ));
    }
    Ok(())
}

/// Whether this seed runs with the small quota: a quarter of the seeds,
/// drawn from `rng` (its own stream, so the other draws of the seed do not
/// move).
pub fn draw_small_quota(rng: &mut StdRng) -> bool {
    rng.random_bool(0.25)
}
