//! Process functions the operator declares (`serve --function NAME=PROGRAM ARGS...`, or
//! `[functions]` in the config file). A subscription names one; no API request can make the
//! server run a program: the command line comes only from the server's own configuration.
//!
//! Subscriptions stored before commands had to be declared carry their own `command`; such a
//! subscription runs only while the operator declares exactly that command under some name,
//! and is paused (with a status reason saying what to declare) otherwise.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::FunctionSpec;

/// One declared function: a name and the program with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub name: String,
    pub command: Vec<String>,
}

/// Every function this node may run, by name.
#[derive(Debug, Clone, Default)]
pub struct Functions {
    by_name: BTreeMap<String, Vec<String>>,
}

impl Functions {
    /// From `(name, command)` pairs; a repeated name or an empty command is refused.
    pub fn new(declared: Vec<Declared>) -> Result<Functions, String> {
        let mut by_name = BTreeMap::new();
        for d in declared {
            check_name(&d.name)?;
            if d.command.first().is_none_or(|p| p.trim().is_empty()) {
                return Err(format!("function '{}' has no program", d.name));
            }
            if by_name.insert(d.name.clone(), d.command).is_some() {
                return Err(format!("function '{}' is declared twice", d.name));
            }
        }
        Ok(Functions { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.by_name.get(name).map(Vec::as_slice)
    }

    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    /// The command a function sink runs, or why it cannot run on this node.
    pub fn resolve(&self, spec: &FunctionSpec) -> Result<Declared, String> {
        if let Some(name) = &spec.function {
            return self
                .get(name)
                .map(|command| Declared {
                    name: name.clone(),
                    command: command.to_vec(),
                })
                .ok_or_else(|| {
                    format!(
                        "function '{name}' is not declared on this node; declare it with \
                         `serve --function {name}=PROGRAM ARGS...` (or [functions] in the \
                         config file), or replace the subscription"
                    )
                });
        }
        // A subscription stored with an inline command (before declarations existed).
        let found = self
            .by_name
            .iter()
            .find(|(_, command)| **command == spec.command);
        match found {
            Some((name, command)) => Ok(Declared {
                name: name.clone(),
                command: command.clone(),
            }),
            None => Err(format!(
                "paused: this subscription was stored with an inline command, and commands now \
                 come only from the server's configuration; declare the same command under a \
                 name (`serve --function 'NAME={}'`) and it resumes, or replace the \
                 subscription with sink.function naming a declared function",
                serde_json::to_string(&spec.command).unwrap_or_default()
            )),
        }
    }

    /// `GET /v1/functions`: names and programs, never the arguments (they may hold secrets).
    pub fn to_json(&self) -> Value {
        let list: Vec<Value> = self
            .by_name
            .iter()
            .map(|(name, command)| json!({"name": name, "mode": "process", "program": command[0]}))
            .collect();
        json!({ "functions": list })
    }
}

pub fn check_name(name: &str) -> Result<(), String> {
    tidemark_core::catalog::check_entity_name("function", name)
}

/// A `--function` value: `NAME=PROGRAM ARGS...` (split on whitespace, no shell quoting), or
/// `NAME=["PROGRAM", "ARG with spaces", ...]` (a JSON array, as the config file's entries
/// become).
pub fn parse_flag(text: &str) -> Result<Declared, String> {
    let (name, command) = text.split_once('=').ok_or_else(|| {
        format!("'{text}' is not NAME=PROGRAM [ARGS...], e.g. thumbnailer=/usr/local/bin/thumb")
    })?;
    let name = name.trim();
    check_name(name)?;
    let command = command.trim();
    let command: Vec<String> = if command.starts_with('[') {
        serde_json::from_str(command).map_err(|e| {
            format!("function '{name}': the command is not a JSON array of strings: {e}")
        })?
    } else {
        command.split_whitespace().map(str::to_string).collect()
    };
    if command.first().is_none_or(|p| p.trim().is_empty()) {
        return Err(format!("function '{name}' has no program"));
    }
    Ok(Declared {
        name: name.to_string(),
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(function: Option<&str>, command: &[&str]) -> FunctionSpec {
        let mut v = json!({"mode": "process"});
        if let Some(f) = function {
            v["function"] = f.into();
        }
        if !command.is_empty() {
            v["command"] = json!(command);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn flags_parse_both_forms() {
        let d = parse_flag("thumbs=/usr/bin/thumb --size 128").unwrap();
        assert_eq!(d.name, "thumbs");
        assert_eq!(d.command, ["/usr/bin/thumb", "--size", "128"]);
        let d = parse_flag(r#"log=["sh", "-c", "cat >> /tmp/a b"]"#).unwrap();
        assert_eq!(d.command, ["sh", "-c", "cat >> /tmp/a b"]);
        assert!(parse_flag("noequals").unwrap_err().contains("NAME=PROGRAM"));
        assert!(
            parse_flag("../x=/bin/sh")
                .unwrap_err()
                .contains("not a valid")
        );
        assert!(parse_flag("x=").unwrap_err().contains("no program"));
        assert!(parse_flag("x=[1]").unwrap_err().contains("JSON array"));
    }

    #[test]
    fn resolve_by_name_or_by_identical_inline_command() {
        let f = Functions::new(vec![parse_flag("echo=/bin/echo hi").unwrap()]).unwrap();
        assert_eq!(
            f.resolve(&spec(Some("echo"), &[])).unwrap().command,
            ["/bin/echo", "hi"]
        );
        assert!(
            f.resolve(&spec(Some("other"), &[]))
                .unwrap_err()
                .contains("not declared")
        );
        assert_eq!(
            f.resolve(&spec(None, &["/bin/echo", "hi"])).unwrap().name,
            "echo"
        );
        let paused = f.resolve(&spec(None, &["/bin/echo", "bye"])).unwrap_err();
        assert!(paused.starts_with("paused"), "{paused}");
        assert!(paused.contains("--function"), "{paused}");
    }

    #[test]
    fn duplicates_are_refused_and_listing_hides_arguments() {
        let d = parse_flag("a=/bin/true").unwrap();
        assert!(Functions::new(vec![d.clone(), d]).is_err());
        let f =
            Functions::new(vec![parse_flag("a=/bin/tool --password hunter2").unwrap()]).unwrap();
        let text = f.to_json().to_string();
        assert!(
            text.contains("/bin/tool") && !text.contains("hunter2"),
            "{text}"
        );
    }
}
