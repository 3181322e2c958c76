//! Errors of ClearML calls, each saying which call failed and how.

/// A ClearML call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClearmlError {
    /// The request did not get an HTTP answer (connection refused, timeout, TLS, …).
    #[error("ClearML {endpoint}: no answer")]
    Transport {
        /// The call, e.g. `tasks.get_all`.
        endpoint: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error in its envelope.
    #[error("ClearML {endpoint} failed with {result_code}/{result_subcode}: {result_msg}")]
    Api {
        /// The call.
        endpoint: String,
        /// `meta.result_code` (equal to the HTTP status).
        result_code: u16,
        /// `meta.result_subcode`.
        result_subcode: u32,
        /// `meta.result_msg`.
        result_msg: String,
    },
    /// The server answered with something that is not the API's envelope.
    #[error(
        "ClearML {endpoint} answered HTTP {status} with something that is not its API envelope: {detail}"
    )]
    Malformed {
        /// The call.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// What was wrong, with the start of the body.
        detail: String,
    },
    /// The client could not be built (TLS set-up).
    #[error("cannot set up the ClearML client: {0}")]
    Setup(#[source] reqwest::Error),
}

impl ClearmlError {
    /// Whether the server refused the call's credentials or token (401).
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            ClearmlError::Api {
                result_code: 401,
                ..
            }
        )
    }

    /// Whether the failure is the server's or the network's (5xx, garbage, no answer), as
    /// opposed to a refusal of this particular request.
    pub fn is_outage(&self) -> bool {
        match self {
            ClearmlError::Transport { .. } | ClearmlError::Malformed { .. } => true,
            ClearmlError::Api { result_code, .. } => *result_code >= 500,
            ClearmlError::Setup(_) => false,
        }
    }

    /// Whether the failure looks like a server or network trouble that passes (no answer,
    /// 5xx), rather than a wrong address: an answer that is not the API's envelope with a
    /// status below 500 comes from something that is not a ClearML API server.
    pub fn is_transient(&self) -> bool {
        match self {
            ClearmlError::Transport { .. } => true,
            ClearmlError::Malformed { status, .. } => *status >= 500,
            ClearmlError::Api { result_code, .. } => *result_code >= 500,
            ClearmlError::Setup(_) => false,
        }
    }

    /// `(result_code, result_subcode)` when the server answered with an error envelope.
    pub fn result(&self) -> Option<(u16, u32)> {
        match self {
            ClearmlError::Api {
                result_code,
                result_subcode,
                ..
            } => Some((*result_code, *result_subcode)),
            _ => None,
        }
    }
}
