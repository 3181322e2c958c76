//! ClearML's answer to "who is this, and may they see that task" (CONTRACT §7), with the
//! decisions cached and concurrent questions about one token asked once.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway_clearml::{Claims, ClearmlClient, ClearmlError};
use gateway_proxy::{Authorizer, Denial, Identity, Verdict};

use crate::cache::{DecisionCache, TokenHasher};
use crate::flight::Flights;
use crate::local;

/// How long decisions are kept, and how many.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// A yes is kept this long (never past the token's expiry).
    pub ttl: Duration,
    /// A no is kept this long.
    pub denial_ttl: Duration,
    /// Most decisions kept, per kind (identities, task visibility).
    pub capacity: usize,
    /// The server's token secret (`AUTH_BASE64_JWKS_KEY`, decoded): check signatures and
    /// expiry locally instead of asking `users.get_current_user`.
    pub local_secret: Option<Vec<u8>>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            denial_ttl: Duration::from_secs(5),
            capacity: 100_000,
            local_secret: None,
        }
    }
}

type Decision<T> = Result<T, Denial>;

/// Decides with the ClearML server.
pub struct ClearmlAuthorizer {
    inner: Arc<Inner>,
}

struct Inner {
    client: Arc<ClearmlClient>,
    settings: AuthSettings,
    hasher: TokenHasher,
    identities: DecisionCache<Decision<Identity>>,
    visibility: DecisionCache<Decision<()>>,
    identity_flights: Flights<Decision<Identity>>,
    visibility_flights: Flights<Decision<()>>,
}

impl ClearmlAuthorizer {
    /// An authorizer that asks the server behind `client`.
    pub fn new(client: Arc<ClearmlClient>, settings: AuthSettings) -> Self {
        let capacity = settings.capacity;
        Self {
            inner: Arc::new(Inner {
                client,
                settings,
                hasher: TokenHasher::new(),
                identities: DecisionCache::new(capacity),
                visibility: DecisionCache::new(capacity),
                identity_flights: Flights::new(),
                visibility_flights: Flights::new(),
            }),
        }
    }
}

impl Authorizer for ClearmlAuthorizer {
    fn identify(&self, token: &str) -> Verdict<Identity> {
        let inner = &self.inner;
        let key = inner.hasher.token(token);
        if let Some(decided) = inner.identities.get(key) {
            return Verdict::Ready(decided);
        }
        let claims = match local_checks(token) {
            Ok(claims) => claims,
            Err(denial) => return Verdict::Ready(Err(denial)),
        };
        if let Some(secret) = &inner.settings.local_secret {
            let decided = if local::signature_valid(token, secret) {
                identity_from_claims(&claims, key)
            } else {
                Err(Denial::Unauthenticated("token signature invalid"))
            };
            inner.remember_identity(key, &decided, claims.exp);
            return Verdict::Ready(decided);
        }
        let inner = Arc::clone(inner);
        let token = token.to_owned();
        Verdict::Pending(Box::pin(async move {
            let flights = &inner.identity_flights;
            flights
                .run(key, || async {
                    let decided = inner.ask_identity(&token, key, claims.exp).await;
                    inner.remember_identity(key, &decided, claims.exp);
                    decided
                })
                .await
        }))
    }

    fn may_see(
        &self,
        token: &str,
        identity: &Identity,
        task_id: &str,
        owner: Option<&str>,
    ) -> Verdict<()> {
        if owner == Some(&*identity.user) {
            return Verdict::Ready(Ok(()));
        }
        let inner = &self.inner;
        let key = inner.hasher.token_task(identity.token_key, task_id);
        if let Some(decided) = inner.visibility.get(key) {
            return Verdict::Ready(decided);
        }
        let inner = Arc::clone(inner);
        let (token, task_id, expires_at) =
            (token.to_owned(), task_id.to_owned(), identity.expires_at);
        Verdict::Pending(Box::pin(async move {
            let flights = &inner.visibility_flights;
            flights
                .run(key, || async {
                    let decided = match inner.client.task_visible_to(&token, &task_id).await {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(Denial::Forbidden),
                        Err(err) => denial_for(&err, "task visibility"),
                    };
                    inner.remember(&inner.visibility, key, &decided, expires_at);
                    decided
                })
                .await
        }))
    }
}

impl Inner {
    async fn ask_identity(
        &self,
        token: &str,
        key: u64,
        expires_at: Option<u64>,
    ) -> Decision<Identity> {
        match self.client.current_user(token).await {
            Ok(user) => Ok(Identity {
                user: user.id.into(),
                expires_at,
                token_key: key,
            }),
            Err(err) => denial_for(&err, "users.get_current_user"),
        }
    }

    fn remember_identity(&self, key: u64, decided: &Decision<Identity>, expires_at: Option<u64>) {
        self.remember(&self.identities, key, decided, expires_at);
    }

    /// A yes for the TTL but never past the token's expiry; a refusal for the denial TTL;
    /// "could not ask" not at all.
    fn remember<T: Clone>(
        &self,
        cache: &DecisionCache<Decision<T>>,
        key: u64,
        decided: &Decision<T>,
        expires_at: Option<u64>,
    ) {
        let keep = match decided {
            Ok(_) => self.settings.ttl.min(until_expiry(expires_at)),
            Err(Denial::Unavailable) => return,
            Err(_) => self.settings.denial_ttl,
        };
        if !keep.is_zero() {
            cache.insert(key, decided.clone(), Instant::now() + keep);
        }
    }
}

/// What a token says about itself, before anyone is asked: it must be a JWT that has not
/// expired.
fn local_checks(token: &str) -> Result<Claims, Denial> {
    let claims =
        Claims::decode_unverified(token).map_err(|_| Denial::Unauthenticated("malformed token"))?;
    if claims.exp.is_some_and(|exp| exp <= now_secs()) {
        return Err(Denial::Unauthenticated("expired token"));
    }
    Ok(claims)
}

fn identity_from_claims(claims: &Claims, key: u64) -> Decision<Identity> {
    let user = claims
        .identity
        .as_ref()
        .map(|i| i.user.as_str())
        .filter(|u| !u.is_empty())
        .ok_or(Denial::Unauthenticated("token without an identity"))?;
    Ok(Identity {
        user: user.into(),
        expires_at: claims.exp,
        token_key: key,
    })
}

/// A 401 from the server refuses the token; anything else means the server could not
/// answer, and the request fails closed.
fn denial_for<T>(err: &ClearmlError, call: &'static str) -> Decision<T> {
    if err.is_unauthorized() {
        return Err(Denial::Unauthenticated("token refused by ClearML"));
    }
    tracing::warn!(call, error = %err, "ClearML could not check a token; answering 503");
    Err(Denial::Unavailable)
}

fn until_expiry(expires_at: Option<u64>) -> Duration {
    expires_at.map_or(Duration::MAX, |exp| {
        Duration::from_secs(exp.saturating_sub(now_secs()))
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
