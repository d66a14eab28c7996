//! [`BlobConfig`] and [`S3Config`]: where blobs live, as read from Corral's config file; and
//! building the S3 client with bounded retries and timeouts.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::BlobError;
use crate::key::check_key;

/// Retries of one request after its first attempt.
const MAX_RETRIES: usize = 4;
/// No retry starts later than this after the first attempt.
const RETRY_TIMEOUT: Duration = Duration::from_secs(15);
const BACKOFF_INIT: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One whole request (a part of a multipart upload included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where blobs live: `{"kind": "local", "dir": ...}` or `{"kind": "s3", "bucket": ..., ...}`.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BlobConfig {
    /// A local directory (one node, or `corral dev`).
    Local {
        /// Created if missing.
        dir: PathBuf,
    },
    /// An S3 bucket, or a bucket on any S3-protocol server.
    S3(S3Config),
}

/// An S3 bucket and how to reach it. Fields left out of a config file take the defaults noted.
#[derive(Deserialize, Serialize, Clone, PartialEq, Eq)]
#[serde(from = "RawS3Config")]
pub struct S3Config {
    /// `http(s)://host:port` of an S3-protocol server; empty means AWS (by `region`).
    pub endpoint: String,
    /// The bucket; it must exist.
    pub bucket: String,
    /// Default `us-east-1`.
    pub region: String,
    /// Bucket in the path (`endpoint/bucket/key`) rather than the host name; default true, which
    /// every S3-protocol server understands.
    pub path_style: bool,
    /// With `secret_access_key`: static credentials. Both empty: object_store's own lookup
    /// (`AWS_*` environment variables, web identity, container or instance credentials).
    pub access_key_id: String,
    /// See `access_key_id`. Never printed by `Debug`.
    pub secret_access_key: String,
    /// Allow plain `http://`; default true exactly when `endpoint` starts with `http://`.
    pub allow_http: bool,
    /// Optional prefix of every key inside the bucket (`corral/blobs`), so one bucket can be shared.
    pub prefix: String,
}

impl S3Config {
    /// A bucket on `endpoint` (empty for AWS), every other field at its default.
    pub fn new(endpoint: impl Into<String>, bucket: impl Into<String>) -> Self {
        RawS3Config { endpoint: endpoint.into(), bucket: bucket.into(), ..RawS3Config::default() }.into()
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = if self.secret_access_key.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &secret)
            .field("allow_http", &self.allow_http)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// [`S3Config`] as written, before the defaults that depend on other fields.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawS3Config {
    endpoint: String,
    bucket: String,
    region: Option<String>,
    path_style: Option<bool>,
    access_key_id: String,
    secret_access_key: String,
    allow_http: Option<bool>,
    prefix: String,
}

impl From<RawS3Config> for S3Config {
    fn from(raw: RawS3Config) -> Self {
        let allow_http = raw.allow_http.unwrap_or_else(|| raw.endpoint.starts_with("http://"));
        S3Config {
            region: raw.region.filter(|r| !r.is_empty()).unwrap_or_else(|| "us-east-1".to_owned()),
            path_style: raw.path_style.unwrap_or(true),
            allow_http,
            endpoint: raw.endpoint,
            bucket: raw.bucket,
            access_key_id: raw.access_key_id,
            secret_access_key: raw.secret_access_key,
            prefix: raw.prefix,
        }
    }
}

/// The S3 client for `config`, under its prefix. Fails with `Invalid` on a bad config; never
/// panics for want of a TLS crypto provider.
pub(crate) fn build_s3(config: &S3Config) -> Result<Arc<dyn ObjectStore>, BlobError> {
    install_crypto_provider();
    let bad = |why: String| BlobError::Invalid(format!("s3 bucket {:?}: {why}", config.bucket));
    if config.bucket.is_empty() {
        return Err(bad("no bucket named".into()));
    }
    if config.access_key_id.is_empty() != config.secret_access_key.is_empty() {
        return Err(bad("set both access_key_id and secret_access_key, or neither".into()));
    }
    let builder = if config.access_key_id.is_empty() {
        AmazonS3Builder::from_env()
    } else {
        AmazonS3Builder::new()
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
    };
    let mut builder = builder
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_virtual_hosted_style_request(!config.path_style)
        .with_retry(retry_config())
        // The client options hold allow_http too: set it here, as `with_client_options` replaces
        // what `with_allow_http` would have set.
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(config.allow_http)
                .with_connect_timeout(CONNECT_TIMEOUT)
                .with_timeout(REQUEST_TIMEOUT),
        );
    if !config.endpoint.is_empty() {
        builder = builder.with_endpoint(&config.endpoint);
    }
    let s3 = builder.build().map_err(|e| bad(e.to_string()))?;
    if config.prefix.is_empty() {
        return Ok(Arc::new(s3));
    }
    let prefix = check_key(config.prefix.trim_end_matches('/')).map_err(|e| bad(format!("prefix: {e}")))?;
    Ok(Arc::new(PrefixStore::new(s3, prefix)))
}

