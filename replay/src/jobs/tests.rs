//! Jobs in memory, and durable jobs on a real `_config` (an embedded log): recorded, listed
//! after reopening, resumed from their checkpoint by exactly one process when the holder is
//! gone, cancelled from another process, fenced when another process took them over.

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use futures::FutureExt;
use tidemark_core::CONFIG_TOPIC;
use tidemark_core::codec::SchemaSource;
use tidemark_core::codec::config::ConfigCodec;
use tidemark_core::log::embedded::{EmbeddedLog, LogConfig};
use tidemark_core::log::{Log, TopicSpec};
use tidemark_core::registry::SchemaRegistry;

use super::lease::{Store, Timing};
use super::*;

/// Work that counts to `to` in steps, reporting each as its checkpoint, until cancelled.
async fn count(job: Arc<Job>, to: u64) -> Result<Value> {
    let mut at = job.checkpoint().and_then(|c| c.as_u64()).unwrap_or(0);
    job.set_total(to);
    let mut cancelled = job.cancelled();
    while at < to && !job.is_cancelled() {
        at += 1;
        job.add_done(1);
        job.set_checkpoint(json!(at));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = cancelled.changed() => {}
        }
    }
    Ok(json!({"at": at}))
}

async fn wait_state(jobs: &Jobs, id: &str, state: &str) -> Value {
    for _ in 0..500 {
        if let Some(v) = jobs.view("count", id)
            && v["state"] == state
        {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} never {state}: {:?}", jobs.view("count", id));
}

#[tokio::test]
async fn runs_reports_and_cancels() {
    let jobs = Jobs::default();
    let job = jobs.prepare("count", json!({"x": 1}), Value::Null);
    let job = jobs.start(job.clone(), count(job, 10_000)).await.unwrap();
    assert!(job.id.starts_with("count-"));
    assert_eq!(job.to_json()["state"], "running");
    tokio::time::sleep(Duration::from_millis(50)).await;
    jobs.cancel("count", &job.id).await.unwrap().unwrap();
    let j = wait_state(&jobs, &job.id, "cancelled").await;
    assert!(j["result"]["at"].as_u64().unwrap() < 10_000);
    assert_eq!(jobs.list("count").len(), 1);
    assert!(jobs.list("restore").is_empty());
    assert!(jobs.cancel("count", "count-nope").await.unwrap().is_none());
}

/// A `_config` on an embedded log in `dir`.
async fn catalog(log: &Arc<dyn Log>) -> Arc<Catalog> {
    let compacted = TopicSpec {
        compacted: true,
        ..TopicSpec::new(1)
    };
    log.ensure_topic(CONFIG_TOPIC, &compacted).await.unwrap();
    let registry = Arc::new(SchemaRegistry::open(log.clone()).await.unwrap());
    let config = tidemark_schemas::config_event_latest();
    let id = registry
        .register(config.subject, config.text)
        .await
        .unwrap();
    let source: Arc<dyn SchemaSource> = registry;
    let codec = Arc::new(ConfigCodec::new(id, source).unwrap());
    Catalog::open(log.clone(), codec, None).await.unwrap()
}

fn open_log(dir: &std::path::Path) -> Arc<dyn Log> {
    Arc::new(EmbeddedLog::open(dir, LogConfig::default()).unwrap())
}

/// Durable jobs on `catalog` as process `node`, with a short lease, keeping 2 finished jobs.
fn durable(catalog: &Arc<Catalog>, node: &str, alone: bool) -> Arc<Jobs> {
    let mut store = Store::new(catalog.clone(), Some(node.into()), alone);
    store.keep = 2;
    store.timing = Timing {
        lease: Duration::from_millis(600),
        renew: Duration::from_millis(100),
        fence: Duration::from_millis(300),
    };
    Arc::new(Jobs {
        store: Some(Arc::new(store)),
        local: Local::default(),
    })
}

/// Resumes `count` jobs from their checkpoint, counting how often it was asked to.
struct Counting {
    to: u64,
    resumed: AtomicUsize,
    from: Mutex<Vec<Option<Value>>>,
}

impl Counting {
    fn to(to: u64) -> Arc<Counting> {
        Arc::new(Counting {
            to,
            resumed: AtomicUsize::new(0),
            from: Mutex::new(Vec::new()),
        })
    }
}

impl Resume for Counting {
    fn resume(&self, job: Arc<Job>) -> futures::future::BoxFuture<'static, Result<Value>> {
        self.resumed.fetch_add(1, Ordering::SeqCst);
        self.from.lock().unwrap().push(job.checkpoint());
        count(job, self.to).boxed()
    }
}

