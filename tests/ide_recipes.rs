//! The IDE recipes in docs/ide are valid for the IDEs that read them, without
//! an IDE, a lab or root:
//!
//! - VS Code's `tasks.json` and `launch.json` keep to the rules in
//!   tests/fixtures/ide-recipe-rules: written by us for these recipes, they
//!   list the keys each file, task, input and debugger's attach
//!   configuration uses, their types and values, and refuse any other key;
//!   the keys VS Code or a debug extension cannot do without are required,
//!   with the source (repository, path, commit) they were read in;
//! - every `preLaunchTask` names a task, every `${input:X}` has its input,
//!   and each launch configuration attaches to the name and port its
//!   preflight task checked;
//! - the JetBrains External Tools file and run configurations are
//!   well-formed XML of the shape the IDE reads, and each run
//!   configuration's before-launch tool exists.
//!
//! The negative tests mutate a recipe and expect the checks to refuse it, so a
//! checker that passes everything fails here. The preflight commands
//! themselves run against real debuggers in tests/lab_preflight.rs
//! (`preflight_15_the_ide_recipes_run_as_written`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use devnet_lab::jsonc;
use serde_json::{Value, json};

type Res<T = ()> = Result<T, String>;

/// A preflight target: kind (`svc`, `pod`, `deploy`), name and port.
type Target = (String, String, u16);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> Res<String> {
    std::fs::read_to_string(repo().join(rel)).map_err(|e| format!("{rel}: {e}"))
}

fn read_jsonc(rel: &str) -> Res<Value> {
    serde_json::from_str(&jsonc::strip(&read(rel)?)).map_err(|e| format!("{rel}: {e}"))
}

// ---------------------------------------------------------------------------
// The rule files: tests/fixtures/ide-recipe-rules/*.rules.jsonc, written by
// this project for these recipes (JSON with comments). Each holds "rules",
// named rules, and "cites", where the facts behind them were read. A rule is
// one of:
//
// - "string", "integer", "number", "boolean": a JSON value of that type;
//   "integer|string": of either;
// - "@task": the rule named `task` (in any of the files);
// - ["process", "shell"]: one of these values;
// - {"list of": RULE}: an array, each item RULE;
// - {"map of": RULE}: an object, each value RULE;
// - {"keys": {"label": RULE, "detail?": RULE}}: an object with these keys
//   and no others; a key ending in "?" may be left out, the others not;
// - {"pick by": "type", "every case": KEYS, "cases": {"java": KEYS, …}}: an
//   object whose "type" names one of the cases; it has that case's keys and
//   the "every case" keys, as for "keys".
//
// Anything else is a fault in the rules, and reported as one (never a pass).
// A cite is {"for": RULE NAME or NAME/CASE, "requires": [KEY or KEY.KEY],
// "repo", "path", "commit"}: the keys the IDE or extension itself cannot do
// without, which the rules must then require too.

const RULES_DIR: &str = "tests/fixtures/ide-recipe-rules";

type Map = serde_json::Map<String, Value>;

struct Rules {
    named: Map,
    cites: Vec<Value>,
}

/// Every rule file, merged.
fn rules() -> Res<Rules> {
    let dir = repo().join(RULES_DIR);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{RULES_DIR}: {e}"))? {
        let name = entry.map_err(|e| e.to_string())?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".rules.jsonc") {
            names.push(name);
        }
    }
    names.sort();
    let mut rules = Rules { named: Map::new(), cites: Vec::new() };
    for name in &names {
        let rel = format!("{RULES_DIR}/{name}");
        let doc = read_jsonc(&rel)?;
        let top = doc.as_object().ok_or(format!("{rel}: not an object"))?;
        if let Some(other) = top.keys().find(|k| *k != "rules" && *k != "cites") {
            return Err(format!("{rel}: a rule file has \"rules\" and \"cites\", not {other:?}"));
        }
        for (rule, body) in doc["rules"].as_object().ok_or(format!("{rel}: no \"rules\""))? {
            if rules.named.insert(rule.clone(), body.clone()).is_some() {
                return Err(format!("{rel}: a second rule named {rule:?}"));
            }
        }
        rules.cites.extend(doc["cites"].as_array().ok_or(format!("{rel}: no \"cites\""))?.iter().cloned());
    }
    if rules.named.is_empty() {
        return Err(format!("no rules in {RULES_DIR}"));
    }
    Ok(rules)
}

impl Rules {
    /// Checks `value` against the rule named `name`: every problem, each
    /// with the JSON path where it is.
    fn check(&self, name: &str, value: &Value) -> Res {
        let mut errors = Vec::new();
        self.apply(&Value::String(format!("@{name}")), value, "$", &mut errors);
        if errors.is_empty() { Ok(()) } else { Err(errors.join("\n")) }
    }

    fn apply(&self, rule: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        match rule {
            Value::String(s) if s.starts_with('@') => match self.named.get(&s[1..]) {
                Some(named) => self.apply(named, value, at, errors),
                None => errors.push(format!("{at}: rule fault: no rule is named {s}")),
            },
            Value::String(types) => {
                let mut fits = false;
                for t in types.split('|') {
                    match of_type(value, t) {
                        Some(yes) => fits |= yes,
                        None => return errors.push(format!("{at}: rule fault: {t:?} is not a type")),
                    }
                }
                if !fits {
                    errors.push(format!("{at}: {} is not of type {}", brief(value), types.replace('|', " or ")));
                }
            }
            Value::Array(values) => {
                if !values.contains(value) {
                    errors.push(format!("{at}: {} is not one of {rule}", brief(value)));
                }
            }
            Value::Object(form) => self.form(form, value, at, errors),
            other => errors.push(format!("{at}: rule fault: {other} is not a rule")),
        }
    }

