//! Rewriting queries for the cluster DNS and its answers back.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::BinDecodable;

use crate::{NamePolicy, Route};

/// What to do with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handling {
    /// Send `packet` to the cluster DNS; pass its answer to [`restore`]
    /// with `original` and `asked`.
    Cluster { packet: Vec<u8>, original: Name, asked: Name },
    /// Send the query unchanged to the usual resolvers.
    Upstream,
    /// Answer at once with this packet (a malformed query gets FORMERR).
    Answer(Vec<u8>),
}

/// A packet that cannot be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a DNS message: {0}")]
pub struct RewriteError(String);

/// Decides how to handle a query packet.
pub fn query(packet: &[u8], policy: &NamePolicy) -> Result<Handling, RewriteError> {
    let mut msg = match Message::from_bytes(packet) {
        Ok(m) => m,
        Err(e) => {
            // Answer FORMERR when at least the id can be read.
            if packet.len() >= 12 {
                let mut resp = Message::new(
                    u16::from_be_bytes([packet[0], packet[1]]),
                    MessageType::Response,
                    hickory_proto::op::OpCode::Query,
                );
                resp.metadata.response_code = ResponseCode::FormErr;
                return resp.to_vec().map(Handling::Answer).map_err(|e| RewriteError(e.to_string()));
            }
            return Err(RewriteError(e.to_string()));
        }
    };
    if msg.metadata.message_type != MessageType::Query || msg.queries.len() != 1 {
        return Ok(Handling::Upstream);
    }
    let original = msg.queries[0].name().clone();
    match policy.route(&original) {
        Route::Upstream => Ok(Handling::Upstream),
        Route::Cluster(asked) => {
            msg.queries[0].set_name(asked.clone());
            let packet = msg.to_vec().map_err(|e| RewriteError(e.to_string()))?;
            Ok(Handling::Cluster { packet, original, asked })
        }
    }
}

/// Restores the client's name in the cluster DNS's answer, so a query for
/// `web.demo` gets records for `web.demo`, not for the longer name asked.
pub fn restore(answer: &[u8], original: &Name, asked: &Name) -> Result<Vec<u8>, RewriteError> {
    let mut msg = Message::from_bytes(answer).map_err(|e| RewriteError(e.to_string()))?;
    if original == asked {
        return Ok(answer.to_vec());
    }
    for q in &mut msg.queries {
        if q.name() == asked {
            q.set_name(original.clone());
        }
    }
    for r in &mut msg.answers {
        if r.name == *asked {
            r.name = original.clone();
        }
    }
    msg.to_vec().map_err(|e| RewriteError(e.to_string()))
}

/// What an office DNS server made of a cluster name (for doctor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// It answered with records: it forwards the cluster domain.
    Records,
    /// It answered with this response code and no records.
    Code(String),
}

/// An A query for `name` (doctor's probe of the office DNS).
pub fn probe_query(name: &str, id: u16) -> Result<Vec<u8>, RewriteError> {
    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::RecordType;
    let name = Name::from_ascii(name).map_err(|e| RewriteError(format!("{name:?} is not a DNS name: {e}")))?;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.queries.push(Query::query(name, RecordType::A));
    msg.to_vec().map_err(|e| RewriteError(e.to_string()))
}

/// Reads the answer to [`probe_query`].
pub fn probe_answer(answer: &[u8], id: u16) -> Result<ProbeAnswer, RewriteError> {
    let msg = Message::from_bytes(answer).map_err(|e| RewriteError(e.to_string()))?;
    if msg.metadata.id != id {
        return Err(RewriteError(format!("answer id {} is not the query's {id}", msg.metadata.id)));
    }
    if msg.metadata.response_code == ResponseCode::NoError && !msg.answers.is_empty() {
        return Ok(ProbeAnswer::Records);
    }
    Ok(ProbeAnswer::Code(msg.metadata.response_code.to_string()))
}

/// Whether a name exists, as a resolver said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameExists {
    /// It answered NOERROR: records, or none of the type asked (the name is there).
    Yes,
    /// It answered NXDOMAIN.
    No,
    /// Anything else: refused, a server failure, garbage, another query's answer.
    Unknown,
}

/// An SOA query for the single label `label` (`acme.`): does the laptop's
/// own resolver hold names under it? Asked before a namespace becomes a
/// routing domain.
pub fn existence_query(label: &str, id: u16) -> Result<Vec<u8>, RewriteError> {
    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::RecordType;
    let name = Name::from_ascii(format!("{label}."))
        .map_err(|e| RewriteError(format!("{label:?} is not a DNS label: {e}")))?;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.queries.push(Query::query(name, RecordType::SOA));
    msg.to_vec().map_err(|e| RewriteError(e.to_string()))
}

