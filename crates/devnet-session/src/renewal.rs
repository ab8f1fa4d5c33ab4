//! Keeping the session's client certificate valid for as long as the
//! session runs: [`RenewalSchedule`] decides, sans IO, when the user's side
//! enrols again (ahead of expiry, or at once when the relay refused the
//! certificate: it expired, or the relay restarted since enrolment), and
//! [`Renewal`] enrols as the user, with the user's kube credentials, as
//! `devnet connect` does. devnetd holds no Kubernetes credentials, by
//! design, so it cannot do this itself; the keeper hands it the result.

use std::time::Duration;

use anyhow::Result;
use devnet_kube::Cluster;
use devnet_kube::credentials::ClientIdentity;

use crate::cluster::CredentialStore;

/// Renew when this little is left of the certificate's validity (or a
/// quarter of its lifetime, when that is shorter): a workday session
/// never sees it expire, and a relay that is briefly away has time to
/// come back before it matters.
pub const RENEW_BEFORE: Duration = Duration::from_secs(3600);

/// After a renewal, a refusal status still shown is the old link's: it is
/// believed again only after this long (the engine redials at once).
pub const REFUSAL_SETTLE: Duration = Duration::from_secs(20);

/// The first wait after a failed renewal (the relay pod may still be
/// starting); doubled after each further failure, up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_secs(3);
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// Why a renewal is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Less than the margin is left before the certificate expires.
    Expiring,
    /// The relay refused the certificate (expired, or unknown to it).
    Refused,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Enrol again and hand the new certificate to the engine.
    Renew(Reason),
    /// Nothing until this much later (or until the status changes).
    Wait(Duration),
}

/// When to renew, on a clock of seconds since the Unix epoch (the
/// certificate's own `not_after` is on it). Pure: the caller tells it the
/// time, whether the relay refuses the certificate, and what came of each
/// renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalSchedule {
    /// When the current certificate expires.
    not_after: u64,
    /// When to renew it ahead of expiry.
    renew_at: u64,
    /// Failed renewals in a row, and when the next try may start.
    failures: u32,
    retry_at: u64,
    /// When the last renewal succeeded.
    renewed_at: Option<u64>,
}

impl RenewalSchedule {
    /// For a certificate valid until `not_after`, as of `now`.
    pub fn new(not_after: u64, now: u64) -> Self {
        Self { not_after, renew_at: renew_at(not_after, now), failures: 0, retry_at: 0, renewed_at: None }
    }

    /// When the current certificate expires.
    pub fn not_after(&self) -> u64 {
        self.not_after
    }

    /// What to do at `now`; `refused` says whether the engine reports that
    /// the relay refused the certificate.
    pub fn next(&self, now: u64, refused: bool) -> Action {
        // A refusal right after a renewal is the old link's, not the new
        // certificate's: wait until the engine has had time to redial.
        let settled = self.renewed_at.map_or(0, |at| at + REFUSAL_SETTLE.as_secs());
        let reason = if refused && now >= settled {
            Some(Reason::Refused)
        } else if now >= self.renew_at {
            Some(Reason::Expiring)
        } else {
            None
        };
        match reason {
            Some(_) if now < self.retry_at => Action::Wait(Duration::from_secs(self.retry_at - now)),
            Some(reason) => Action::Renew(reason),
            None => {
                let mut until = self.renew_at;
                if refused {
                    until = until.min(settled);
                }
                Action::Wait(Duration::from_secs(until.saturating_sub(now).max(1)))
            }
        }
    }

    /// A renewal succeeded at `now`: the new certificate lasts until `not_after`.
    pub fn renewed(&mut self, not_after: u64, now: u64) {
        *self = Self { renewed_at: Some(now), ..Self::new(not_after, now) };
    }

    /// A renewal failed at `now`: the next try waits, longer each time.
    pub fn failed(&mut self, now: u64) {
        let backoff = RETRY_MIN.saturating_mul(1 << self.failures.min(16)).min(RETRY_MAX);
        self.failures += 1;
        self.retry_at = now + backoff.as_secs();
    }
}

/// `not_after` less the margin: [`RENEW_BEFORE`], or a quarter of what is
/// left at `now` when that is shorter.
fn renew_at(not_after: u64, now: u64) -> u64 {
    let left = not_after.saturating_sub(now);
    not_after - RENEW_BEFORE.as_secs().min(left / 4)
}

/// What the keeper needs to enrol again as the user: the cluster (with the
/// user's credentials, exec plugins refreshed as they expire), the relay's
/// namespace, and when the session's certificate expires.
#[derive(Debug, Clone)]
pub struct Renewal {
    pub cluster: Cluster,
    pub namespace: String,
    pub not_after: u64,
}