    fn form(&self, form: &Map, value: &Value, at: &str, errors: &mut Vec<String>) {
        let words: Vec<&str> = form.keys().map(String::as_str).collect();
        match words.as_slice() {
            ["list of"] => match value.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.apply(&form["list of"], item, &format!("{at}[{i}]"), errors);
                    }
                }
                None => errors.push(format!("{at}: {} is not a list", brief(value))),
            },
            ["map of"] => match value.as_object() {
                Some(object) => {
                    for (k, v) in object {
                        self.apply(&form["map of"], v, &format!("{at}.{k}"), errors);
                    }
                }
                None => errors.push(format!("{at}: {} is not an object", brief(value))),
            },
            _ => match shape(form) {
                Ok(Shape::Keys(keys)) => self.keys(keys.iter(), value, at, errors),
                Ok(Shape::Pick { by, every, cases }) => {
                    if !value.is_object() {
                        return errors.push(format!("{at}: {} is not an object", brief(value)));
                    }
                    let Some(picked) = value.get(by) else {
                        return errors.push(format!("{at}: the required property \"{by}\" is missing"));
                    };
                    let Some(case) = picked.as_str().and_then(|c| cases.get(c)) else {
                        let names: Vec<&String> = cases.keys().collect();
                        return errors.push(format!("{at}.{by}: {} is not one of {names:?}", brief(picked)));
                    };
                    let Some(case) = case.as_object() else {
                        return errors.push(format!("{at}: rule fault: the case {picked} is not an object"));
                    };
                    let (by, picked) = (by.to_owned(), json!([picked]));
                    let keys = std::iter::once((&by, &picked)).chain(every.into_iter().flatten()).chain(case);
                    self.keys(keys, value, at, errors);
                }
                Err(e) => errors.push(format!("{at}: {e}")),
            },
        }
    }

    /// An object with exactly these keys ("name?" may be left out).
    fn keys<'a>(
        &self,
        keys: impl Iterator<Item = (&'a String, &'a Value)>,
        value: &Value,
        at: &str,
        errors: &mut Vec<String>,
    ) {
        let Some(object) = value.as_object() else {
            return errors.push(format!("{at}: {} is not an object", brief(value)));
        };
        let mut known = BTreeSet::new();
        for (key, rule) in keys {
            let (name, optional) = key.strip_suffix('?').map_or((key.as_str(), false), |n| (n, true));
            known.insert(name);
            match object.get(name) {
                Some(v) => self.apply(rule, v, &format!("{at}.{name}"), errors),
                None if !optional => errors.push(format!("{at}: the required property \"{name}\" is missing")),
                None => {}
            }
        }
        for name in object.keys().filter(|k| !known.contains(k.as_str())) {
            errors.push(format!("{at}: the property \"{name}\" is not allowed"));
        }
    }

    /// `path` (`connect.port`) is a key that the rule for `target`
    /// (`configuration/debugpy`: one case of a "pick by" rule; without the
    /// case, the keys every case has) requires, not only allows.
    fn requires(&self, target: &str, path: &str) -> Res {
        let (name, mut case) = target.split_once('/').map_or((target, None), |(n, c)| (n, Some(c)));
        let mut rule = self.named.get(name).ok_or(format!("no rule is named {name}"))?;
        let segments: Vec<&str> = path.split('.').collect();
        for (i, key) in segments.iter().enumerate() {
            if let Some(n) = rule.as_str().and_then(|s| s.strip_prefix('@')) {
                rule = self.named.get(n).ok_or(format!("rule fault: no rule is named @{n}"))?;
            }
            let form = rule.as_object().ok_or(format!("{path}: the rule for {key} has no keys"))?;
            let keys: Vec<(&String, &Value)> = match (shape(form)?, case.take()) {
                (Shape::Keys(keys), None) => keys.iter().collect(),
                (Shape::Keys(_), Some(c)) => return Err(format!("{name} has no cases, so no {c}")),
                (Shape::Pick { by, .. }, _) if by == *key => {
                    // What a case is picked by is always there.
                    return if i + 1 == segments.len() { Ok(()) } else { Err(format!("{path}: {by} has no keys")) };
                }
                (Shape::Pick { every, cases, .. }, case) => {
                    let own = match case {
                        Some(c) => {
                            Some(cases.get(c).and_then(Value::as_object).ok_or(format!("{name} has no case {c}"))?)
                        }
                        None => None,
                    };
                    every.into_iter().chain(own).flatten().collect()
                }
            };
            rule = match keys.iter().find(|(k, _)| k == key) {
                Some((_, r)) => r,
                None if keys.iter().any(|(k, _)| k.strip_suffix('?') == Some(key)) => {
                    return Err(format!("{path} is required by the source, but the rules make {key} optional"));
                }
                None => return Err(format!("{path} is required by the source, but the rules have no key {key}")),
            };
        }
        Ok(())
    }
}

/// The two rules that describe an object.
enum Shape<'a> {
    Keys(&'a Map),
    Pick { by: &'a str, every: Option<&'a Map>, cases: &'a Map },
}

fn shape(form: &Map) -> Res<Shape<'_>> {
    let rule = Value::Object(form.clone());
    let words: BTreeSet<&str> = form.keys().map(String::as_str).collect();
    if words == BTreeSet::from(["keys"]) {
        return form["keys"]
            .as_object()
            .map(Shape::Keys)
            .ok_or(format!("rule fault: {rule}: \"keys\" is not an object"));
    }
    if !words.contains("pick by") || !words.is_subset(&BTreeSet::from(["pick by", "every case", "cases"])) {
        return Err(format!("rule fault: {rule} is not a rule"));
    }
    Ok(Shape::Pick {
        by: form["pick by"].as_str().ok_or(format!("rule fault: {rule}: \"pick by\" names no key"))?,
        every: match form.get("every case") {
            None => None,
            Some(m) => Some(m.as_object().ok_or(format!("rule fault: {rule}: \"every case\" is not an object"))?),
        },
        cases: form.get("cases").and_then(Value::as_object).ok_or(format!("rule fault: {rule}: no \"cases\""))?,
    })
}

fn of_type(value: &Value, t: &str) -> Option<bool> {
    Some(match t {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => return None,
    })
}

fn brief(value: &Value) -> String {
    let s = value.to_string();
    if s.len() > 60 { format!("{}…", &s[..s.char_indices().nth(57).map_or(s.len(), |(i, _)| i)]) } else { s }
}

// ---------------------------------------------------------------------------
// VS Code: the cross-references the rules cannot see.

/// Every `${input:X}` in the document's strings.
fn input_refs(doc: &Value, out: &mut BTreeSet<String>) {
    match doc {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find("${input:") {
                let after = &rest[i + "${input:".len()..];
                let end = after.find('}').unwrap_or(after.len());
                out.insert(after[..end].to_owned());
                rest = &after[end..];
            }
        }
        Value::Array(a) => a.iter().for_each(|v| input_refs(v, out)),
        Value::Object(o) => o.values().for_each(|v| input_refs(v, out)),
        _ => {}
    }
}

/// Each `${input:X}` used has an input with id X in the same file.
fn inputs_defined(doc: &Value) -> Res {
    let mut used = BTreeSet::new();
    input_refs(&doc["configurations"], &mut used);
    input_refs(&doc["tasks"], &mut used);
    let defined: BTreeSet<String> =
        doc["inputs"].as_array().into_iter().flatten().filter_map(|i| i["id"].as_str()).map(str::to_owned).collect();
    let missing: Vec<&String> = used.difference(&defined).collect();
    if missing.is_empty() { Ok(()) } else { Err(format!("${{input:…}} without an input: {missing:?}")) }
}

