//! Bearer tokens and RBAC for the stand-in, from a users file:
//!
//! ```yaml
//! users:
//! - name: dev
//!   token: dev-token
//!   rules:
//!   - {verbs: ["*"], resources: ["*"]}
//! - name: viewer
//!   token: viewer-token
//!   rules:
//!   - {verbs: [get, list, watch], resources: ["*"]}
//!   - {verbs: [create], resources: [pods/portforward], namespaces: [devnet]}
//! - name: old
//!   token: expired-token
//!   expired: true
//! ```
//!
//! Rules are RBAC's, flattened: verbs, resources (with `pods/portforward`
//! style subresources), API groups (default any), namespaces (default any),
//! resourceNames (default any; as in RBAC, a rule with names matches only
//! requests for one of them, so never a list or a create).

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Body, Target, json_response};

#[derive(Debug, Deserialize)]
pub struct Users {
    users: Vec<User>,
}

#[derive(Debug, Deserialize)]
pub struct User {
    pub name: String,
    token: String,
    #[serde(default)]
    expired: bool,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    verbs: Vec<String>,
    resources: Vec<String>,
    #[serde(default, rename = "apiGroups")]
    api_groups: Vec<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "resourceNames")]
    resource_names: Vec<String>,
}

#[derive(Debug)]
pub enum Decision {
    Allow,
    Deny(String),
}

impl Users {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The user a token belongs to; expired tokens authenticate no one,
    /// as with the real server (a bare 401 "Unauthorized").
    pub fn authenticate(&self, token: &str) -> Option<&User> {
        self.users.iter().find(|u| u.token == token && !u.expired)
    }
}

impl User {
    fn allows(&self, verb: &str, group: &str, resource: &str, namespace: Option<&str>, name: Option<&str>) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        self.rules.iter().any(|r| {
            any(&r.verbs, verb)
                && any(&r.resources, resource)
                && (r.api_groups.is_empty() || any(&r.api_groups, group))
                && (r.namespaces.is_empty() || namespace.is_some_and(|ns| any(&r.namespaces, ns)))
                && (r.resource_names.is_empty() || name.is_some_and(|n| r.resource_names.iter().any(|x| x == n)))
        })
    }

    /// Authorizes a request, with the real server's wording on denial.
    pub fn authorize(&self, verb: &str, target: &Target, resource: &str, namespaced: bool) -> Decision {
        let ns = if namespaced { target.namespace.as_deref() } else { None };
        // A create names no existing object (RBAC ignores the name then).
        let name = if verb == "create" && target.subresource.is_none() { None } else { target.name.as_deref() };
        if self.allows(verb, &target.group, resource, ns, name) {
            return Decision::Allow;
        }
        let what = match &target.name {
            Some(name) if verb != "create" || target.subresource.is_some() => {
                format!("{} \"{name}\"", target.qualified())
            }
            _ => target.qualified(),
        };
        let scope = match ns {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_owned(),
        };
        Decision::Deny(format!(
            "{what} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
            self.name, target.group
        ))
    }
}

/// `SelfSubjectAccessReview`: may I? (what `kubectl auth can-i` asks).
pub fn self_subject_access_review(user: &User, mut review: Value) -> hyper::Response<Body> {
    let attrs = &review["spec"]["resourceAttributes"];
    let s = |k: &str| attrs[k].as_str().unwrap_or_default().to_owned();
    let resource = match s("subresource").as_str() {
        "" => s("resource"),
        sub => format!("{}/{sub}", s("resource")),
    };
    let ns = s("namespace");
    let name = s("name");
    let allowed = user.allows(
        &s("verb"),
        &s("group"),
        &resource,
        (!ns.is_empty()).then_some(ns.as_str()),
        (!name.is_empty()).then_some(name.as_str()),
    );
    review["status"] = json!({"allowed": allowed});
    json_response(hyper::StatusCode::CREATED, &review)
}
