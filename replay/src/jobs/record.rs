//! A job as `_config` holds it: one catalog entity of kind [`JOB_KIND`] named by the job id,
//! whose spec is a [`Record`] (what was asked, how far it got, the resume point, who runs it).
//! Claims and cancel requests are entities of their own ([`CLAIM_KIND`], [`CANCEL_KIND`]), so
//! that the log orders them: a `created` event for a name that exists already loses.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tidemark_core::ErrorKind;
use tidemark_core::time::format_us;

/// Catalog kind of job records; the name is the job id (`<kind>-<uuid v7>`).
pub const JOB_KIND: &str = "job";
/// Catalog kind of lease claims; the name is `<job id>.<epoch>`.
pub const CLAIM_KIND: &str = "job-claim";
/// Catalog kind of cancel requests; the name is the job id.
pub const CANCEL_KIND: &str = "job-cancel";

/// Who runs a job: one process of one node, under the epoch it claimed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The node's name (`--node-id`, else the host name); shown in listings.
    pub node: Option<String>,
    /// One run of that node's process: a restarted node is another instance, and two nodes
    /// that share a host name are told apart.
    pub instance: String,
    /// 0 for the node that started the job; each takeover raises it by one.
    pub epoch: u64,
}

/// The whole of a job in `_config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// `replay`, `restore`, `sync`.
    pub kind: String,
    /// The request as accepted: shown.
    pub spec: Value,
    /// What resuming needs that nobody is shown (a sync's secret reference, a dry run's
    /// options).
    #[serde(default)]
    pub private: Value,
    /// `running`, `succeeded`, `failed`, `cancelled`.
    pub state: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub done: u64,
    pub total: u64,
    /// Kind-specific counters while running; the result once finished.
    pub result: Value,
    pub error: Option<String>,
    /// The failure's kind (`unavailable`, `bad_input`, ...): whether running it again may help.
    pub error_kind: Option<String>,
    /// Where the work resumes: kind-specific, written by the work itself.
    pub checkpoint: Option<Value>,
    pub holder: Holder,
    /// How many times another process took the job over.
    #[serde(default)]
    pub resumes: u64,
}

impl Record {
    pub fn parse(spec: &str) -> Option<Record> {
        serde_json::from_str(spec).ok()
    }

    pub fn running(&self) -> bool {
        self.state == "running"
    }

    /// `GET /v1/replays/ID` (and restores, syncs): what the job is, where it is, what it did.
    pub fn to_json(&self, id: &str) -> Value {
        json!({
            "id": id,
            "kind": self.kind,
            "state": self.state,
            "spec": self.spec,
            "created_at": format_us(self.created_at),
            "finished_at": self.finished_at.map(format_us),
            "progress": {"done": self.done, "total": self.total},
            "result": self.result,
            "error": self.error,
            "node": self.holder.node,
            "resumes": self.resumes,
        })
    }
}

pub fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadInput => "bad_input",
        ErrorKind::NotFound => "not_found",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Corrupt => "corrupt",
        ErrorKind::Internal => "internal",
    }
}

pub fn parse_kind(name: &str) -> ErrorKind {
    match name {
        "bad_input" => ErrorKind::BadInput,
        "not_found" => ErrorKind::NotFound,
        "conflict" => ErrorKind::Conflict,
        "unavailable" => ErrorKind::Unavailable,
        "corrupt" => ErrorKind::Corrupt,
        _ => ErrorKind::Internal,
    }
}
