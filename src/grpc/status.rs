//! How the gRPC front answers errors: one gRPC status code per cause, so a
//! client can tell a transaction it should forget (`NOT_FOUND`), one it may
//! retry (`UNAVAILABLE`, `DEADLINE_EXCEEDED`), and input it must fix
//! (`INVALID_ARGUMENT`).

use tonic::{Code, Status};

use crate::txn::{PeerFailure, TxnError};

/// The status a failed call of transaction `id` (the client's id) answers.
pub fn status_of(id: &str, error: &TxnError) -> Status {
    let code = match error {
        TxnError::UnknownTransaction { .. } => Code::NotFound,
        TxnError::Ended { .. } | TxnError::Committing { .. } => Code::FailedPrecondition,
        TxnError::Failed { .. } | TxnError::NoConsistentVersion { .. } => Code::Aborted,
        TxnError::ValueTooLarge { .. } => Code::InvalidArgument,
        TxnError::WriteSetTooLarge { .. }
        | TxnError::TooManyTransactions { .. }
        | TxnError::ReplyTooLarge { .. } => Code::ResourceExhausted,
        TxnError::Storage { .. } => Code::Unavailable,
        TxnError::CorruptRecord { .. } => Code::DataLoss,
        TxnError::Peer { failure, .. } => match failure {
            PeerFailure::UnknownTransaction | PeerFailure::NotMember => Code::NotFound,
            PeerFailure::Ended(_) => Code::FailedPrecondition,
            PeerFailure::Invalid(_) => Code::InvalidArgument,
            PeerFailure::Exhausted(_) => Code::ResourceExhausted,
            PeerFailure::Failed(_) => Code::Aborted,
            PeerFailure::Timeout(_) => Code::DeadlineExceeded,
            PeerFailure::VotedNo(_) | PeerFailure::ValueGone(_) => Code::Aborted,
            PeerFailure::Off
            | PeerFailure::Down
            | PeerFailure::Refused(_)
            | PeerFailure::Transport(_) => Code::Unavailable,
        },
    };
    Status::new(code, format!("transaction `{id}`: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_map_to_the_codes_clients_act_on() {
        let unknown = TxnError::UnknownTransaction { tid: "t".into() };
        assert_eq!(status_of("t@n", &unknown).code(), Code::NotFound);
        let forwarded_unknown = TxnError::Peer {
            tid: "t".into(),
            peer: "n".into(),
            failure: PeerFailure::UnknownTransaction,
        };
        assert_eq!(status_of("t@n", &forwarded_unknown).code(), Code::NotFound);
        let slow = TxnError::Peer {
            tid: "t".into(),
            peer: "n".into(),
            failure: PeerFailure::Timeout(std::time::Duration::from_secs(1)),
        };
        assert_eq!(status_of("t@n", &slow).code(), Code::DeadlineExceeded);
        let down = TxnError::Peer {
            tid: "t".into(),
            peer: "n".into(),
            failure: PeerFailure::Down,
        };
        assert_eq!(status_of("t@n", &down).code(), Code::Unavailable);
        let big = TxnError::ValueTooLarge {
            key: "k".into(),
            size: 2,
            limit: 1,
        };
        assert_eq!(status_of("t@n", &big).code(), Code::InvalidArgument);
        assert!(status_of("t@n", &big).message().contains("t@n"));
    }
}
