//! The cap on a filter's live versions (`serve --filter-max-versions`): an upload that would
//! pass it first collects the oldest versions nobody uses, and is refused, naming who holds
//! them, when too few can go. A version is in use when a subscription pins it (`NAME@V`),
//! and the latest is in use while a subscription follows `NAME` (its events are being
//! decided by it until the new version takes over).

use std::collections::BTreeMap;

use crate::store::VersionRecord;
use crate::{Error, Result};

/// Who needs a filter's versions now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    /// Subscriptions pinned to a version, by version.
    pub pinned: BTreeMap<u32, Vec<String>>,
    /// Subscriptions following the latest version (`filter: NAME`).
    pub following: Vec<String>,
}

/// The versions to collect so that `live` (oldest first) plus one upload stays within `max`:
/// the oldest ones nobody uses. Refused (a conflict) when too few can go.
pub fn to_collect(
    name: &str,
    live: &[&VersionRecord],
    users: &Users,
    max: u32,
) -> Result<Vec<u32>> {
    let excess = (live.len() + 1).saturating_sub(max as usize);
    if excess == 0 {
        return Ok(Vec::new());
    }
    let latest = live.last().map(|v| v.version);
    let in_use = |v: u32| {
        users.pinned.contains_key(&v) || (Some(v) == latest && !users.following.is_empty())
    };
    let free: Vec<u32> = live
        .iter()
        .map(|v| v.version)
        .filter(|v| !in_use(*v))
        .take(excess)
        .collect();
    if free.len() == excess {
        return Ok(free);
    }
    let mut held: Vec<String> = users
        .pinned
        .iter()
        .filter(|(v, _)| live.iter().any(|l| l.version == **v))
        .map(|(v, subs)| format!("{name}@{v} is pinned by {}", subs.join(", ")))
        .collect();
    if let Some(latest) = latest.filter(|_| !users.following.is_empty()) {
        held.push(format!(
            "{name}@{latest} (the latest) is followed by {}",
            users.following.join(", ")
        ));
    }
    Err(Error::Conflict(format!(
        "filter '{name}' has {} live versions, the most this server keeps \
         (--filter-max-versions {max}), and not enough of them are unused to make room: {}; \
         point a subscription at another version (PUT /v1/subscriptions/NAME) or delete a \
         version (tidemark filter rm {name}@VERSION) first",
        live.len(),
        held.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(n: u32) -> Vec<VersionRecord> {
        (1..=n)
            .map(|version| VersionRecord {
                name: "f".into(),
                version,
                sha256: String::new(),
                size: 0,
                abi_version: 1,
                has_init: false,
                limits: crate::Limits::default().into(),
                uploaded_at: String::new(),
                uploaded_by: None,
                deleted_at: None,
            })
            .collect()
    }

    fn users(pinned: &[(u32, &str)], following: &[&str]) -> Users {
        let mut u = Users::default();
        for (v, s) in pinned {
            u.pinned.entry(*v).or_default().push(s.to_string());
        }
        u.following = following.iter().map(|s| s.to_string()).collect();
        u
    }

    #[test]
    fn below_the_cap_nothing_is_collected() {
        let all = versions(2);
        let live: Vec<&VersionRecord> = all.iter().collect();
        assert_eq!(to_collect("f", &live, &Users::default(), 3), Ok(vec![]));
    }

    #[test]
    fn the_oldest_unused_versions_go_and_pinned_and_followed_ones_stay() {
        let all = versions(4);
        let live: Vec<&VersionRecord> = all.iter().collect();
        // 4 live + 1 upload, cap 3: two must go; 1 is pinned, so 2 and 3.
        let u = users(&[(1, "a")], &["b"]);
        assert_eq!(to_collect("f", &live, &u, 3), Ok(vec![2, 3]));
        // Everything but the followed latest is pinned: refused, naming who holds what.
        let u = users(&[(1, "a"), (2, "c"), (3, "c")], &["b"]);
        let err = to_collect("f", &live, &u, 4).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Conflict(_)), "{msg}");
        for needle in [
            "--filter-max-versions 4",
            "f@1 is pinned by a",
            "f@3 is pinned by c",
            "f@4 (the latest) is followed by b",
        ] {
            assert!(msg.contains(needle), "{needle} in {msg}");
        }
        // Nobody follows: the latest may go too when it is the oldest unused.
        let u = users(&[(1, "a"), (2, "c"), (3, "c")], &[]);
        assert_eq!(to_collect("f", &live, &u, 4), Ok(vec![4]));
    }
}