impl Renewal {
    /// Enrols anew (as `devnet connect` does, whatever the keyring holds:
    /// the relay refused or is about to refuse the certificate in use) and
    /// keeps the result in `keyring` for the next connect.
    pub async fn enrol(&self, keyring: &dyn CredentialStore) -> Result<ClientIdentity> {
        let ns = self.namespace.as_str();
        let state = devnet_kube::relay::state(&self.cluster, ns).await?;
        let user = devnet_kube::enrol::user_name(&self.cluster).await;
        let identity =
            devnet_kube::enrol::enrol(&self.cluster, ns, &user, state.ca_sha256.as_deref(), state.instance.as_deref())
                .await?;
        let account = devnet_kube::credentials::account(&self.cluster.server, ns);
        if let Err(e) = keyring.store(&account, &identity) {
            tracing::warn!(error = %format!("{e:#}"), "the renewed client certificate could not be kept in the keyring; the next connect enrols again");
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;
    /// An arbitrary start on the virtual clock.
    const T0: u64 = 1_800_000_000;

    fn wait(secs: u64) -> Action {
        Action::Wait(Duration::from_secs(secs))
    }

    #[test]
    fn an_eight_hour_certificate_is_renewed_one_hour_before_it_expires() {
        let s = RenewalSchedule::new(T0 + 8 * H, T0);
        assert_eq!(s.next(T0, false), wait(7 * H));
        assert_eq!(s.next(T0 + 7 * H - 1, false), wait(1));
        assert_eq!(s.next(T0 + 7 * H, false), Action::Renew(Reason::Expiring));
        // A laptop that slept past expiry renews as soon as it wakes.
        assert_eq!(s.next(T0 + 9 * H, false), Action::Renew(Reason::Expiring));
    }

    #[test]
    fn a_short_lived_certificate_is_renewed_with_a_quarter_of_its_life_left() {
        let s = RenewalSchedule::new(T0 + 60, T0);
        assert_eq!(s.next(T0, false), wait(45));
        assert_eq!(s.next(T0 + 45, false), Action::Renew(Reason::Expiring));
        let expired = RenewalSchedule::new(T0 - 5, T0);
        assert_eq!(expired.next(T0, false), Action::Renew(Reason::Expiring));
    }

    #[test]
    fn a_workday_session_renews_every_seven_hours_across_a_stepped_clock() {
        let mut s = RenewalSchedule::new(T0 + 8 * H, T0);
        let mut renewals = Vec::new();
        let mut now = T0;
        // Twenty hours, stepped a minute at a time.
        while now < T0 + 20 * H {
            if let Action::Renew(reason) = s.next(now, false) {
                renewals.push((now - T0, reason));
                s.renewed(now + 8 * H, now);
            }
            assert!(now < s.not_after(), "the certificate expired at {}", now - T0);
            now += 60;
        }
        assert_eq!(renewals, [(7 * H, Reason::Expiring), (14 * H, Reason::Expiring)]);
    }

    #[test]
    fn a_refusal_renews_at_once_but_not_again_while_the_engine_redials() {
        let mut s = RenewalSchedule::new(T0 + 8 * H, T0);
        // The relay restarted: the certificate is unknown to it.
        assert_eq!(s.next(T0 + 60, true), Action::Renew(Reason::Refused));
        s.renewed(T0 + 60 + 8 * H, T0 + 60);
        // The old link's refusal still shows for a moment: not renewed again.
        assert_eq!(s.next(T0 + 61, true), wait(REFUSAL_SETTLE.as_secs() - 1));
        assert_eq!(s.next(T0 + 61, false), wait(7 * H - 1));
        // Still refused once settled (the relay restarted again): renewed.
        let settled = T0 + 60 + REFUSAL_SETTLE.as_secs();
        assert_eq!(s.next(settled, true), Action::Renew(Reason::Refused));
    }

    #[test]
    fn failed_renewals_back_off_up_to_five_minutes_and_success_resets() {
        let mut s = RenewalSchedule::new(T0 + 8 * H, T0);
        let mut now = T0 + 100;
        let mut waits = Vec::new();
        for _ in 0..10 {
            assert_eq!(s.next(now, true), Action::Renew(Reason::Refused));
            s.failed(now);
            let Action::Wait(d) = s.next(now, true) else { panic!("no backoff after a failure") };
            waits.push(d.as_secs());
            now += d.as_secs();
        }
        assert_eq!(waits, [3, 6, 12, 24, 48, 96, 192, 300, 300, 300]);
        // Without a refusal, a failure's backoff does not bring renewal forward.
        assert_eq!(s.next(now - 1, false), wait(T0 + 7 * H - (now - 1)));
        s.renewed(now + 8 * H, now);
        s.failed(now + 7 * H);
        assert_eq!(s.next(now + 7 * H, false), wait(RETRY_MIN.as_secs()), "backoff starts again from the minimum");
    }
}
