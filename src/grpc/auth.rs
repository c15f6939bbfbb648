//! Who may call the gRPC front: a bearer token on every call (compared in
//! constant time), when one is configured. Mutual TLS, the other choice,
//! is enforced by the TLS layer before a call gets here.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::metrics::Metrics;

/// Checks `authorization: Bearer <token>` on every call.
#[derive(Clone)]
pub struct BearerToken {
    expected: Option<Arc<[u8]>>,
    metrics: Metrics,
}

impl BearerToken {
    /// Requires `token` on every call; `None` lets every call through.
    pub fn new(token: Option<&str>, metrics: Metrics) -> Self {
        BearerToken {
            expected: token.map(|t| Arc::from(t.as_bytes())),
            metrics,
        }
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::as_bytes);
        match given {
            Some(token) if bool::from(token.ct_eq(expected)) => Ok(request),
            Some(_) => {
                self.metrics.reject("grpc_bad_token");
                Err(Status::unauthenticated(
                    "the bearer token is not this sidecar's",
                ))
            }
            None => {
                self.metrics.reject("grpc_no_token");
                Err(Status::unauthenticated(
                    "this sidecar requires `authorization: Bearer <token>`",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(v) = value {
            request
                .metadata_mut()
                .insert("authorization", v.parse().expect("ascii header"));
        }
        request
    }

    #[test]
    fn only_the_configured_token_passes() {
        let mut check = BearerToken::new(Some("s3cret"), Metrics::new());
        assert!(check.call(with_header(Some("Bearer s3cret"))).is_ok());
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("s3cret"),
        ] {
            let err = check.call(with_header(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        let mut open = BearerToken::new(None, Metrics::new());
        assert!(open.call(with_header(None)).is_ok());
    }
}