/// The target of `preflight … KIND/NAME:PORT`, e.g. ("svc", "jvm", 5005).
fn target_of(args: &[&str]) -> Res<Target> {
    let target = args.last().ok_or("no target")?;
    let (head, port) = target.rsplit_once(':').ok_or(format!("{target}: no :PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("{target}: bad port"))?;
    let (kind, name) = head.split_once('/').ok_or(format!("{target}: not KIND/NAME:PORT"))?;
    if !["svc", "pod", "deploy"].contains(&kind) || name.is_empty() || name.contains('.') {
        return Err(format!("{target}: the recipes name svc/, pod/ or deploy/ targets in the -n namespace"));
    }
    Ok((kind.to_owned(), name.to_owned(), port))
}

/// The flags `devnet preflight --help` lists (those taking a value marked).
const PREFLIGHT_FLAGS: [(&str, bool); 10] = [
    ("--context", true),
    ("--kubeconfig", true),
    ("-n", true),
    ("--namespace", true),
    ("--proto", true),
    ("--probe", true),
    ("--connect", false),
    ("--timeout", true),
    ("--json", false),
    ("--progress", false),
];

/// `preflight [flags] TARGET`: known flags, each value given, one target last.
fn preflight_args(args: &[&str]) -> Res<Target> {
    if args.first() != Some(&"preflight") {
        return Err(format!("{args:?} does not start with preflight"));
    }
    let mut i = 1;
    while i + 1 < args.len() {
        let flag = args[i];
        let (_, takes) =
            PREFLIGHT_FLAGS.iter().find(|(f, _)| *f == flag).ok_or(format!("{args:?}: unknown flag {flag}"))?;
        i += if *takes { 2 } else { 1 };
    }
    if i != args.len() - 1 {
        return Err(format!("{args:?}: a flag's value is missing or the target is not last"));
    }
    target_of(args)
}

/// The preflight tasks: label → args.
fn preflight_tasks(tasks: &Value) -> Res<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    for task in tasks["tasks"].as_array().into_iter().flatten() {
        let args: Vec<String> =
            task["args"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
        if task["command"] != "devnet" || args.first().map(String::as_str) != Some("preflight") {
            continue;
        }
        let label = task["label"].as_str().ok_or("a preflight task without a label")?.to_owned();
        if out.insert(label.clone(), args).is_some() {
            return Err(format!("two tasks are labelled {label:?}"));
        }
    }
    Ok(out)
}

/// The checks on tasks.json beyond its rules: the preflight tasks are
/// processes running `devnet preflight` with known flags and only the inputs
/// the lab fills in.
fn tasks_sound(tasks: &Value) -> Res {
    inputs_defined(tasks)?;
    let preflights = preflight_tasks(tasks)?;
    if preflights.len() < 4 {
        return Err(format!("{} preflight tasks; Java, Go, Python and Node each need one", preflights.len()));
    }
    for (label, args) in &preflights {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        preflight_args(&args).map_err(|e| format!("task {label:?}: {e}"))?;
        for a in &args {
            let vars = a.matches("${").count();
            let allowed = a.matches("${input:context}").count() + a.matches("${input:namespace}").count();
            if vars != allowed {
                return Err(format!("task {label:?}: {a:?} has a variable the lab does not fill in"));
            }
        }
    }
    Ok(())
}

/// The host a launch configuration attaches to.
fn launch_host(config: &Value) -> Option<&str> {
    ["hostName", "host", "address"]
        .iter()
        .find_map(|k| config[*k].as_str())
        .or_else(|| config["connect"]["host"].as_str())
}

fn launch_port(config: &Value) -> Option<u64> {
    config["port"].as_u64().or_else(|| config["connect"]["port"].as_u64())
}

/// launch.json against tasks.json: every preLaunchTask is a task, and the
/// configuration attaches to the name and port its preflight checked.
fn launch_matches_tasks(launch: &Value, tasks: &Value) -> Res {
    inputs_defined(launch)?;
    let labels: BTreeSet<&str> =
        tasks["tasks"].as_array().into_iter().flatten().filter_map(|t| t["label"].as_str()).collect();
    let preflights = preflight_tasks(tasks)?;
    let configs = launch["configurations"].as_array().ok_or("no configurations")?;
    if configs.len() < 4 {
        return Err(format!("{} configurations; Java, Go, Python and Node each need one", configs.len()));
    }
    for c in configs {
        let name = c["name"].as_str().unwrap_or("?");
        let task = c["preLaunchTask"].as_str().ok_or(format!("{name:?} has no preLaunchTask"))?;
        if !labels.contains(task) {
            return Err(format!("{name:?}: its preLaunchTask {task:?} is not a task in tasks.json ({labels:?})"));
        }
        let args = preflights.get(task).ok_or(format!("{name:?}: {task:?} does not run devnet preflight"))?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, target, port) = preflight_args(&args)?;
        let host = launch_host(c).ok_or(format!("{name:?}: no host"))?;
        if host.split('.').next() != Some(target.as_str()) || launch_port(c) != Some(u64::from(port)) {
            return Err(format!(
                "{name:?} attaches to {host}:{:?}, but {task:?} checks {target}:{port}",
                launch_port(c)
            ));
        }
    }
    Ok(())
}

fn tasks_doc() -> Res<Value> {
    read_jsonc("docs/ide/vscode/tasks.json")
}

fn launch_doc() -> Res<Value> {
    read_jsonc("docs/ide/vscode/launch.json")
}

/// The checks refuse it, saying `because` (and not because of a fault in
/// the rules).
fn expect_refused(what: &str, because: &str, result: Res) -> Res {
    match result {
        Err(e) if e.contains("rule fault") => Err(format!("{what}: refused, but for a fault in the rules: {e}")),
        Err(e) if e.contains(because) => Ok(()),
        Err(e) => Err(format!("{what}: refused, but without saying {because:?}: {e}")),
        Ok(()) => Err(format!("{what} passed the checks")),
    }
}

fn config_of<'a>(launch: &'a mut Value, debugger: &str) -> Res<&'a mut Value> {
    launch["configurations"]
        .as_array_mut()
        .and_then(|cs| cs.iter_mut().find(|c| c["type"] == debugger))
        .ok_or(format!("no {debugger} configuration"))
}

#[test]
fn tasks_json_keeps_to_its_rules() -> Res {
    rules()?.check("tasks.json", &tasks_doc()?)
}