/// Reads the answer to [`existence_query`] `id`.
pub fn existence_answer(answer: &[u8], id: u16) -> NameExists {
    match Message::from_bytes(answer) {
        Ok(msg) if msg.metadata.id == id && msg.metadata.message_type == MessageType::Response => {
            match msg.metadata.response_code {
                ResponseCode::NoError => NameExists::Yes,
                ResponseCode::NXDomain => NameExists::No,
                _ => NameExists::Unknown,
            }
        }
        _ => NameExists::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record, RecordType};

    use super::*;

    fn policy() -> NamePolicy {
        NamePolicy::new("cluster.local", &["demo".into()], None).expect("policy")
    }

    fn query_for(name: &str) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, hickory_proto::op::OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), RecordType::A));
        m.to_vec().expect("encode")
    }

    #[test]
    fn short_names_are_asked_in_full_and_answered_as_asked() {
        let Handling::Cluster { packet, original, asked } = query(&query_for("web.demo."), &policy()).expect("ok")
        else {
            panic!("should go to the cluster")
        };
        let sent = Message::from_bytes(&packet).expect("decode");
        assert_eq!(sent.queries[0].name().to_ascii(), "web.demo.svc.cluster.local.");
        assert_eq!(sent.metadata.id, 0x1234);

        // The cluster answers for the long name...
        let mut answer = sent.clone();
        answer.metadata.message_type = MessageType::Response;
        answer.add_answer(Record::from_rdata(asked.clone(), 5, RData::A(A(Ipv4Addr::new(10, 96, 0, 20)))));
        let restored = restore(&answer.to_vec().expect("encode"), &original, &asked).expect("restore");
        // ...and the client sees its own name.
        let got = Message::from_bytes(&restored).expect("decode");
        assert_eq!(got.queries[0].name().to_ascii(), "web.demo.");
        assert_eq!(got.answers[0].name.to_ascii(), "web.demo.");
        assert_eq!(got.answers[0].data, RData::A(A(Ipv4Addr::new(10, 96, 0, 20))));
    }

    #[test]
    fn public_names_go_upstream_and_garbage_gets_formerr() {
        assert_eq!(query(&query_for("www.example.com."), &policy()).expect("ok"), Handling::Upstream);
        let mut junk = query_for("web.demo.");
        junk.truncate(14);
        let Handling::Answer(resp) = query(&junk, &policy()).expect("answered") else { panic!("should answer") };
        assert_eq!(Message::from_bytes(&resp).expect("decode").metadata.response_code, ResponseCode::FormErr);
        assert!(query(&[1, 2], &policy()).is_err());
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    #[test]
    fn probe_round_trip_reads_codes_and_records() {
        use hickory_proto::rr::{RData, Record, rdata::A};
        let name = Name::from_ascii("kube-dns.kube-system.svc.cluster.local.").expect("name");
        let q = probe_query("kube-dns.kube-system.svc.cluster.local.", 7).expect("query");
        let mut nx = Message::from_bytes(&q).expect("query");
        nx.metadata.message_type = MessageType::Response;
        nx.metadata.response_code = ResponseCode::NXDomain;
        let code = probe_answer(&nx.to_vec().expect("bytes"), 7).expect("answer");
        assert!(matches!(code, ProbeAnswer::Code(ref c) if c.contains("Non-Existent")), "{code:?}");
        let mut ok = Message::from_bytes(&q).expect("query");
        ok.metadata.message_type = MessageType::Response;
        ok.answers.push(Record::from_rdata(name, 5, RData::A(A::new(10, 96, 0, 10))));
        assert_eq!(probe_answer(&ok.to_vec().expect("bytes"), 7), Ok(ProbeAnswer::Records));
        assert!(probe_answer(&ok.to_vec().expect("bytes"), 8).is_err(), "a stray answer is not taken");
    }

    #[test]
    fn existence_answers_are_read_strictly() {
        let q = existence_query("acme", 7).expect("query");
        let asked = Message::from_bytes(&q).expect("decode");
        assert_eq!(asked.queries[0].name().to_ascii(), "acme.");
        assert_eq!(asked.queries[0].query_type(), hickory_proto::rr::RecordType::SOA);
        let reply = |id: u16, code: ResponseCode| {
            let mut m = Message::new(id, MessageType::Response, hickory_proto::op::OpCode::Query);
            m.metadata.response_code = code;
            m.to_vec().expect("encode")
        };
        assert_eq!(existence_answer(&reply(7, ResponseCode::NoError), 7), NameExists::Yes);
        assert_eq!(existence_answer(&reply(7, ResponseCode::NXDomain), 7), NameExists::No);
        assert_eq!(existence_answer(&reply(7, ResponseCode::Refused), 7), NameExists::Unknown);
        assert_eq!(existence_answer(&reply(7, ResponseCode::ServFail), 7), NameExists::Unknown);
        assert_eq!(existence_answer(&reply(8, ResponseCode::NoError), 7), NameExists::Unknown, "another query's");
        assert_eq!(existence_answer(&q, 7), NameExists::Unknown, "a query is not an answer");
        assert_eq!(existence_answer(b"\x00garbage", 7), NameExists::Unknown);
    }
}
