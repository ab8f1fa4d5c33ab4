//! The resolv.conf backend (Linux without systemd-resolved): devnet's stub
//! becomes the only nameserver and forwards everything that is not a cluster
//! name to the nameservers the file had. The original is kept byte for byte
//! and restored on disconnect; the first line marks the file as ours, so a
//! file someone else rewrote meanwhile is never overwritten.

use std::net::IpAddr;

/// The first line of a resolv.conf devnet wrote.
pub const MARKER: &str = "# devnet-managed:";

/// The nameservers a resolv.conf lists, in order.
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        .filter_map(|w| w.split('%').next().and_then(|a| a.parse().ok()))
        .collect()
}

/// Whether devnet wrote this file.
pub fn is_managed(text: &str) -> bool {
    text.starts_with(MARKER)
}

/// The file devnet writes: the marker, the stub as the only nameserver, and
/// every other line of the original (search, options) unchanged.
pub fn managed(original: &str, stub: IpAddr) -> String {
    let mut out = format!(
        "{MARKER} cluster names go to devnet's resolver at {stub}, which forwards the rest to the nameservers below.\n\
         # The original file is restored when devnet disconnects (or by `devnet cleanup`).\n\
         nameserver {stub}\n"
    );
    for line in original.lines() {
        if line.split_whitespace().next() == Some("nameserver") {
            out += &format!("# upstream: {line}\n");
        } else {
            out += line;
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &str =
        "# from DHCP\nsearch office.example\nnameserver 192.168.10.1\nnameserver fe80::1%eth0\noptions timeout:1\n";

    #[test]
    fn the_stub_replaces_the_nameservers_and_the_rest_stays() {
        let stub: IpAddr = "127.0.0.153".parse().expect("ip");
        let text = managed(ORIGINAL, stub);
        assert!(is_managed(&text));
        assert_eq!(nameservers(&text), vec![stub]);
        assert!(text.contains("search office.example\n") && text.contains("options timeout:1\n"));
        assert_eq!(
            nameservers(ORIGINAL),
            vec!["192.168.10.1".parse::<IpAddr>().expect("ip"), "fe80::1".parse().expect("ip")]
        );
        assert!(!is_managed(ORIGINAL));
    }
}