#[test]
fn tasks_json_runs_devnet_preflight_with_the_labs_inputs_only() -> Res {
    let tasks = tasks_doc()?;
    tasks_sound(&tasks)?;
    for task in tasks["tasks"].as_array().into_iter().flatten() {
        if task["type"] != "process" || task["problemMatcher"] != json!([]) {
            return Err(format!("{}: wanted a process task with \"problemMatcher\": []", task["label"]));
        }
        if !matches!(task["presentation"]["reveal"].as_str(), Some("silent" | "always")) {
            return Err(format!("{}: the terminal must show up when preflight fails", task["label"]));
        }
    }
    Ok(())
}

/// tests/lab_preflight.rs reads tasks.json with whole-line `//` comments
/// removed (until it uses `jsonc::strip`): that must parse too.
#[test]
fn tasks_json_parses_with_whole_line_comments_removed() -> Res {
    let text = read("docs/ide/vscode/tasks.json")?;
    let plain: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let doc: Value = serde_json::from_str(&plain).map_err(|e| format!("tasks.json without its comment lines: {e}"))?;
    if doc != tasks_doc()? {
        return Err("tasks.json reads differently with only whole-line comments removed".into());
    }
    Ok(())
}

#[test]
fn launch_json_keeps_to_each_debuggers_rules() -> Res {
    let launch = launch_doc()?;
    rules()?.check("launch.json", &launch)?;
    let types: BTreeSet<&str> =
        launch["configurations"].as_array().into_iter().flatten().filter_map(|c| c["type"].as_str()).collect();
    if types != BTreeSet::from(["java", "go", "debugpy", "node"]) {
        return Err(format!("wanted one configuration per debugger, got {types:?}"));
    }
    Ok(())
}

#[test]
fn launch_json_prelaunch_tasks_and_inputs_resolve() -> Res {
    launch_matches_tasks(&launch_doc()?, &tasks_doc()?)
}

#[test]
fn the_checks_refuse_broken_launch_configurations() -> Res {
    let rules = rules()?;
    let tasks = tasks_doc()?;
    let base = launch_doc()?;
    type Mutation = fn(&mut Value) -> Res;
    let mutations: &[(&str, &str, Mutation)] = &[
        (
            "debugpy without connect.port",
            "$.configurations[2].connect: the required property \"port\" is missing",
            |l| {
                config_of(l, "debugpy")?["connect"].as_object_mut().ok_or("no connect")?.remove("port");
                Ok(())
            },
        ),
        ("go with the port as a string", "$.configurations[1].port: \"2345\" is not of type integer", |l| {
            config_of(l, "go")?["port"] = json!("2345");
            Ok(())
        }),
        ("node with the port as a plain string", "$.configurations[3].port: \"9229\" is not of type integer", |l| {
            config_of(l, "node")?["port"] = json!("9229");
            Ok(())
        }),
        ("java with a misspelt hostname", "$.configurations[0]: the property \"hostname\" is not allowed", |l| {
            let c = config_of(l, "java")?.as_object_mut().ok_or("not an object")?;
            let host = c.remove("hostName").ok_or("no hostName")?;
            c.insert("hostname".into(), host);
            Ok(())
        }),
        ("java without a port", "$.configurations[0]: the required property \"port\" is missing", |l| {
            config_of(l, "java")?.as_object_mut().ok_or("not an object")?.remove("port");
            Ok(())
        }),
        ("a configuration without a name", "the required property \"name\" is missing", |l| {
            config_of(l, "java")?.as_object_mut().ok_or("not an object")?.remove("name");
            Ok(())
        }),
        ("go with an unknown mode", "$.configurations[1].mode: \"tunnel\" is not one of [\"remote\"]", |l| {
            config_of(l, "go")?["mode"] = json!("tunnel");
            Ok(())
        }),
        (
            "go left to the legacy adapter",
            "$.configurations[1].debugAdapter: \"legacy\" is not one of [\"dlv-dap\"]",
            |l| {
                config_of(l, "go")?["debugAdapter"] = json!("legacy");
                Ok(())
            },
        ),
        ("a launch request", "$.configurations[3].request: \"launch\" is not one of [\"attach\"]", |l| {
            config_of(l, "node")?["request"] = json!("launch");
            Ok(())
        }),
        (
            "an unknown debugger type",
            "$.configurations[3].type: \"node2\" is not one of [\"debugpy\", \"go\", \"java\", \"node\"]",
            |l| {
                config_of(l, "node")?["type"] = json!("node2");
                Ok(())
            },
        ),
        ("skipFiles as one string", "$.configurations[3].skipFiles: \"<node_internals>/**\" is not a list", |l| {
            config_of(l, "node")?["skipFiles"] = json!("<node_internals>/**");
            Ok(())
        }),
        ("a preLaunchTask that is no task", "is not a task in tasks.json", |l| {
            config_of(l, "java")?["preLaunchTask"] = json!("devnet preflight: jvm");
            Ok(())
        }),
        ("an input that is not defined", "without an input: [\"ns\"]", |l| {
            config_of(l, "go")?["host"] = json!("go.${input:ns}");
            Ok(())
        }),
    ];
    for (what, because, mutate) in mutations {
        let mut launch = base.clone();
        mutate(&mut launch)?;
        expect_refused(
            what,
            because,
            rules.check("launch.json", &launch).and_then(|()| launch_matches_tasks(&launch, &tasks)),
        )?;
    }
    // The port the debugger uses must be the one preflight checked.
    let mut moved = base.clone();
    config_of(&mut moved, "java")?["port"] = json!(5006);
    expect_refused(
        "java attaching to another port than its preflight",
        "but \"devnet preflight: java\" checks jvm:5005",
        launch_matches_tasks(&moved, &tasks),
    )
}

