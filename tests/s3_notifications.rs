//! Bucket notifications end to end: aws-cli puts a notification configuration on a real
//! `tidemark serve --s3-listen`, which turns it into a subscription delivering S3's `Records`
//! to a loopback webhook receiver (`tests/py/webhook_receiver.py`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::Server;
use common::aws::Aws;
use common::receiver::Receiver;
use serde_json::{Value, json};

const ARN: &str = "arn:aws:sqs:us-east-1:000000000000:thumbs";
const WAIT: Duration = Duration::from_secs(30);

/// put-bucket-notification-configuration with `conf` (written to a file).
fn put_notifications(aws: &Aws, bucket: &str, conf: &Value) -> (bool, String, String) {
    let file = aws
        .config
        .with_file_name(format!("notif-{}.json", fastrand::u32(..)));
    std::fs::write(&file, conf.to_string()).unwrap();
    let arg = format!("file://{}", file.display());
    aws.s3api(&[
        "put-bucket-notification-configuration",
        "--bucket",
        bucket,
        "--notification-configuration",
        &arg,
    ])
}

fn start(dir: &Path, receiver: &Receiver) -> Server {
    let target = format!("{ARN}={}", receiver.url("/hook"));
    Server::start(
        &dir.join("data"),
        &[
            "--partitions",
            "1",
            "--allow-destinations",
            "loopback",
            "--s3-listen",
            "127.0.0.1:0",
            "--s3-access-key",
            "AKTEST",
            "--s3-secret-key",
            "s3cr3t",
            "--s3-notification-target",
            &target,
        ],
    )
}

fn subscriptions(server: &Server) -> Vec<Value> {
    let (status, body) = server.get("/v1/subscriptions");
    assert_eq!(status, 200, "{body}");
    body["subscriptions"].as_array().unwrap().clone()
}

fn body_of(req: &Value) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(req["body_b64"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn thumbs_config() -> Value {
    json!({
        "QueueConfigurations": [{
            "Id": "thumbs",
            "QueueArn": ARN,
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [
                {"Name": "prefix", "Value": "images/"},
                {"Name": "suffix", "Value": ".jpg"}
            ]}}
        }]
    })
}

