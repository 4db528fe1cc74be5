//! The client seam of the fleet: [`ClientFactory::scope`] gives one
//! target in one region its clients and the account they act in, in one
//! call (the shape of YACE's `pkg/clients`). The fleet asks once per
//! (target, region) and never reaches into the SDK itself.
//!
//! [`Factory`] is the implementation, over a [`Connect`] that makes the
//! clients and asks STS: [`SdkConnect`] in production, a fake in the
//! fleet's tests, so the rules below are the same code in both.
//!
//! - The account of a target with a role is the role ARN's; no call.
//! - Without a role, STS `GetCallerIdentity` (in the target's first
//!   region) says whose the credentials are. It is asked once per
//!   [`Identity`] and remembered, across reloads too; a failed lookup is
//!   not remembered, so the next `scope` asks again.
//! - A loopback endpoint (DynamoDB Local, a simulator) whose STS cannot
//!   answer gets the placeholder account [`LOCAL_ACCOUNT_ID`].
//! - Clients are cached by everything they are built from (identity,
//!   region, per-attempt timeout): a reload that keeps a target keeps its
//!   clients, their connection pools and their credential caches.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;

use crate::aws::budget::Budget;
use crate::aws::{
    self, CallPolicy, ClientOptions, CloudWatchApi, DynamoDbApi, KinesisApi, PollError, SdkClient,
};
use crate::config::Name;
use crate::config::Target;

/// The account used for a loopback endpoint (DynamoDB Local, a simulator)
/// when it cannot tell one: such endpoints have no real account.
pub const LOCAL_ACCOUNT_ID: &str = "000000000000";

/// Which credentials a target signs with: they decide its account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub role: Option<String>,
    pub endpoint_url: Option<String>,
}

impl Identity {
    pub fn of(target: &Target) -> Self {
        Identity {
            role: target.role.as_ref().map(|r| r.arn.clone()),
            endpoint_url: target.endpoint_url.clone(),
        }
    }
}

/// What a scope gets from the factory: its clients and its account.
#[derive(Debug)]
pub struct ScopeClients<C> {
    pub client: Arc<C>,
    pub account: Name,
}

impl<C> Clone for ScopeClients<C> {
    fn clone(&self) -> Self {
        ScopeClients {
            client: Arc::clone(&self.client),
            account: self.account.clone(),
        }
    }
}

/// What the fleet takes: the clients and the account of a target in a
/// region, in one call.
pub trait ClientFactory: Send + Sync + 'static {
    type Client: DynamoDbApi + KinesisApi + CloudWatchApi;

    /// The clients of `target` in `region` and their account. Fails only
    /// when the account cannot be told yet (STS failed); asking again
    /// later is the caller's choice. An STS call goes through `sts` (whose
    /// meter counts its attempts).
    fn scope(
        &self,
        target: &Target,
        region: &str,
        policy: CallPolicy,
        sts: &Budget,
    ) -> impl Future<Output = Result<ScopeClients<Self::Client>, PollError>> + Send;

    /// The account [`ClientFactory::scope`] would name without asking
    /// AWS: the role's, or one looked up before. With it, the fleet
    /// resolves a scope in line (a reload keeps its tables without a gap)
    /// and looks up the others in the background.
    fn known_account(&self, target: &Target) -> Option<Name>;
}

/// What [`Factory`] builds on: making clients and asking STS.
pub trait Connect: Send + Sync + 'static {
    type Client: DynamoDbApi + KinesisApi + CloudWatchApi;

    /// The clients of `target` in `region`. No AWS call.
    fn connect(
        &self,
        target: &Target,
        region: &str,
        policy: CallPolicy,
    ) -> impl Future<Output = Self::Client> + Send;

    /// STS `GetCallerIdentity` with `target`'s credentials in `region`,
    /// through [`aws::call`] under `sts`: the 12-digit account.
    fn caller_account(
        &self,
        target: &Target,
        region: &str,
        policy: CallPolicy,
        sts: &Budget,
    ) -> impl Future<Output = Result<String, PollError>> + Send;
}

/// What a client is built from.
type ClientKey = (Identity, Option<String>, String, Duration);

/// The caching factory over a [`Connect`].
pub struct Factory<K: Connect> {
    connect: K,
    clients: Mutex<HashMap<ClientKey, Arc<K::Client>>>,
    accounts: Mutex<HashMap<Identity, Name>>,
}

/// The production factory.
pub type SdkFactory = Factory<SdkConnect>;

