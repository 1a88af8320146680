//! Settings from a TOML file (`--config FILE`) and `TIDEMARK_*` environment variables, layered
//! onto the command line: file < flags < environment. Every key is a long flag's name with `_`
//! for `-` (`kafka_brokers` for `--kafka-brokers`), and every variable is `TIDEMARK_` and the
//! key in upper case (`TIDEMARK_KAFKA_BROKERS`); docs/CONFIG.md lists them all.
//!
//! A table groups keys by their first word: `[kafka] security_protocol = "SASL_SSL"` is
//! `kafka_security_protocol`, and `[kafka.properties]` is `kafka_properties`. Two tables are
//! lists rather than groups: `kafka_properties` (librdkafka properties) and `functions`
//! (`NAME = ["PROGRAM", "ARG", ...]`, the process functions subscriptions may name).
//!
//! The layers become flags, placed so that later ones win (`args_override_self`): the file's
//! right after the subcommand, then the command line, then the environment's. clap then parses
//! and validates every value the same way, whatever layer it came from.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, bail};
use clap::CommandFactory;

use super::Cli;

/// The key holding extra librdkafka properties: a table in the file, `k=v,k=v` in the
/// environment, repeated `--kafka-property k=v` on the command line.
const PROPERTIES_KEY: &str = "kafka_properties";
const PROPERTY_FLAG: &str = "kafka-property";
/// The key declaring process functions: a table `NAME = [PROGRAM, ARGS...]` in the file, one
/// `--function NAME=...` per entry.
const FUNCTIONS_KEY: &str = "functions";
const FUNCTION_FLAG: &str = "function";

/// The command line with the file's and the environment's settings added.
pub fn expand(
    args: Vec<OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<OsString>> {
    let command = Cli::command();
    // Find the subcommand (e.g. `log tail`) and the flags it takes.
    let mut sub = &command;
    let mut split = 1;
    while split < args.len() {
        let Some(name) = args[split].to_str() else {
            break;
        };
        if name.starts_with('-') {
            if !std::ptr::eq(sub, &command) {
                break; // the subcommand's own arguments start here
            }
            // A global flag before the subcommand (-v, --log-format json).
            split += if name == "--log-format" { 2 } else { 1 };
            continue;
        }
        match sub.find_subcommand(name) {
            Some(s) => {
                sub = s;
                split += 1;
            }
            None => break,
        }
    }
    // Long flags the subcommand takes, and whether each takes a value (else it is a switch).
    // Global flags (`--log-format`) too: clap propagates them only when it builds the command.
    let global = command.get_arguments().filter(|a| a.is_global_set());
    let flags: Vec<(String, bool)> = sub
        .get_arguments()
        .chain(global)
        .filter_map(|a| {
            a.get_long()
                .map(|l| (l.to_string(), a.get_action().takes_values()))
        })
        .collect();
    if flags.is_empty() {
        return Ok(args);
    }
    let takes = |key: &str| {
        flags
            .iter()
            .find(|(f, _)| f == &key.replace('_', "-"))
            .map(|(_, v)| *v)
    };
    let mut from_file = Vec::new();
    if let Some(path) = config_path(&args[split..]) {
        for (key, value) in flatten(read_file(&path)?) {
            if !known_key(&command, &key) {
                bail!(
                    "config file {}: unknown key '{key}' (docs/CONFIG.md lists the keys)",
                    path.display()
                );
            }
            if key == PROPERTIES_KEY {
                let toml::Value::Table(t) = value else {
                    bail!(
                        "config file {}: '{key}' must be a table of strings",
                        path.display()
                    );
                };
                for (k, v) in t {
                    let v = scalar(&v)
                        .with_context(|| format!("config file {}: {key}.{k}", path.display()))?;
                    from_file.push(format!("--{PROPERTY_FLAG}={k}={v}"));
                }
            } else if key == FUNCTIONS_KEY {
                if takes(FUNCTION_FLAG).is_none() {
                    continue; // a command that runs no functions
                }
                let toml::Value::Table(t) = value else {
                    bail!(
                        "config file {}: '{key}' must be a table of NAME = [\"PROGRAM\", \"ARG\", ...]",
                        path.display()
                    );
                };
                for (name, command) in t {
                    let command = function_command(&command)
                        .with_context(|| format!("config file {}: {key}.{name}", path.display()))?;
                    from_file.push(format!("--{FUNCTION_FLAG}={name}={command}"));
                }
            } else if let Some(takes_value) = takes(&key) {
                let v = scalar(&value)
                    .with_context(|| format!("config file {}: key '{key}'", path.display()))?;
                from_file.extend(as_flag(&key.replace('_', "-"), &v, takes_value));
            }
        }
    }
    let mut from_env = Vec::new();
    for (flag, takes_value) in &flags {
        if flag == "config" || flag == "help" {
            continue;
        }
        let key = if flag == PROPERTY_FLAG {
            PROPERTIES_KEY.to_string()
        } else {
            flag.replace('-', "_")
        };
        let Some(value) = env(&format!("TIDEMARK_{}", key.to_uppercase())) else {
            continue;
        };
        if flag == PROPERTY_FLAG {
            from_env.extend(
                value
                    .split(',')
                    .filter(|kv| !kv.trim().is_empty())
                    .map(|kv| format!("--{flag}={}", kv.trim())),
            );
        } else {
            from_env.extend(as_flag(flag, &value, *takes_value));
        }
    }
    let mut out: Vec<OsString> = args[..split].to_vec();
    out.extend(from_file.into_iter().map(OsString::from));
    out.extend(args[split..].iter().cloned());
    out.extend(from_env.into_iter().map(OsString::from));
    Ok(out)
}

/// Tables that group keys (`[kafka] brokers = ...`) become `kafka_brokers`; the two list
/// tables (`kafka_properties`, also written `[kafka.properties]`, and `functions`) stay whole.
fn flatten(table: toml::Table) -> Vec<(String, toml::Value)> {
    fn walk(prefix: &str, table: toml::Table, out: &mut Vec<(String, toml::Value)>) {
        for (key, value) in table {
            let key = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}_{key}")
            };
            match value {
                toml::Value::Table(t) if key != PROPERTIES_KEY && key != FUNCTIONS_KEY => {
                    walk(&key, t, out)
                }
                other => out.push((key, other)),
            }
        }
    }
    let mut out = Vec::new();
    walk("", table, &mut out);
    out
}

