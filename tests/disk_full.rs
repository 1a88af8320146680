//! A full disk: writes are refused with 507 naming the disk, reads go on, `/readyz` says why,
//! and once space is back writes resume without a restart; nothing acknowledged is lost and a
//! rebuild equals the index. The data directory is a small tmpfs (the test says so and passes
//! when it cannot mount one).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A tmpfs of `mib` MiB at a new directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, mib: u32) -> Option<Tmpfs> {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn batch(round: usize) -> String {
    let mutations: Vec<Value> = (0..500)
        .map(|i| {
            json!({"op": "put", "bucket": "full", "key": format!("k/{round:05}/{i:04}"),
                   "size": 1, "metadata": {"pad": "x".repeat(200)}})
        })
        .collect();
    json!({ "mutations": mutations }).to_string()
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers_without_a_restart() {
    let scratch = tempfile::tempdir().unwrap();
    // The disk is the data directory itself, so the server's stderr log (kept beside the
    // data directory by the harness) stays writable.
    let data = scratch.path().join("data");
    let Some(disk) = Tmpfs::mount(data.clone(), 48) else {
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
        return;
    };
    // Room to give back later.
    let ballast = disk.0.join("ballast");
    std::fs::write(&ballast, vec![7u8; 12 << 20]).unwrap();
    let server = Server::start(
        &data,
        &["--segment-bytes", "4194304", "--snapshot-every-events", "0"],
    );
    let mut acked = Vec::new();
    let mut refused = None;
    for round in 0..2000 {
        let (status, v) = server.post("/v1/mutations", batch(round));
        match status {
            200 => acked.extend(acked_ids(&v)),
            507 => {
                refused = Some(v);
                break;
            }
            other => panic!("round {round}: {other} {v}"),
        }
    }
    let refused = refused.expect("the disk never filled up");
    let message = refused["error"]["message"].as_str().unwrap();
    assert_eq!(refused["error"]["code"], "storage_full", "{refused}");
    assert!(message.contains("no space left"), "{refused}");
    assert!(
        message.contains(data.to_str().unwrap()),
        "names the data directory: {refused}"
    );

    // Reads go on.
    let (status, v) = server.get("/v1/objects?bucket=full&limit=5&consistency=eventual");
    assert_eq!(status, 200, "{v}");
    let (status, v) = server.get("/v1/objects/full/k/00000/0000");
    assert_eq!(status, 200, "{v}");
    // Not ready, and it says why.
    let (status, ready) = server.get("/readyz");
    assert_eq!(status, 503, "{ready}");
    assert!(ready.to_string().contains("no space left"), "{ready}");

    // Space back: writes resume on their own.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 100_000;
    loop {
        let (status, v) = server.post("/v1/mutations", batch(round));
        round += 1;
        if status == 200 {
            acked.extend(acked_ids(&v));
            break;
        }
        assert_eq!(status, 507, "{v}");
        assert!(Instant::now() < deadline, "writes did not resume: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for("ready again", Duration::from_secs(60), || {
        let (status, v) = server.get("/readyz");
        (status == 200).then_some(()).ok_or(v.to_string())
    });
    server.wait_caught_up();
    server.stop();
    assert_log_and_index_intact(&Backend::Embedded, &data, &acked, scratch.path());
}