/// Bounded retries: an outage surfaces as `Unavailable` after roughly 4 tries over a few
/// seconds (at most [`RETRY_TIMEOUT`] plus the last request), not as a hang.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig { init_backoff: BACKOFF_INIT, max_backoff: BACKOFF_MAX, base: 2.0 },
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
    }
}

/// Two rustls crypto providers are compiled into Corral (ring through async-nats, aws-lc-rs
/// through object_store), so rustls cannot pick one itself and building a TLS client would
/// panic. Installs aws-lc-rs unless the process already chose one.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: any installed provider will do.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_depend_on_the_endpoint() {
        let local: BlobConfig =
            serde_json::from_str(r#"{"kind": "s3", "endpoint": "http://127.0.0.1:9000", "bucket": "b"}"#).expect("s3");
        let BlobConfig::S3(c) = local else { panic!("{local:?}") };
        assert_eq!((c.region.as_str(), c.path_style, c.allow_http), ("us-east-1", true, true));
        let aws = S3Config::new("", "b");
        assert!(!aws.allow_http && aws.endpoint.is_empty());
        let dir: BlobConfig =
            serde_json::from_str(r#"{"kind": "local", "dir": "/var/lib/corral/blobs"}"#).expect("dir");
        assert!(matches!(dir, BlobConfig::Local { dir } if dir == std::path::Path::new("/var/lib/corral/blobs")));
    }

    #[test]
    fn round_trips_and_refuses_typos() {
        let mut c = S3Config::new("https://s3.example", "b");
        c.allow_http = true;
        let json = serde_json::to_string(&BlobConfig::S3(c.clone())).expect("serializes");
        let BlobConfig::S3(back) = serde_json::from_str(&json).expect("parses") else { panic!("{json}") };
        assert_eq!(back, c);
        let typo = serde_json::from_str::<BlobConfig>(r#"{"kind": "s3", "bucket": "b", "secret_acces_key": "x"}"#);
        assert!(typo.is_err(), "{typo:?}");
    }

    #[test]
    fn debug_hides_the_secret_and_bad_configs_are_invalid() {
        let mut c = S3Config::new("http://127.0.0.1:1", "b");
        c.access_key_id = "AKID".into();
        c.secret_access_key = "hunter2".into();
        assert!(!format!("{c:?}").contains("hunter2"));
        c.access_key_id.clear();
        assert!(matches!(build_s3(&c), Err(BlobError::Invalid(_))));
        assert!(matches!(build_s3(&S3Config::new("http://127.0.0.1:1", "")), Err(BlobError::Invalid(_))));
        let mut bad_prefix = S3Config::new("http://127.0.0.1:1", "b");
        bad_prefix.prefix = "../up".into();
        assert!(matches!(build_s3(&bad_prefix), Err(BlobError::Invalid(_))));
    }
}