/// A function's command from the file: an array of strings (kept whole, as JSON) or one
/// string of words.
fn function_command(v: &toml::Value) -> anyhow::Result<String> {
    match v {
        toml::Value::Array(items) => {
            let words = items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| anyhow::anyhow!("expected an array of strings"))?;
            Ok(serde_json::to_string(&words)?)
        }
        toml::Value::String(s) => Ok(s.clone()),
        other => bail!(
            "expected [\"PROGRAM\", \"ARG\", ...], got {}",
            other.type_str()
        ),
    }
}

/// `--flag=value`, or for a switch, `--flag` when the value is true (and nothing when false).
fn as_flag(flag: &str, value: &str, takes_value: bool) -> Option<String> {
    if takes_value {
        Some(format!("--{flag}={value}"))
    } else {
        matches!(value.trim(), "true" | "1" | "yes").then(|| format!("--{flag}"))
    }
}

/// `--config FILE` or `--config=FILE` among a subcommand's arguments.
fn config_path(args: &[OsString]) -> Option<std::path::PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a.to_str()?;
        if a == "--config" {
            return it.next().map(Into::into);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(p.into());
        }
    }
    None
}

fn read_file(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read config file {}", path.display()))?;
    text.parse::<toml::Table>()
        .map_err(|e| anyhow::anyhow!("config file {} is not valid TOML: {e}", path.display()))
}

/// A key some command takes (so a file can serve `serve` and `log tail` alike).
fn known_key(command: &clap::Command, key: &str) -> bool {
    if key == PROPERTIES_KEY || key == FUNCTIONS_KEY {
        return true;
    }
    let flag = key.replace('_', "-");
    fn walk(c: &clap::Command, flag: &str) -> bool {
        c.get_arguments().any(|a| a.get_long() == Some(flag))
            || c.get_subcommands().any(|s| walk(s, flag))
    }
    flag != "config" && walk(command, &flag)
}