#[test]
fn the_checks_refuse_broken_tasks() -> Res {
    let rules = rules()?;
    let base = tasks_doc()?;
    type Mutation = fn(&mut Value) -> Res;
    let mutations: &[(&str, &str, Mutation)] = &[
        ("an unknown task type", "$.tasks[0].type: \"bogus\" is not one of [\"process\",\"shell\"]", |t| {
            t["tasks"][0]["type"] = json!("bogus");
            Ok(())
        }),
        ("a process task without a command", "$.tasks[0]: the required property \"command\" is missing", |t| {
            t["tasks"][0].as_object_mut().ok_or("no task")?.remove("command");
            Ok(())
        }),
        ("a task without a label", "$.tasks[1]: the required property \"label\" is missing", |t| {
            t["tasks"][1].as_object_mut().ok_or("no task")?.remove("label");
            Ok(())
        }),
        ("an argument that is a number", "$.tasks[0].args[7]: 5005 is not of type string", |t| {
            t["tasks"][0]["args"].as_array_mut().ok_or("no args")?.push(json!(5005));
            Ok(())
        }),
        (
            "a presentation key we do not use",
            "$.tasks[0].presentation: the property \"revealOn\" is not allowed",
            |t| {
                t["tasks"][0]["presentation"]["revealOn"] = json!("failure");
                Ok(())
            },
        ),
        (
            "a reveal VS Code does not know",
            "$.tasks[2].presentation.reveal: \"onFailure\" is not one of [\"always\",\"silent\",\"never\"]",
            |t| {
                t["tasks"][2]["presentation"]["reveal"] = json!("onFailure");
                Ok(())
            },
        ),
        ("a misspelt task key", "$.tasks[3]: the property \"problemMatchers\" is not allowed", |t| {
            let task = t["tasks"][3].as_object_mut().ok_or("no task")?;
            let matcher = task.remove("problemMatcher").ok_or("no problemMatcher")?;
            task.insert("problemMatchers".into(), matcher);
            Ok(())
        }),
        ("another file version", "$.version: \"0.1.0\" is not one of [\"2.0.0\"]", |t| {
            t["version"] = json!("0.1.0");
            Ok(())
        }),
        (
            "a promptString without a description",
            "$.inputs[0]: the required property \"description\" is missing",
            |t| {
                t["inputs"][0].as_object_mut().ok_or("no input")?.remove("description");
                Ok(())
            },
        ),
        ("a pickString without options", "$.inputs[1]: the required property \"options\" is missing", |t| {
            t["inputs"][1]["type"] = json!("pickString");
            Ok(())
        }),
        (
            "an input of no kind VS Code has",
            "$.inputs[0].type: \"prompt\" is not one of [\"command\", \"pickString\", \"promptString\"]",
            |t| {
                t["inputs"][0]["type"] = json!("prompt");
                Ok(())
            },
        ),
        ("a variable the lab does not fill in", "has a variable the lab does not fill in", |t| {
            t["tasks"][0]["args"][2] = json!("${config:devnet.context}");
            Ok(())
        }),
        ("an unknown preflight flag", "unknown flag --wait", |t| {
            t["tasks"][0]["args"].as_array_mut().ok_or("no args")?.insert(1, json!("--wait"));
            Ok(())
        }),
    ];
    for (what, because, mutate) in mutations {
        let mut tasks = base.clone();
        mutate(&mut tasks)?;
        expect_refused(what, because, rules.check("tasks.json", &tasks).and_then(|()| tasks_sound(&tasks)))?;
    }
    Ok(())
}

#[test]
fn the_rule_checker_covers_its_forms() -> Res {
    let named = json!({
        "doc": {"keys": {
            "a": "integer",
            "b?": ["x", "y"],
            "c?": {"list of": "string"},
            "d?": {"map of": "boolean"},
            "e?": "integer|string",
            "f?": "@f",
            "g?": "number"
        }},
        "f": {"pick by": "kind", "every case": {"id": "string"}, "cases": {"p": {"q": "string"}, "r": {"s?": "string"}}}
    });
    let rules = Rules { named: named.as_object().cloned().ok_or("not an object")?, cites: Vec::new() };
    for ok in [
        json!({"a": 2}),
        json!({"a": 2, "b": "x", "c": ["p", "q"], "d": {"k": true}, "e": "5", "f": {"kind": "p", "id": "i", "q": "v"}}),
        json!({"a": 2, "e": 5, "f": {"kind": "r", "id": "i"}, "g": 1.5}),
    ] {
        rules.check("doc", &ok).map_err(|e| format!("{ok} was refused: {e}"))?;
    }
    for (bad, because) in [
        (json!([]), "$: [] is not an object"),
        (json!({}), "$: the required property \"a\" is missing"),
        (json!({"a": 1.5}), "$.a: 1.5 is not of type integer"),
        (json!({"a": 1, "z": 0}), "$: the property \"z\" is not allowed"),
        (json!({"a": 1, "b": "z"}), "$.b: \"z\" is not one of [\"x\",\"y\"]"),
        (json!({"a": 1, "c": "p"}), "$.c: \"p\" is not a list"),
        (json!({"a": 1, "c": ["p", 3]}), "$.c[1]: 3 is not of type string"),
        (json!({"a": 1, "d": {"k": 1}}), "$.d.k: 1 is not of type boolean"),
        (json!({"a": 1, "e": true}), "$.e: true is not of type integer or string"),
        (json!({"a": 1, "g": "1"}), "$.g: \"1\" is not of type number"),
        (json!({"a": 1, "f": {"id": "i"}}), "$.f: the required property \"kind\" is missing"),
        (json!({"a": 1, "f": {"kind": "t", "id": "i"}}), "$.f.kind: \"t\" is not one of [\"p\", \"r\"]"),
        (json!({"a": 1, "f": {"kind": "p", "id": "i"}}), "$.f: the required property \"q\" is missing"),
        (json!({"a": 1, "f": {"kind": "r", "q": "v"}}), "$.f: the property \"q\" is not allowed"),
        (json!({"a": 1, "f": {"kind": "r", "q": "v"}}), "$.f: the required property \"id\" is missing"),
    ] {
        expect_refused(&bad.to_string(), because, rules.check("doc", &bad))?;
    }
    // A rule the checker does not know is a fault in the rules, never a pass.
    for rule in [json!("text"), json!("@none"), json!({"one of": ["x"]}), json!({"keys": ["a"]}), json!(3)] {
        let odd =
            Rules { named: json!({ "doc": rule }).as_object().cloned().ok_or("not an object")?, cites: Vec::new() };
        match odd.check("doc", &json!("x")) {
            Err(e) if e.contains("rule fault") => {}
            other => return Err(format!("the rule {rule} gave {other:?}, not a rule fault")),
        }
    }
    // What a cite says is required must be required by the rules.
    rules.requires("doc", "a")?;
    rules.requires("f", "kind")?;
    rules.requires("f", "id")?;
    rules.requires("f/p", "q")?;
    for (target, path, because) in [
        ("doc", "b", "the rules make b optional"),
        ("doc", "h", "the rules have no key h"),
        ("f", "q", "the rules have no key q"),
        ("f/r", "s", "the rules make s optional"),
        ("f/t", "id", "f has no case t"),
        ("doc/p", "a", "doc has no cases"),
    ] {
        expect_refused(&format!("{target} requiring {path}"), because, rules.requires(target, path))?;
    }
    Ok(())
}

