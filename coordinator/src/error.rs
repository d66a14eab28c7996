//! Coordinator errors and the one function that chooses their gRPC codes.

use corral_core::bus::BusError;
use corral_core::ids::InvalidId;
use corral_core::protocol::{AgentError, AgentErrorKind, DecodeError};
use corral_core::state::InvalidTransition;
use corral_core::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is missing, malformed or out of range; names the field.
    #[error("{field}: {why}")]
    InvalidField { field: String, why: String },
    #[error("sandbox {0} not found")]
    SandboxNotFound(String),
    /// A job or batch (named in the message) that does not exist for the caller's tenant.
    #[error("{0} not found")]
    NotFound(String),
    #[error("no sandbox named {0:?}")]
    NameNotFound(String),
    #[error("a live sandbox named {0:?} already exists")]
    NameTaken(String),
    /// The object exists but is in the wrong state for the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No node can take the sandbox right now.
    #[error("{0}")]
    NoCapacity(String),
    /// A request over a configured size limit; the message names the limit and the way out.
    #[error("{0}")]
    OverLimit(String),
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    #[error("the agent reported: {0}")]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Object storage (codebase contents and file lists).
    #[error(transparent)]
    Blob(#[from] corral_blob::BlobError),
    #[error("{0}")]
    Internal(String),
    /// A state write lost a compare-and-swap race too many times.
    #[error("{0} changed concurrently; retry")]
    Conflict(String),
    #[error("{0}")]
    Timeout(String),
}

impl ApiError {
    pub fn field(field: impl Into<String>, why: impl Into<String>) -> Self {
        Self::InvalidField { field: field.into(), why: why.into() }
    }

    pub fn invalid_id(field: &str, e: InvalidId) -> Self {
        Self::field(field, e.to_string())
    }

    /// The gRPC code for this error. No other place in the coordinator chooses a code.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::InvalidField { .. } => Code::InvalidArgument,
            Self::SandboxNotFound(_) | Self::NameNotFound(_) | Self::NotFound(_) => Code::NotFound,
            Self::NameTaken(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) | Self::Transition(_) => Code::FailedPrecondition,
            Self::NoCapacity(_) | Self::OverLimit(_) => Code::ResourceExhausted,
            Self::Agent(e) => match e.kind {
                AgentErrorKind::NotFound => Code::NotFound,
                AgentErrorKind::InvalidArgument => Code::InvalidArgument,
                AgentErrorKind::PermissionDenied => Code::PermissionDenied,
                AgentErrorKind::FailedPrecondition => Code::FailedPrecondition,
                AgentErrorKind::ResourceExhausted => Code::ResourceExhausted,
                AgentErrorKind::Internal => Code::Internal,
            },
            Self::Store(StoreError::Corrupt { .. } | StoreError::InvalidTxn(_)) => Code::Internal,
            Self::Store(_) => Code::Unavailable,
            Self::Bus(BusError::TooLarge { .. }) => Code::InvalidArgument,
            Self::Bus(_) => Code::Unavailable,
            Self::Decode(_) | Self::Internal(_) => Code::Internal,
            Self::Blob(e) => match e {
                corral_blob::BlobError::NotFound { .. } | corral_blob::BlobError::Corrupt { .. } => Code::DataLoss,
                corral_blob::BlobError::TooLarge { .. } => Code::ResourceExhausted,
                corral_blob::BlobError::Unavailable { .. } => Code::Unavailable,
                corral_blob::BlobError::Invalid(_) => Code::Internal,
            },
            Self::Conflict(_) => Code::Aborted,
            Self::Timeout(_) => Code::Unavailable,
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let code = e.code();
        if matches!(code, tonic::Code::Internal | tonic::Code::Unavailable | tonic::Code::DataLoss) {
            tracing::warn!(error = %e, ?code, "request failed");
        }
        tonic::Status::new(code, e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A count with thousands separators, as error messages show limits (`1,200,000`).
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_show_thousands_separators() {
        let cases = [(0, "0"), (999, "999"), (1000, "1,000"), (100_000, "100,000"), (1_200_000, "1,200,000")];
        for (n, text) in cases {
            assert_eq!(super::thousands(n), text);
        }
    }
}
