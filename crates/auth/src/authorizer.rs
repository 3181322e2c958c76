//! ClearML's answer to "who is this, and may they see that task" (CONTRACT §7), with the
//! decisions cached and concurrent questions about one token asked once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway_clearml::{Claims, ClearmlClient, ClearmlError};
use gateway_proxy::{Authorizer, Denial, Identity, Verdict};
use tokio::sync::Semaphore;

use crate::cache::{DecisionCache, TokenHasher};
use crate::flight::Flights;
use crate::local;
use crate::metrics::AuthMetrics;

/// How long decisions are kept, and how many.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// A yes is kept this long (never past the token's expiry).
    pub ttl: Duration,
    /// A no is kept this long.
    pub denial_ttl: Duration,
    /// Most decisions kept, per kind (identities, task visibility).
    pub capacity: usize,
    /// Most questions to ClearML at once; past it, new tokens get 503 rather than a flood of
    /// made-up tokens reaching the server.
    pub max_asking: usize,
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
            max_asking: 256,
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
    asking: Semaphore,
    last_unavailable_warning: AtomicU64,
    metrics: Arc<AuthMetrics>,
}

impl ClearmlAuthorizer {
    /// An authorizer that asks the server behind `client`.
    pub fn new(client: Arc<ClearmlClient>, settings: AuthSettings) -> Self {
        let capacity = settings.capacity;
        Self {
            inner: Arc::new(Inner {
                client,
                asking: Semaphore::new(settings.max_asking.max(1)),
                settings,
                hasher: TokenHasher::new(),
                identities: DecisionCache::new(capacity),
                visibility: DecisionCache::new(capacity),
                identity_flights: Flights::new(),
                visibility_flights: Flights::new(),
                last_unavailable_warning: AtomicU64::new(0),
                metrics: Arc::default(),
            }),
        }
    }
}

impl ClearmlAuthorizer {
    /// The cache's hit and miss counts, for `/_gateway/metrics`.
    pub fn metrics(&self) -> Arc<AuthMetrics> {
        Arc::clone(&self.inner.metrics)
    }
}

impl Authorizer for ClearmlAuthorizer {
    fn identify(&self, token: &str) -> Verdict<Identity> {
        let inner = &self.inner;
        let key = inner.hasher.token(token);
        if let Some(decided) = inner.identities.get(key) {
            AuthMetrics::count(&inner.metrics.identity_hits);
            return Verdict::Ready(decided);
        }
        AuthMetrics::count(&inner.metrics.identity_misses);
        let claims = match local_checks(token) {
            Ok(claims) => claims,
            Err(denial) => return Verdict::Ready(Err(denial)),
        };
        if let Some(secret) = &inner.settings.local_secret {
            let decided = local_identity(token, &claims, secret, key);
            inner.remember(&inner.identities, key, &decided, claims.exp);
            return Verdict::Ready(decided);
        }
        let inner = Arc::clone(inner);
        let token = token.to_owned();
        Verdict::Pending(Box::pin(async move {
            let flights = &inner.identity_flights;
            flights
                .run(key, || async {
                    // A caller that missed the cache just as the last call finished finds it here.
                    if let Some(decided) = inner.identities.get(key) {
                        return decided;
                    }
                    let decided = inner.ask(inner.ask_identity(&token, key, claims.exp)).await;
                    inner.remember(&inner.identities, key, &decided, claims.exp);
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
        if owner.is_some_and(|owner| !owner.is_empty() && owner == &*identity.user) {
            return Verdict::Ready(Ok(()));
        }
        let inner = &self.inner;
        let key = inner.hasher.token_task(identity.token_key, task_id);
        if let Some(decided) = inner.visibility.get(key) {
            AuthMetrics::count(&inner.metrics.visibility_hits);
            return Verdict::Ready(decided);
        }
        AuthMetrics::count(&inner.metrics.visibility_misses);
        let inner = Arc::clone(inner);
        let (token, task_id) = (token.to_owned(), task_id.to_owned());
        let expires_at = identity.expires_at;
        Verdict::Pending(Box::pin(async move {
            let flights = &inner.visibility_flights;
            flights
                .run(key, || async {
                    if let Some(decided) = inner.visibility.get(key) {
                        return decided;
                    }
                    let asking = async {
                        match inner.client.task_visible_to(&token, &task_id).await {
                            Ok(true) => Ok(()),
                            Ok(false) => Err(Denial::Forbidden),
                            Err(err) => Err(inner.denial_for(&err, Denial::Forbidden)),
                        }
                    };
                    let decided = inner.ask(asking).await;
                    inner.remember(&inner.visibility, key, &decided, expires_at);
                    decided
                })
                .await
        }))
    }
}

impl Inner {
    /// Runs a question to ClearML if fewer than `max_asking` are under way; else fails closed.
    async fn ask<T>(&self, question: impl Future<Output = Decision<T>>) -> Decision<T> {
        let Ok(_permit) = self.asking.try_acquire() else {
            self.warn_unavailable("too many token checks under way");
            return Err(Denial::Unavailable);
        };
        question.await
    }

    async fn ask_identity(
        &self,
        token: &str,
        key: u64,
        expires_at: Option<u64>,
    ) -> Decision<Identity> {
        match self.client.current_user(token).await {
            Ok(user) if !user.id.is_empty() => Ok(Identity {
                user: user.id.into(),
                expires_at,
                token_key: key,
            }),
            Ok(_) => Err(Denial::Unauthenticated("token without a user")),
            Err(err) => {
                Err(self.denial_for(&err, Denial::Unauthenticated("token refused by ClearML")))
            }
        }
    }

    /// 401 refuses the token; 403, or any other answer a ClearML server would not give
    /// again if asked again, is `refusal`; only an outage (no answer, 5xx) means the server
    /// could not be asked, and the request fails closed.
    fn denial_for(&self, err: &ClearmlError, refusal: Denial) -> Denial {
        match err.result() {
            Some((401, _)) => Denial::Unauthenticated("token refused by ClearML"),
            Some((403, _)) => Denial::Forbidden,
            _ if !err.is_transient() => refusal,
            _ => {
                self.warn_unavailable(&err.to_string());
                Denial::Unavailable
            }
        }
    }

    /// One warning every ten seconds at most: an outage must not flood the log.
    fn warn_unavailable(&self, reason: &str) {
        let now = now_secs();
        let last = self.last_unavailable_warning.load(Ordering::Relaxed);
        let due = now >= last + 10;
        if due
            && self
                .last_unavailable_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(reason, "ClearML cannot check tokens now; new ones get 503");
        }
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

/// With the server's secret: a valid HS256 signature, an `exp`, and a user.
fn local_identity(token: &str, claims: &Claims, secret: &[u8], key: u64) -> Decision<Identity> {
    if !local::signature_valid(token, secret) {
        return Err(Denial::Unauthenticated("token signature invalid"));
    }
    if claims.exp.is_none() {
        return Err(Denial::Unauthenticated("token without an expiry"));
    }
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

/// How long until `expires_at`, a second short (the clock reads whole seconds).
fn until_expiry(expires_at: Option<u64>) -> Duration {
    expires_at.map_or(Duration::MAX, |exp| {
        Duration::from_secs(exp.saturating_sub(now_secs()).saturating_sub(1))
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