#[test]
fn aws_cli_configuration_becomes_a_subscription_delivering_s3_records() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "hook", &[]);
    let server = start(dir.path(), &receiver);
    let aws = Aws::new(dir.path(), &server);
    aws.ok(&["create-bucket", "--bucket", "photos"]);

    let (ok, out, err) = put_notifications(&aws, "photos", &thumbs_config());
    assert!(ok, "{out}\n{err}");
    let subs = subscriptions(&server);
    assert_eq!(subs.len(), 1, "{subs:#?}");
    assert_eq!(subs[0]["name"], "s3n.photos.thumbs");
    assert_eq!(subs[0]["rules"]["buckets"], json!(["photos"]));
    assert_eq!(subs[0]["rules"]["events"], json!(["ObjectCreated:*"]));
    assert_eq!(subs[0]["rules"]["prefix"], json!(["images/"]));
    assert_eq!(subs[0]["rules"]["suffix"], json!([".jpg"]));
    assert_eq!(subs[0]["sink"]["format"], "s3");
    assert_eq!(subs[0]["sink"]["url"], receiver.url("/hook"));

    // S3 greets a new destination with a test event.
    let first = receiver.wait_requests(1, WAIT);
    let test = body_of(&first[0]);
    assert_eq!(test["Service"], "Amazon S3", "{test}");
    assert_eq!(test["Event"], "s3:TestEvent");
    assert_eq!(test["Bucket"], "photos");
    assert!(test["Time"].as_str().is_some_and(|t| t.ends_with('Z')));

    // Objects outside the filter first, then inside: one partition keeps them in order, so
    // once the matching ones arrive the others would have arrived before them.
    let body = dir.path().join("body.bin");
    std::fs::write(&body, b"pixels").unwrap();
    let body = body.to_str().unwrap();
    for key in ["docs/a.jpg", "images/a.png", "images/a.jpg", "images/b.jpg"] {
        aws.ok(&[
            "put-object",
            "--bucket",
            "photos",
            "--key",
            key,
            "--body",
            body,
        ]);
    }
    let keys = |reqs: &[Value]| -> Vec<(String, String, String)> {
        reqs.iter()
            .filter_map(|r| r["records"].as_array().cloned())
            .flatten()
            .map(|r| {
                (
                    r["eventName"].as_str().unwrap_or("").to_string(),
                    r["s3"]["bucket"]["name"].as_str().unwrap_or("").to_string(),
                    r["s3"]["object"]["key"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let delivered = common::wait_for("both .jpg objects", WAIT, || {
        let got = keys(&receiver.requests());
        if got.len() >= 2 {
            Ok(got)
        } else {
            Err(format!("{got:?}"))
        }
    });
    let put = |k: &str| ("ObjectCreated:Put".into(), "photos".into(), k.into());
    assert_eq!(delivered, vec![put("images/a.jpg"), put("images/b.jpg")]);

    // Get returns what was put.
    let got: Value = serde_json::from_str(&aws.ok(&[
        "get-bucket-notification-configuration",
        "--bucket",
        "photos",
    ]))
    .unwrap();
    assert_eq!(got, thumbs_config(), "{got:#}");

    // Putting the same configuration again keeps the subscription (and sends no test event).
    let created = subs[0]["created_at"].clone();
    let (ok, _, err) = put_notifications(&aws, "photos", &thumbs_config());
    assert!(ok, "{err}");
    let subs = subscriptions(&server);
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["created_at"], created);

    // An empty configuration removes it.
    let (ok, _, err) = put_notifications(&aws, "photos", &json!({}));
    assert!(ok, "{err}");
    assert!(subscriptions(&server).is_empty());
    let got = aws.ok(&[
        "get-bucket-notification-configuration",
        "--bucket",
        "photos",
    ]);
    assert!(got.trim().is_empty() || got.trim() == "{}", "{got}");
    let tests = receiver
        .requests()
        .iter()
        .filter(|r| body_of(r)["Event"] == "s3:TestEvent")
        .count();
    assert_eq!(tests, 1, "one test event, for the one new destination");
    server.stop();
}

/// A raw signed PUT ?notification with `body`, as no SDK would send malformed XML.
const RAW_PUT: &str = r#"
import sys, urllib.request, urllib.error
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
url, body = sys.argv[1], sys.argv[2].encode()
req = AWSRequest(method="PUT", url=url, data=body)
S3SigV4Auth(Credentials("AKTEST", "s3cr3t"), "s3", "us-east-1").add_auth(req)
p = req.prepare()
r = urllib.request.Request(url, data=body, method="PUT", headers=dict(p.headers))
try:
    with urllib.request.urlopen(r) as resp:
        print(resp.status); print(resp.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"#;

#[test]
fn refused_configurations_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "hook", &[]);
    let server = start(dir.path(), &receiver);
    let aws = Aws::new(dir.path(), &server);
    aws.ok(&["create-bucket", "--bucket", "photos"]);

    let refused = |bucket: &str, conf: Value, code: &str, says: &str| {
        let (ok, out, err) = put_notifications(&aws, bucket, &conf);
        assert!(!ok, "{conf} was accepted: {out}");
        assert!(err.contains(code), "{conf}: expected {code}:\n{err}");
        assert!(err.contains(says), "{conf}: expected '{says}':\n{err}");
    };
    let mut unknown_arn = thumbs_config();
    unknown_arn["QueueConfigurations"][0]["QueueArn"] = json!("arn:aws:sqs:us-east-1:1:nope");
    refused(
        "photos",
        unknown_arn,
        "InvalidArgument",
        "Unable to validate the following destination configurations: arn:aws:sqs:us-east-1:1:nope",
    );
    let mut bad_event = thumbs_config();
    bad_event["QueueConfigurations"][0]["Events"] = json!(["s3:ObjectCreated:Nope"]);
    refused("photos", bad_event, "InvalidArgument", "ObjectCreated:Nope");
    let mut bad_rule = thumbs_config();
    bad_rule["QueueConfigurations"][0]["Filter"]["Key"]["FilterRules"] =
        json!([{"Name": "prefix", "Value": "a/"}, {"Name": "prefix", "Value": "b/"}]);
    refused(
        "photos",
        bad_rule,
        "InvalidArgument",
        "more than one prefix",
    );
    refused("nobucket", thumbs_config(), "NoSuchBucket", "nobucket");
    // Two configurations that could both match one event are ambiguous, as S3 says.
    let mut twice = thumbs_config();
    let mut second = twice["QueueConfigurations"][0].clone();
    second["Id"] = json!("second");
    twice["QueueConfigurations"]
        .as_array_mut()
        .unwrap()
        .push(second);
    refused("photos", twice, "InvalidArgument", "Configurations overlap");

    let url = format!("{}/photos?notification", server.s3_url.as_ref().unwrap());
    let out = Command::new("python3")
        .args([
            "-c",
            RAW_PUT,
            &url,
            "<NotificationConfiguration><QueueConfiguration>",
        ])
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("400"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("<Code>MalformedXML</Code>"), "{text}");

    assert!(subscriptions(&server).is_empty());
    // Refused before any subscription existed, so no test event was sent either.
    assert!(receiver.requests().is_empty(), "no test event was sent");
    server.stop();
}