#[test]
fn the_rules_cite_what_the_ides_require() -> Res {
    let rules = rules()?;
    let mut cited = BTreeSet::new();
    for cite in &rules.cites {
        let keys: BTreeSet<&str> =
            cite.as_object().ok_or("a cite is not an object")?.keys().map(String::as_str).collect();
        let commit = cite["commit"].as_str().unwrap_or_default();
        if keys != BTreeSet::from(["for", "requires", "repo", "path", "commit"])
            || cite["repo"].as_str().is_none_or(|r| r.split('/').filter(|p| !p.is_empty()).count() != 2)
            || cite["path"].as_str().is_none_or(str::is_empty)
            || commit.len() != 40
            || !commit.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(format!("a cite needs for, requires, a repo owner/name, a path and a 40-hex commit: {cite}"));
        }
        let target = cite["for"].as_str().ok_or(format!("{cite}: \"for\" is not a string"))?;
        for key in cite["requires"].as_array().ok_or(format!("{target}: \"requires\" is not a list"))? {
            let key = key.as_str().ok_or(format!("{target}: {key} is not a key"))?;
            rules.requires(target, key).map_err(|e| format!("the cite for {target}: {e}"))?;
        }
        if !cited.insert(target) {
            return Err(format!("two cites for {target}"));
        }
    }
    // Every debugger and every kind of input says where its requirements
    // were read, and so do the task and the configuration as a whole.
    let mut wanted = BTreeSet::from(["task".to_owned(), "configuration".to_owned()]);
    for name in ["configuration", "input"] {
        for case in rules.named[name]["cases"].as_object().ok_or(format!("{name} has no cases"))?.keys() {
            wanted.insert(format!("{name}/{case}"));
        }
    }
    let missing: Vec<&String> = wanted.iter().filter(|w| !cited.contains(w.as_str())).collect();
    if !missing.is_empty() {
        return Err(format!("no cite for {missing:?}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// JetBrains: a tiny XML reader (well-formedness, elements and attributes).

#[derive(Debug, Clone, PartialEq)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// `<option name=NAME value=…/>` among the children.
    fn option(&self, name: &str) -> Option<&Element> {
        self.all("option").find(|o| o.attr("name") == Some(name))
    }
}

struct Xml<'a> {
    s: &'a str,
    i: usize,
}

/// Parses a whole document: an optional declaration, comments, one root.
fn parse_xml(text: &str) -> Res<Element> {
    let mut p = Xml { s: text, i: 0 };
    p.skip_bom();
    if p.rest().starts_with("<?xml") {
        let end = p.rest().find("?>").ok_or("unterminated XML declaration")?;
        p.i += end + 2;
    }
    p.misc()?;
    let root = p.element()?;
    p.misc()?;
    if p.i != p.s.len() {
        return Err(format!("content after the root element at byte {}", p.i));
    }
    Ok(root)
}

impl Xml<'_> {
    fn rest(&self) -> &str {
        &self.s[self.i..]
    }

    fn skip_bom(&mut self) {
        if self.rest().starts_with('\u{feff}') {
            self.i += '\u{feff}'.len_utf8();
        }
    }

    fn err(&self, what: &str) -> String {
        let line = self.s[..self.i].matches('\n').count() + 1;
        format!("line {line}: {what}")
    }

    fn ws(&mut self) {
        let n = self.rest().len() - self.rest().trim_start().len();
        self.i += n;
    }

    /// White space and comments.
    fn misc(&mut self) -> Res {
        loop {
            self.ws();
            if self.rest().starts_with("<!--") {
                self.comment()?;
            } else {
                return Ok(());
            }
        }
    }

    fn comment(&mut self) -> Res {
        let body = &self.rest()[4..];
        let end = body.find("-->").ok_or(self.err("unterminated comment"))?;
        if body[..end].contains("--") || body[..end].ends_with('-') {
            return Err(self.err("\"--\" inside a comment"));
        }
        self.i += 4 + end + 3;
        Ok(())
    }

    fn name(&mut self) -> Res<String> {
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|(i, c)| {
                !(c.is_ascii_alphabetic()
                    || *c == '_'
                    || *c == ':'
                    || (*i > 0 && (c.is_ascii_digit() || *c == '-' || *c == '.')))
            })
            .map_or(rest.len(), |(i, _)| i);
        if len == 0 {
            return Err(self.err("a name was expected"));
        }
        let name = rest[..len].to_owned();
        self.i += len;
        Ok(name)
    }

    fn expect(&mut self, token: &str) -> Res {
        if self.rest().starts_with(token) {
            self.i += token.len();
            Ok(())
        } else {
            Err(self.err(&format!("{token:?} was expected")))
        }
    }

    fn element(&mut self) -> Res<Element> {
        self.expect("<")?;
        let name = self.name()?;
        let mut attrs: Vec<(String, String)> = Vec::new();
        loop {
            let before = self.i;
            self.ws();
            if self.rest().starts_with("/>") {
                self.i += 2;
                return Ok(Element { name, attrs, children: vec![] });
            }
            if self.rest().starts_with('>') {
                self.i += 1;
                break;
            }
            if self.i == before {
                return Err(self.err("white space was expected between attributes"));
            }
            let key = self.name()?;
            self.ws();
            self.expect("=")?;
            self.ws();
            let quote = self
                .rest()
                .chars()
                .next()
                .filter(|c| *c == '"' || *c == '\'')
                .ok_or(self.err("a quoted value was expected"))?;
            self.i += 1;
            let end = self.rest().find(quote).ok_or(self.err("unterminated attribute value"))?;
            let raw = &self.rest()[..end];
            if raw.contains('<') {
                return Err(self.err("\"<\" in an attribute value"));
            }
            let value = unescape(raw).map_err(|e| self.err(&e))?;
            self.i += end + 1;
            if attrs.iter().any(|(k, _)| *k == key) {
                return Err(self.err(&format!("the attribute {key} is given twice")));
            }
            attrs.push((key, value));
        }
        let mut children = Vec::new();
        loop {
            let text_end = self.rest().find('<').ok_or(self.err(&format!("<{name}> is not closed")))?;
            unescape(&self.rest()[..text_end]).map_err(|e| self.err(&e))?;
            self.i += text_end;
            if self.rest().starts_with("<!--") {
                self.comment()?;
            } else if self.rest().starts_with("</") {
                self.i += 2;
                let close = self.name()?;
                if close != name {
                    return Err(self.err(&format!("</{close}> closes <{name}>")));
                }
                self.ws();
                self.expect(">")?;
                return Ok(Element { name, attrs, children });
            } else {
                children.push(self.element()?);
            }
        }
    }
}

