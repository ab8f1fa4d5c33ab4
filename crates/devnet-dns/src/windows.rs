//! Windows: Name Resolution Policy Table rules, one per domain, sending it to
//! devnet's stub. NRPT rules survive a crash, so the id of each rule devnet
//! adds is journaled and only those ids are ever removed. Pure: commands in,
//! parsed ids out; the Windows executor runs them.

use std::net::IpAddr;

/// The comment on every rule devnet adds, for people reading the table.
pub const COMMENT: &str = "devnet-managed";

fn powershell(script: String) -> Vec<String> {
    ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([script])
        .collect()
}

/// The command that adds the rule for `domain` and prints its id.
pub fn add_rule(domain: &str, stub: IpAddr) -> Vec<String> {
    powershell(format!(
        "(Add-DnsClientNrptRule -Namespace '.{domain}' -NameServers '{stub}' -Comment '{COMMENT}' -PassThru).Name"
    ))
}

/// The command that removes the rule with `id`.
pub fn remove_rule(id: &str) -> Vec<String> {
    powershell(format!("Remove-DnsClientNrptRule -Name '{id}' -Force"))
}

/// A rule id as NRPT prints it: a GUID in braces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected NRPT rule id {0:?} (expected a GUID in braces)")]
pub struct BadId(pub String);

/// Parses the id printed by [`add_rule`].
pub fn parse_rule_id(output: &str) -> Result<String, BadId> {
    let id = output.trim();
    let inner = id.strip_prefix('{').and_then(|s| s.strip_suffix('}')).ok_or_else(|| BadId(id.to_owned()))?;
    let groups: Vec<&str> = inner.split('-').collect();
    let shape = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups.iter().zip(shape).all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if ok { Ok(id.to_owned()) } else { Err(BadId(id.to_owned())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_commands() {
        let stub: IpAddr = "127.0.0.153".parse().expect("ip");
        assert_eq!(
            add_rule("cluster.local", stub).join(" "),
            "powershell.exe -NoProfile -NonInteractive -Command (Add-DnsClientNrptRule -Namespace '.cluster.local' -NameServers '127.0.0.153' -Comment 'devnet-managed' -PassThru).Name"
        );
        assert_eq!(
            remove_rule("{8B8F1A2C-0D3E-4F5A-9B6C-7D8E9F0A1B2C}").join(" "),
            "powershell.exe -NoProfile -NonInteractive -Command Remove-DnsClientNrptRule -Name '{8B8F1A2C-0D3E-4F5A-9B6C-7D8E9F0A1B2C}' -Force"
        );
    }

    #[test]
    fn only_guid_ids_are_accepted() {
        assert_eq!(
            parse_rule_id("{8B8F1A2C-0D3E-4F5A-9B6C-7D8E9F0A1B2C}\r\n"),
            Ok("{8B8F1A2C-0D3E-4F5A-9B6C-7D8E9F0A1B2C}".to_owned())
        );
        for bad in [
            "",
            "8B8F1A2C-0D3E-4F5A-9B6C-7D8E9F0A1B2C",
            "{x}",
            "{8B8F1A2C-0D3E-4F5A-9B6C-7D8E9F0A1B2}",
            "Access denied",
        ] {
            assert!(parse_rule_id(bad).is_err(), "{bad:?}");
        }
    }
}