fn scalar(v: &toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!(
            "expected a string, number or boolean, got {}",
            other.type_str()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn file_then_flags_then_environment() {
        let f = file(
            "partitions = 2\nlisten = \"127.0.0.1:9\"\nkafka_brokers = \"a:1\"\n[kafka_properties]\n\"compression.type\" = \"lz4\"\n",
        );
        let path = f.path().to_str().unwrap();
        let env = |k: &str| (k == "TIDEMARK_KAFKA_BROKERS").then(|| "env:3".to_string());
        let out = expand(
            args(&[
                "tidemark",
                "-v",
                "serve",
                "--config",
                path,
                "--partitions",
                "3",
            ]),
            env,
        )
        .unwrap();
        let out: Vec<_> = out.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(out[..3], ["tidemark", "-v", "serve"]);
        let pos = |s: &str| {
            out.iter()
                .position(|a| *a == s)
                .unwrap_or_else(|| panic!("{s} in {out:?}"))
        };
        assert!(
            pos("--partitions=2") < pos("--partitions"),
            "the flag comes after the file"
        );
        assert!(
            pos("--kafka-brokers=a:1") < pos("--kafka-brokers=env:3"),
            "the environment comes last"
        );
        assert!(out.contains(&"--kafka-property=compression.type=lz4"));
        // The same file serves a command that takes only some of its keys.
        let out = expand(args(&["tidemark", "log", "tail", "--config", path]), |_| {
            None
        })
        .unwrap();
        assert!(
            !out.iter()
                .any(|a| a.to_str().unwrap().starts_with("--listen"))
        );
    }

    #[test]
    fn global_flags_come_from_the_file_and_the_environment() {
        let f = file("log_format = \"json\"\n");
        let path = f.path().to_str().unwrap();
        let out = expand(
            args(&[
                "tidemark",
                "--log-format",
                "text",
                "serve",
                "--config",
                path,
            ]),
            |_| None,
        )
        .unwrap();
        let out: Vec<_> = out.iter().map(|s| s.to_str().unwrap()).collect();
        assert!(out.contains(&"--log-format=json"), "{out:?}");
        let env = |k: &str| (k == "TIDEMARK_LOG_FORMAT").then(|| "json".to_string());
        let out = expand(args(&["tidemark", "serve"]), env).unwrap();
        assert!(
            out.iter().any(|a| a.to_str() == Some("--log-format=json")),
            "{out:?}"
        );
    }

    #[test]
    fn tables_group_keys_and_declare_functions() {
        let f = file(
            "[kafka]\nbrokers = \"b:1\"\n[kafka.properties]\n\"client.rack\" = \"r1\"\n\
             [functions]\nthumbs = [\"/usr/bin/thumb\", \"--size\", \"128 px\"]\nlog = \"/bin/logger -t x\"\n",
        );
        let out = expand(
            args(&["tidemark", "serve", "--config", f.path().to_str().unwrap()]),
            |_| None,
        )
        .unwrap();
        let out: Vec<_> = out.iter().map(|s| s.to_str().unwrap()).collect();
        assert!(out.contains(&"--kafka-brokers=b:1"), "{out:?}");
        assert!(out.contains(&"--kafka-property=client.rack=r1"), "{out:?}");
        assert!(
            out.contains(&r#"--function=thumbs=["/usr/bin/thumb","--size","128 px"]"#),
            "{out:?}"
        );
        assert!(out.contains(&"--function=log=/bin/logger -t x"), "{out:?}");
        let f = file("[functions]\nbad = 3\n");
        let err = expand(
            args(&["tidemark", "serve", "--config", f.path().to_str().unwrap()]),
            |_| None,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("functions.bad"), "{err:#}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_and_key() {
        let f = file("partitons = 2\n");
        let err = expand(
            args(&["tidemark", "serve", "--config", f.path().to_str().unwrap()]),
            |_| None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown key 'partitons'"), "{err}");
        let f = file("partitions = [1, 2]\n");
        let err = expand(
            args(&["tidemark", "serve", "--config", f.path().to_str().unwrap()]),
            |_| None,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("key 'partitions'"), "{err:#}");
        let f = file("partitions = \n");
        let err = expand(
            args(&["tidemark", "serve", "--config", f.path().to_str().unwrap()]),
            |_| None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not valid TOML"), "{err}");
    }
}