impl<K: Connect> Factory<K> {
    pub fn new(connect: K) -> Self {
        Factory {
            connect,
            clients: Mutex::new(HashMap::new()),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// The connector (tests inspect their fake's log through it).
    pub fn connector(&self) -> &K {
        &self.connect
    }

    async fn account(
        &self,
        target: &Target,
        policy: CallPolicy,
        sts: &Budget,
    ) -> Result<Name, PollError> {
        if let Some(account) = self.known_account(target) {
            return Ok(account);
        }
        let region = target.regions.first().map_or("", String::as_str);
        let account = match self
            .connect
            .caller_account(target, region, policy, sts)
            .await
        {
            Ok(account) => Name::from(account),
            Err(err) if is_local(target) => {
                tracing::warn!(error = %err, account_id = LOCAL_ACCOUNT_ID,
                    "the loopback endpoint's account is unknown (STS GetCallerIdentity failed); using a placeholder");
                Name::from(LOCAL_ACCOUNT_ID)
            }
            Err(err) => return Err(err),
        };
        lock(&self.accounts).insert(Identity::of(target), account.clone());
        Ok(account)
    }
}

impl<K: Connect> ClientFactory for Factory<K> {
    type Client = K::Client;

    async fn scope(
        &self,
        target: &Target,
        region: &str,
        policy: CallPolicy,
        sts: &Budget,
    ) -> Result<ScopeClients<K::Client>, PollError> {
        let account = self.account(target, policy, sts).await?;
        let key: ClientKey = (
            Identity::of(target),
            target.role.as_ref().map(|r| format!("{r:?}")),
            region.to_string(),
            policy.attempt_timeout(),
        );
        let cached = lock(&self.clients).get(&key).cloned();
        let client = match cached {
            Some(client) => client,
            None => {
                let client = Arc::new(self.connect.connect(target, region, policy).await);
                Arc::clone(lock(&self.clients).entry(key).or_insert(client))
            }
        };
        Ok(ScopeClients { client, account })
    }

    fn known_account(&self, target: &Target) -> Option<Name> {
        match &target.role {
            Some(role) => Some(Name::from(role.account_id.as_str())),
            None => lock(&self.accounts).get(&Identity::of(target)).cloned(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_local(target: &Target) -> bool {
    target
        .endpoint_url
        .as_deref()
        .is_some_and(aws::is_loopback_endpoint)
}

/// The SDK side: aws-sdk clients on the shared configuration, roles
/// assumed with aws-config's provider (one per role and region, kept so
/// its credential cache lives as long as the process).
pub struct SdkConnect {
    shared: SdkConfig,
    options: ClientOptions,
    credentials: Mutex<HashMap<(String, String), SharedCredentialsProvider>>,
}

impl SdkConnect {
    pub fn new(shared: SdkConfig, options: ClientOptions) -> Self {
        SdkConnect {
            shared,
            options,
            credentials: Mutex::new(HashMap::new()),
        }
    }

    /// The production factory over this connector.
    pub fn factory(shared: SdkConfig, options: ClientOptions) -> SdkFactory {
        Factory::new(SdkConnect::new(shared, options))
    }

    /// The assumed-role credentials of a target, or `None` without a role.
    async fn role_credentials(&self, target: &Target) -> Option<SharedCredentialsProvider> {
        let role = target.role.as_ref()?;
        let region = target.regions.first()?.clone();
        let key = (format!("{role:?}"), region.clone());
        if let Some(provider) = lock(&self.credentials).get(&key) {
            return Some(provider.clone());
        }
        let shared = self.sts_config(target);
        let provider = aws::role_credentials(&shared, role, &region).await;
        Some(
            lock(&self.credentials)
                .entry(key)
                .or_insert(provider)
                .clone(),
        )
    }

    /// The SDK configuration STS calls of `target` use: the shared one,
    /// with the loopback rule of [`aws::local_service_endpoint`].
    fn sts_config(&self, target: &Target) -> SdkConfig {
        match aws::local_service_endpoint(target, "STS") {
            Some(url) => self.shared.to_builder().endpoint_url(url).build(),
            None => self.shared.clone(),
        }
    }
}

impl Connect for SdkConnect {
    type Client = SdkClient;

    async fn connect(&self, target: &Target, region: &str, policy: CallPolicy) -> SdkClient {
        let credentials = self.role_credentials(target).await;
        SdkClient::new(
            &self.shared,
            target,
            region,
            credentials,
            &self.options,
            policy.attempt_timeout(),
        )
    }

    async fn caller_account(
        &self,
        target: &Target,
        region: &str,
        policy: CallPolicy,
        sts: &Budget,
    ) -> Result<String, PollError> {
        // Like the DynamoDB client of such a target: a loopback endpoint
        // gets local credentials unless the caller gave some.
        let credentials = (is_local(target) && self.options.static_credentials.is_none())
            .then(aws::local_endpoint_credentials);
        aws::caller_account(&self.sts_config(target), region, credentials, policy, sts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(text: &str) -> Target {
        crate::config::parse(text, "t.yaml")
            .unwrap()
            .targets
            .remove(0)
    }

    const POLICY: CallPolicy = CallPolicy {
        max_attempts: 1,
        timeout: Duration::from_secs(2),
    };

    #[tokio::test]
    async fn sdk_clients_are_cached_and_a_dead_loopback_sts_gives_the_placeholder() {
        // Port 1 on loopback: nothing listens, so STS fails at once.
        let shared = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let factory = SdkConnect::factory(shared, ClientOptions::default());
        let local = target(
            "targets:\n  - regions: [us-east-1, eu-west-1]\n    endpoint_url: http://127.0.0.1:1\n    tables: [orders]\n",
        );
        assert_eq!(factory.known_account(&local), None);
        let sts = Budget::new(10.0, 1);
        let first = factory
            .scope(&local, "us-east-1", POLICY, &sts)
            .await
            .unwrap();
        assert_eq!(&*first.account, LOCAL_ACCOUNT_ID);
        assert_eq!(
            factory.known_account(&local).as_deref(),
            Some(LOCAL_ACCOUNT_ID),
            "remembered"
        );
        let again = factory
            .scope(&local, "us-east-1", POLICY, &sts)
            .await
            .unwrap();
        assert!(
            Arc::ptr_eq(&first.client, &again.client),
            "one client per key"
        );
        let other = factory
            .scope(&local, "eu-west-1", POLICY, &sts)
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&first.client, &other.client), "one per region");
    }
}