/// Character data with its five entities and character references.
fn unescape(raw: &str) -> Res<String> {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').ok_or(format!("an unterminated entity in {raw:?}"))?;
        let entity = &rest[i + 1..i + end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => entity
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32)
                .ok_or(format!("the entity &{entity}; is not XML's"))?,
        };
        out.push(c);
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The attributes ToolsProcessor.readToolAttributes reads (and saveTool writes).
const TOOL_ATTRIBUTES: [&str; 11] = [
    "name",
    "description",
    "showInMainMenu",
    "showInEditor",
    "showInProject",
    "showInSearchPopup",
    "disabled",
    "useConsole",
    "showConsoleOnStdOut",
    "showConsoleOnStdErr",
    "synchronizeAfterRun",
];

/// The External Tools file: group name and tool name → preflight target.
fn tools_sound(root: &Element) -> Res<(String, BTreeMap<String, Target>)> {
    if root.name != "toolSet" {
        return Err(format!("the root is <{}>, not <toolSet>", root.name));
    }
    let group = root.attr("name").filter(|n| !n.is_empty()).ok_or("the toolSet has no name")?.to_owned();
    let mut tools = BTreeMap::new();
    for tool in root.all("tool") {
        let name = tool.attr("name").filter(|n| !n.is_empty()).ok_or("a tool without a name")?.to_owned();
        for (k, v) in &tool.attrs {
            if !TOOL_ATTRIBUTES.contains(&k.as_str()) {
                return Err(format!("tool {name:?}: the IDE reads no attribute {k}"));
            }
            if k != "name" && k != "description" && v != "true" && v != "false" {
                return Err(format!("tool {name:?}: {k}={v:?} is not a boolean"));
            }
        }
        if tool.attr("disabled") == Some("true")
            || tool.attr("useConsole") != Some("true")
            || tool.attr("showConsoleOnStdErr") != Some("true")
        {
            return Err(format!(
                "tool {name:?}: wanted enabled, useConsole and showConsoleOnStdErr so a failure shows"
            ));
        }
        let exec = tool.all("exec").next().ok_or(format!("tool {name:?} has no <exec>"))?;
        let value = |o: &str| exec.option(o).and_then(|e| e.attr("value"));
        if value("COMMAND") != Some("devnet") {
            return Err(format!("tool {name:?}: COMMAND is {:?}, not devnet", value("COMMAND")));
        }
        let params = value("PARAMETERS").ok_or(format!("tool {name:?} has no PARAMETERS"))?;
        if params.contains('$') || params.contains('"') {
            return Err(format!("tool {name:?}: keep PARAMETERS free of macros and quotes: {params}"));
        }
        let args: Vec<&str> = params.split_whitespace().collect();
        let target = preflight_args(&args).map_err(|e| format!("tool {name:?}: {e}"))?;
        if value("WORKING_DIRECTORY").is_none() {
            return Err(format!("tool {name:?} has no WORKING_DIRECTORY"));
        }
        if tools.insert(name.clone(), target).is_some() {
            return Err(format!("two tools are named {name:?}"));
        }
    }
    if tools.len() < 4 {
        return Err(format!("{} tools; Java, Go, Python and Node each need one", tools.len()));
    }
    Ok((group, tools))
}

/// A run configuration: a known type, and a before-launch tool that exists
/// and checks the port it attaches to.
fn run_config_sound(root: &Element, group: &str, tools: &BTreeMap<String, Target>) -> Res {
    if root.name != "component" || root.attr("name") != Some("ProjectRunConfigurationManager") {
        return Err(format!(
            "the root is <{}> {:?}, not the ProjectRunConfigurationManager component",
            root.name,
            root.attr("name")
        ));
    }
    let mut configs = root.all("configuration").peekable();
    if configs.peek().is_none() {
        return Err("no <configuration>".into());
    }
    for c in configs {
        let name = c.attr("name").ok_or("a configuration without a name")?;
        let (host, port) = match c.attr("type") {
            Some("Remote") => {
                let opt = |o: &str| c.option(o).and_then(|e| e.attr("value"));
                if opt("USE_SOCKET_TRANSPORT") != Some("true") || opt("SERVER_MODE") != Some("false") {
                    return Err(format!("{name:?}: Remote JVM Debug must attach over a socket"));
                }
                (opt("HOST"), opt("PORT"))
            }
            Some("GoRemoteDebugConfigurationType") => (c.attr("host"), c.attr("port")),
            other => return Err(format!("{name:?}: type {other:?} is not one these recipes know")),
        };
        let port: u16 = port.and_then(|p| p.parse().ok()).ok_or(format!("{name:?}: no numeric port"))?;
        let host = host.ok_or(format!("{name:?}: no host"))?;
        let method = c.all("method").next().ok_or(format!("{name:?}: no <method>"))?;
        if method.attr("v") != Some("2") {
            return Err(format!("{name:?}: <method v=\"2\"> is the format the IDE writes"));
        }
        let task = method.option("ToolBeforeRunTask").ok_or(format!("{name:?}: no ToolBeforeRunTask"))?;
        let action = task.attr("actionId").unwrap_or_default();
        if task.attr("enabled") != Some("true") {
            return Err(format!("{name:?}: the before-launch tool is not enabled"));
        }
        let tool = action
            .strip_prefix(&format!("Tool_{group}_"))
            .ok_or(format!("{name:?}: actionId {action:?} is not Tool_{group}_<tool name>"))?;
        let (_, target, checked) =
            tools.get(tool).ok_or(format!("{name:?}: no tool named {tool:?} in the {group} group"))?;
        if host.split('.').next() != Some(target.as_str()) || *checked != port {
            return Err(format!("{name:?} attaches to {host}:{port}, but its tool {tool:?} checks {target}:{checked}"));
        }
    }
    Ok(())
}

const TOOLS_XML: &str = "docs/ide/jetbrains/tools/devnet.xml";

fn run_configs() -> Res<Vec<(PathBuf, String)>> {
    let dir = repo().join("docs/ide/jetbrains/run");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.to_string_lossy().ends_with(".run.xml") {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            out.push((path, text));
        }
    }
    out.sort();
    Ok(out)
}

#[test]
fn jetbrains_external_tools_run_devnet_preflight() -> Res {
    let root = parse_xml(&read(TOOLS_XML)?).map_err(|e| format!("{TOOLS_XML}: {e}"))?;
    let (group, tools) = tools_sound(&root)?;
    if group != "devnet" {
        return Err(format!("the group is {group:?}; the run configurations name Tool_devnet_…"));
    }
    // The same checks as the VS Code tasks, target for target.
    let vscode: BTreeSet<Target> = preflight_tasks(&tasks_doc()?)?
        .values()
        .map(|a| preflight_args(&a.iter().map(String::as_str).collect::<Vec<_>>()))
        .collect::<Res<_>>()?;
    let jetbrains: BTreeSet<Target> = tools.into_values().collect();
    if vscode != jetbrains {
        return Err(format!("VS Code checks {vscode:?}, JetBrains {jetbrains:?}"));
    }
    Ok(())
}

