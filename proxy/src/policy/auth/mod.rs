//! Authentication (placeholder until the methods land): every route with an `authentication`
//! block fails closed.

use portico_api::policy::Authentication;

/// What outlives snapshots.
#[derive(Debug, Default)]
pub struct AuthEnv {}

/// Why an authentication block cannot be enforced.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthConfigError(&'static str);

/// The authentication layer.
#[derive(Debug, Clone)]
pub struct AuthLayer;

impl AuthLayer {
    pub fn new(_spec: &Authentication, _env: &AuthEnv) -> Result<Self, AuthConfigError> {
        Err(AuthConfigError(
            "authentication is not available in this build",
        ))
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = S;
    fn layer(&self, inner: S) -> S {
        inner
    }
}

/// Who the request authenticated as.
#[derive(Debug, Clone)]
pub struct Identity {
    pub client_id: Option<String>,
}

impl Identity {
    /// A claim of the JWT, as text.
    pub fn claim(&self, _name: &str) -> Option<String> {
        None
    }
}
