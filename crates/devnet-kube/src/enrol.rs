//! Enrolment: a per-user client certificate from the relay, asked for over
//! the API server's port-forward to the relay pod's loopback
//! ([`ENROL_PORT`]). The API server authenticates the user and RBAC
//! (`create pods/portforward` in the relay's namespace) authorises them;
//! the key pair is made here and the private key never leaves this machine.
//! The reply carries the relay CA, so no Secret is read at all.

use std::time::SystemTime;

pub use devnet_tls::identity::check_user;
use devnet_tls::identity::{ClientKey, EnrolReply, MAX_LINE, Refusal};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::cluster::{Cluster, KubeError};
use crate::credentials::ClientIdentity;
use crate::relay::{ENROL_PORT, USER_ROLE, ca_fingerprint, rule_text};

/// Why enrolment failed, worded with the fix.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error(
        "the relay refused enrolment for user {user}: revoked; ask a cluster admin to run `devnet relay revoke --undo --user {user}{ns_flag}` if this is a mistake"
    )]
    Revoked { user: String, ns_flag: String },
    #[error("the relay refused enrolment for user {user}: {message}")]
    Refused { user: String, message: String },
    #[error(
        "cannot enrol with the relay in namespace {ns} through the API server's port-forward: {error}; enrolling needs {rule} (the Role {USER_ROLE} grants it): ask a cluster admin"
    )]
    PortForward { ns: String, error: String, rule: String },
    #[error(
        "the relay in namespace {1} gave no enrolment answer ({0}): is it devnet {version} or newer? run `devnet relay install` to upgrade it",
        version = crate::relay::VERSION
    )]
    NoAnswer(String, String),
    #[error(
        "the relay CA handed out at enrolment ({got}) is not the one its Deployment names ({want}): the pod that answered is not the relay `devnet relay install` deployed; ask a cluster admin to check namespace {ns}"
    )]
    CaMismatch { got: String, want: String, ns: String },
    #[error("{0}")]
    Kube(#[from] KubeError),
    #[error("generating a key pair: {0}")]
    Key(String),
}

/// Who the API server says the user is (SelfSubjectReview), else the
/// kubeconfig's user name for the context.
pub async fn user_name(cluster: &Cluster) -> String {
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    match cluster.post("/apis/authentication.k8s.io/v1/selfsubjectreviews", &review).await {
        Ok(answer) => {
            if let Some(name) = answer["status"]["userInfo"]["username"].as_str().filter(|n| !n.is_empty()) {
                return sanitise(name);
            }
        }
        Err(e) => tracing::debug!(error = %e, "no SelfSubjectReview; naming the user after the kubeconfig"),
    }
    sanitise(cluster.kubeconfig_user.as_deref().unwrap_or(&cluster.context))
}

/// A name as the relay takes it: spaces and control characters become `_`.
fn sanitise(name: &str) -> String {
    let clean: String =
        name.chars().map(|c| if c.is_control() || c.is_whitespace() { '_' } else { c }).take(256).collect();
    if clean.is_empty() { "unknown".into() } else { clean }
}