#[test]
fn jetbrains_run_configurations_run_their_tool_first() -> Res {
    let (group, tools) = tools_sound(&parse_xml(&read(TOOLS_XML)?)?)?;
    let configs = run_configs()?;
    let types: BTreeSet<String> = configs
        .iter()
        .map(|(path, text)| {
            let root = parse_xml(text).map_err(|e| format!("{}: {e}", path.display()))?;
            run_config_sound(&root, &group, &tools).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(root.all("configuration").filter_map(|c| c.attr("type")).collect::<Vec<_>>().join(","))
        })
        .collect::<Res<_>>()?;
    if types != BTreeSet::from(["GoRemoteDebugConfigurationType".to_owned(), "Remote".to_owned()]) {
        return Err(format!("wanted a Remote JVM Debug and a Go Remote configuration, got {types:?}"));
    }
    Ok(())
}

#[test]
fn the_xml_checks_refuse_broken_files() -> Res {
    let tools_text = read(TOOLS_XML)?;
    let (group, tools) = tools_sound(&parse_xml(&tools_text)?)?;
    for bad in [
        "<a><b></a>",
        "<a x=\"1\" x=\"2\"/>",
        "<a x=1/>",
        "<a>&nbsp;</a>",
        "<a/><b/>",
        "<a><!-- a -- b --></a>",
        "<a x=\"<\"/>",
        "<a>",
        "<a\"/>",
    ] {
        if parse_xml(bad).is_ok() {
            return Err(format!("{bad:?} parsed"));
        }
    }
    let ok = parse_xml("<?xml version=\"1.0\"?>\n<!-- c -->\n<a x='1' y=\"&amp;&#65;&#x42;\">t<b/><!-- d --></a>\n")?;
    if ok.attr("y") != Some("&AB") || ok.children.len() != 1 {
        return Err(format!("parsed as {ok:?}"));
    }
    let broken_tools = [
        (tools_text.replace("value=\"devnet\"", "value=\"kubectl\""), "not devnet"),
        (
            tools_text.replace("value=\"preflight --context", "value=\"connect --context"),
            "does not start with preflight",
        ),
        (tools_text.replace("useConsole=\"true\"", "useConsole=\"false\""), "so a failure shows"),
        (tools_text.replace("--connect", "--connect --bogus"), "unknown flag --bogus"),
        (tools_text.replace("showInEditor=", "showInEditr="), "the IDE reads no attribute showInEditr"),
        (tools_text.replace("</toolSet>", ""), "<toolSet> is not closed"),
    ];
    for (i, (text, because)) in broken_tools.iter().enumerate() {
        let checked = parse_xml(text).and_then(|r| tools_sound(&r)).map(|_| ());
        expect_refused(&format!("broken tools file #{i}"), because, checked)?;
    }
    for (path, text) in run_configs()? {
        let broken = [
            (text.replace("Tool_devnet_", "Tool_External Tools_"), "is not Tool_devnet_<tool name>"),
            (text.replace("Tool_devnet_preflight", "Tool_devnet_check"), "no tool named"),
            (text.replace("ToolBeforeRunTask", "Make"), "no ToolBeforeRunTask"),
            (text.replace("2345", "2346").replace("5005", "5006"), "but its tool"),
            (text.replace("enabled=\"true\"", "enabled=\"false\""), "is not enabled"),
            (text.replace("</configuration>", "</config>"), "closes <configuration>"),
        ];
        for (i, (b, because)) in broken.iter().enumerate() {
            let checked = parse_xml(b).and_then(|r| run_config_sound(&r, &group, &tools));
            expect_refused(&format!("{} broken #{i}", path.display()), because, checked)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The docs' relative links lead somewhere.

#[test]
fn doc_links_resolve() -> Res {
    for doc in ["docs/preflight.md", "docs/ide/README.md"] {
        let text = read(doc)?;
        let dir = repo().join(doc).parent().map(Path::to_path_buf).unwrap_or_default();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let end = after.find(')').ok_or(format!("{doc}: an unclosed link"))?;
            let link = &after[..end];
            rest = &after[end..];
            if link.contains("://") || link.starts_with('#') || link.starts_with("mailto:") {
                continue;
            }
            let file = link.split('#').next().unwrap_or_default();
            if !dir.join(file).exists() {
                return Err(format!("{doc}: the link {link} leads nowhere"));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// docs/preflight.md's JSON examples are what devnet prints: each report and
// each event reads as the model's type and writes back the same, field for
// field (so a renamed, missing or extra field fails here).

#[test]
fn the_preflight_docs_json_examples_are_real_reports() -> Res {
    use devnet_model::preflight::{Progress, Report};
    let text = read("docs/preflight.md")?;
    let blocks: Vec<&str> = text.split("```json\n").skip(1).filter_map(|b| b.split("\n```").next()).collect();
    let (mut reports, mut events) = (0, 0);
    for block in blocks {
        let values: Vec<Value> = match serde_json::from_str::<Value>(block) {
            Ok(v) => vec![v],
            Err(_) => block
                .lines()
                .map(|l| serde_json::from_str(l).map_err(|e| format!("docs/preflight.md: {e}: {l}")))
                .collect::<Res<_>>()?,
        };
        for v in values {
            let back = if v.get("event").is_some() {
                if v["event"] == "report" {
                    // Shortened in the docs; the report itself is checked above.
                    continue;
                }
                events += 1;
                let p: Progress = serde_json::from_value(v.clone()).map_err(|e| format!("{e}: {v}"))?;
                serde_json::to_value(p).map_err(|e| e.to_string())?
            } else {
                reports += 1;
                let r: Report = serde_json::from_value(v.clone()).map_err(|e| format!("{e}: {v}"))?;
                if r.exit_code != Report::new(r.targets.clone()).exit_code {
                    return Err(format!("exit_code {} does not follow from the targets", r.exit_code));
                }
                serde_json::to_value(r).map_err(|e| e.to_string())?
            };
            if back != v {
                return Err(format!("docs/preflight.md has\n{v}\nbut devnet would print\n{back}"));
            }
        }
    }
    if reports < 2 || events < 12 {
        return Err(format!(
            "{reports} reports and {events} events in docs/preflight.md; wanted both examples and the events"
        ));
    }
    Ok(())
}
