//! Committed consumer offsets: one small JSON file per consumer, replaced atomically
//! (write, fsync, rename, fsync directory) on every commit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::partition::sync_dir;
use crate::error::IoContext;
use crate::{Error, Result};

/// topic -> partition -> next offset.
type Committed = BTreeMap<String, BTreeMap<u32, u64>>;

pub struct OffsetStore {
    dir: PathBuf,
    consumers: Mutex<HashMap<String, Committed>>,
}

impl OffsetStore {
    pub fn open(dir: PathBuf) -> Result<OffsetStore> {
        std::fs::create_dir_all(&dir).ctx("create offsets directory", &dir)?;
        let mut consumers = HashMap::new();
        for entry in std::fs::read_dir(&dir).ctx("list offsets directory", &dir)? {
            let path = entry.ctx("list offsets directory", &dir)?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let text = std::fs::read_to_string(&path).ctx("read offsets", &path)?;
            let committed: Committed = serde_json::from_str(&text).map_err(|e| {
                Error::Corrupt(format!(
                    "{} is not a valid offsets file: {e}",
                    path.display()
                ))
            })?;
            consumers.insert(name.to_string(), committed);
        }
        Ok(OffsetStore {
            dir,
            consumers: Mutex::new(consumers),
        })
    }

    pub fn get(&self, consumer: &str, topic: &str, partition: u32) -> Option<u64> {
        let consumers = self.consumers.lock().unwrap();
        consumers
            .get(consumer)?
            .get(topic)?
            .get(&partition)
            .copied()
    }

    pub fn commit(&self, consumer: &str, topic: &str, partition: u32, next: u64) -> Result<()> {
        let mut consumers = self.consumers.lock().unwrap();
        let committed = consumers.entry(consumer.to_string()).or_default();
        committed
            .entry(topic.to_string())
            .or_default()
            .insert(partition, next);
        write_atomically(
            &self.dir,
            &format!("{consumer}.json"),
            &serde_json::to_vec(committed).expect("offsets serialize"),
        )
    }
}

/// Replace `dir/name` with `data` so that a crash leaves either the old or the new file.
pub fn write_atomically(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).ctx("create", &tmp)?;
    f.write_all(data).ctx("write", &tmp)?;
    f.sync_all().ctx("fsync", &tmp)?;
    std::fs::rename(&tmp, &path).ctx("rename", &path)?;
    sync_dir(dir)
}
