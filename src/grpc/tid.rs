//! Transaction ids as the gRPC front hands them out: `<engine tid>@<node>`.
//!
//! Requests of one transaction may reach any node behind a load balancer,
//! so the id a client holds names the node that started the transaction
//! and keeps its state; any other node forwards the call there. To a client
//! the id is an opaque string, as AFT's ids are.

use crate::txn::keys::valid_tid;

/// A transaction id of the gRPC front, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedTid {
    /// The engine's id of the transaction on its node.
    pub tid: String,
    /// The node that holds it (its node address).
    pub node: String,
}

impl RoutedTid {
    /// The id a client gets for transaction `tid` started on `node`.
    pub fn encode(tid: &str, node: &str) -> String {
        format!("{tid}@{node}")
    }

    /// Whether `node` can be named in an id (a node address: letters,
    /// digits, `.:-[]`, at most 253 characters).
    pub fn valid_node(node: &str) -> bool {
        !node.is_empty()
            && node.len() <= 253
            && node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
    }

    /// Splits a client's id; `None` if it is not one this front handed out.
    pub fn parse(id: &str) -> Option<RoutedTid> {
        let (tid, node) = id.split_once('@')?;
        (valid_tid(tid) && Self::valid_node(node)).then(|| RoutedTid {
            tid: tid.to_string(),
            node: node.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_foreign_ids_are_refused() {
        let id = RoutedTid::encode("0190f3a2-7b1c-7def-8000-0123456789ab", "10.0.0.5");
        assert_eq!(
            RoutedTid::parse(&id),
            Some(RoutedTid {
                tid: "0190f3a2-7b1c-7def-8000-0123456789ab".into(),
                node: "10.0.0.5".into()
            })
        );
        let v6 = RoutedTid::encode("t1", "fd00::5");
        assert_eq!(
            RoutedTid::parse(&v6).map(|r| r.node),
            Some("fd00::5".into())
        );
        for bad in [
            "",
            "t1",
            "t1@",
            "@10.0.0.5",
            "t 1@10.0.0.5",
            "t1@10.0.0.5/x",
            "t1@a@b",
        ] {
            assert_eq!(RoutedTid::parse(bad), None, "{bad}");
        }
    }
}