/// Enrols `user` with the relay in namespace `ns`. `ca_sha256` is the
/// fingerprint the relay's Deployment carries, when it carries one: the CA
/// the relay hands out must be that one.
pub async fn enrol(
    cluster: &Cluster,
    ns: &str,
    user: &str,
    ca_sha256: Option<&str>,
    relay_instance: Option<&str>,
) -> Result<ClientIdentity, EnrolError> {
    let key = ClientKey::generate().map_err(|e| EnrolError::Key(e.to_string()))?;
    let (stream, _) =
        crate::portforward::open_port(cluster, ns, ENROL_PORT).await.map_err(|e| EnrolError::PortForward {
            ns: ns.to_owned(),
            error: e.to_string(),
            rule: rule_text(&("create", "", "pods/portforward", Some(ns), None)),
        })?;
    let no_answer = |why: String| EnrolError::NoAnswer(why, ns.to_owned());
    let (rd, mut wr) = tokio::io::split(stream);
    let mut line = serde_json::to_string(&key.request(user)).map_err(|e| no_answer(e.to_string()))?;
    line.push('\n');
    wr.write_all(line.as_bytes()).await.map_err(|e| no_answer(e.to_string()))?;
    let mut reply = String::new();
    let mut reader = BufReader::new(rd).take(MAX_LINE as u64);
    let read = reader.read_line(&mut reply);
    match tokio::time::timeout(std::time::Duration::from_secs(15), read).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(Ok(_)) => return Err(no_answer("it closed the connection".into())),
        Ok(Err(e)) => return Err(no_answer(e.to_string())),
        Err(_) => return Err(no_answer("no reply within 15 s".into())),
    }
    let _ = wr.shutdown().await;
    let reply: EnrolReply = serde_json::from_str(reply.trim()).map_err(|e| no_answer(format!("not a reply: {e}")))?;
    match reply {
        EnrolReply::Issued { cert_pem, relay_ca_pem, serial, not_after } => {
            if let Some(want) = ca_sha256 {
                let got = ca_fingerprint(&relay_ca_pem);
                if got != want {
                    return Err(EnrolError::CaMismatch { got, want: want.to_owned(), ns: ns.to_owned() });
                }
            }
            tracing::info!(%user, %serial, not_after, "enrolled with the relay");
            Ok(ClientIdentity {
                user: user.to_owned(),
                serial,
                not_after,
                cert_pem,
                key_pem: key.private_pem(),
                relay_ca_pem,
                relay_instance: relay_instance.unwrap_or_default().to_owned(),
            })
        }
        EnrolReply::Refused { reason: Refusal::Revoked, .. } => Err(EnrolError::Revoked {
            user: user.to_owned(),
            ns_flag: if ns == crate::relay::DEFAULT_NAMESPACE {
                String::new()
            } else {
                format!(" --relay-namespace {ns}")
            },
        }),
        EnrolReply::Refused { message, .. } => Err(EnrolError::Refused { user: user.to_owned(), message }),
    }
}

/// Whether a kept identity may be used without enrolling again: the relay
/// process that issued it still runs (`relay_instance`: a restart forgets
/// its client CA), it belongs to the relay installed now (when the
/// Deployment names its CA), and it has at least `margin` left.
pub fn still_good(
    identity: &ClientIdentity,
    ca_sha256: Option<&str>,
    relay_instance: Option<&str>,
    now: SystemTime,
    margin: std::time::Duration,
) -> bool {
    identity.seconds_left(now) >= margin.as_secs()
        && relay_instance.is_some_and(|i| i == identity.relay_instance)
        && ca_sha256.is_none_or(|fp| fp == ca_fingerprint(&identity.relay_ca_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_identity_is_used_while_it_has_an_hour_left_and_belongs_to_this_relay() {
        let now = SystemTime::now();
        let secs = devnet_tls::identity::unix_secs(now);
        let id = |left: u64| ClientIdentity {
            user: "alice".into(),
            serial: "01".into(),
            not_after: secs + left,
            cert_pem: String::new(),
            key_pem: String::new(),
            relay_ca_pem: "CA".into(),
            relay_instance: "pod-uid/06:00".into(),
        };
        let hour = std::time::Duration::from_secs(3600);
        let same = Some("pod-uid/06:00");
        assert!(still_good(&id(7 * 3600), None, same, now, hour));
        assert!(still_good(&id(7 * 3600), Some(&ca_fingerprint("CA")), same, now, hour));
        assert!(!still_good(&id(7 * 3600), Some(&ca_fingerprint("another CA")), same, now, hour), "another install");
        assert!(!still_good(&id(1800), None, same, now, hour), "less than an hour left");
        assert!(!still_good(&id(7 * 3600), None, Some("pod-uid/07:00"), now, hour), "the relay restarted");
        assert!(!still_good(&id(7 * 3600), None, None, now, hour), "the relay's process is unknown");
        assert_eq!(sanitise("system:serviceaccount:team a:dev"), "system:serviceaccount:team_a:dev");
    }

    #[test]
    fn a_revoked_user_is_told_who_can_undo_it() {
        let e = EnrolError::Revoked { user: "alice".into(), ns_flag: String::new() };
        assert_eq!(
            e.to_string(),
            "the relay refused enrolment for user alice: revoked; ask a cluster admin to run `devnet relay revoke --undo --user alice` if this is a mistake"
        );
    }
}