#[tokio::test]
async fn finished_jobs_are_listed_after_reopening_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let cat = catalog(&log).await;
    let jobs = durable(&cat, "a", true);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job = jobs.prepare("count", json!({"n": 2}), json!({"hidden": 1}));
        let job = jobs.start(job.clone(), count(job, 2)).await.unwrap();
        wait_state(&jobs, &job.id, "succeeded").await;
        ids.push(job.id.clone());
    }
    // Recorded and cleaned up by the keeper: wait until no job is local any more.
    for _ in 0..200 {
        if jobs.local.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(jobs);
    let again = durable(&cat, "b", true);
    let listed = again.list("count");
    let listed_ids: Vec<&str> = listed.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(
        listed_ids,
        ids[1..],
        "the oldest beyond the 2 kept is removed"
    );
    for j in &listed {
        assert_eq!(
            (
                j["state"].clone(),
                j["result"]["at"].clone(),
                j["node"].clone()
            ),
            (json!("succeeded"), json!(2), json!("a")),
            "{j}"
        );
        assert!(j.get("private").is_none() && !j.to_string().contains("hidden"));
    }
}

#[tokio::test]
async fn an_orphaned_job_is_resumed_once_from_its_checkpoint_and_its_holder_stops() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let cat = catalog(&log).await;
    let a = durable(&cat, "a", false);
    let job = a.prepare("count", json!({}), Value::Null);
    let job = a.start(job.clone(), count(job, 1_000_000)).await.unwrap();
    let (b, c) = (durable(&cat, "b", false), durable(&cat, "c", false));
    let resumer = Counting::to(1_000_000);
    tokio::spawn(b.clone().supervise(resumer.clone()));
    tokio::spawn(c.clone().supervise(resumer.clone()));

    // While its holder renews, nobody takes it over.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(resumer.resumed.load(Ordering::SeqCst), 0);
    let recorded = b.view("count", &job.id).unwrap();
    assert!(
        recorded["progress"]["done"].as_u64().unwrap() > 0,
        "{recorded}"
    );

    // The holder goes silent (as a killed process would): one of b and c takes over.
    job.lost.store(true, Ordering::SeqCst);
    job.cancel();
    let taken = wait_state(&b, &job.id, "running").await;
    for _ in 0..200 {
        if resumer.resumed.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(resumer.resumed.load(Ordering::SeqCst), 1, "{taken}");
    let from = resumer.from.lock().unwrap()[0].clone();
    assert!(from.and_then(|v| v.as_u64()).is_some_and(|at| at > 0));
    let now = b.view("count", &job.id).unwrap();
    assert_eq!(now["resumes"], 1, "{now}");
    assert!(["b", "c"].contains(&now["node"].as_str().unwrap()), "{now}");

    // Cancelled from a (not running it): whoever runs it stops, and it stays cancelled. On a
    // loaded machine its runner may miss the 300 ms fence after the request; the node that
    // takes it over then ends it as cancelled without running it (`"cancelled": true`).
    a.cancel("count", &job.id).await.unwrap();
    let done = wait_state(&c, &job.id, "cancelled").await;
    let stopped_early = done["result"]["at"]
        .as_u64()
        .is_some_and(|at| at < 1_000_000);
    assert!(
        stopped_early || done["result"]["cancelled"] == true,
        "{done}"
    );
}

#[tokio::test]
async fn on_a_log_no_other_process_shares_a_job_is_taken_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let cat = catalog(&log).await;
    let a = durable(&cat, "a", true);
    let job = a.prepare("count", json!({}), Value::Null);
    let job = a.start(job.clone(), count(job, 1_000_000)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A restarted process: another instance on the same `_config`.
    let b = durable(&cat, "a", true);
    let resumer = Counting::to(40);
    tokio::spawn(b.clone().supervise(resumer.clone()));
    let done = wait_state(&b, &job.id, "succeeded").await;
    assert_eq!(done["result"]["at"], 40, "{done}");
    assert_eq!(done["resumes"], 1, "{done}");
    assert_eq!(resumer.resumed.load(Ordering::SeqCst), 1);
    // The old holder saw the claim and stopped, recording nothing more.
    assert!(job.is_lost() && job.is_cancelled());
}
