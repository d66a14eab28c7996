//! The one configuration loader: defaults → file (`--config`) → `CORRAL_*` environment →
//! command-line flags → `validate()`. Nothing else in Corral reads the environment.
//!
//! Environment keys use `__` between sections: `CORRAL_COORDINATOR__LISTEN=0.0.0.0:50051`,
//! `CORRAL_STORE__ENDPOINTS=[http://etcd:2379]`, `CORRAL_AGENT__NODE_ID=n1`. `CORRAL_ENDPOINT`
//! is short for `client.endpoint`.

use std::path::Path;

use corral_agent::AgentConfig;
use corral_coordinator::CoordinatorConfig;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// A real etcd cluster.
    Etcd,
    /// The embedded in-process store (dev mode; state is lost on exit).
    Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// etcd client URLs.
    pub endpoints: Vec<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { backend: StoreBackend::Etcd, endpoints: vec!["http://127.0.0.1:2379".into()] }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusBackend {
    /// A real nats-server with JetStream.
    Nats,
    /// The embedded in-process bus (dev mode).
    Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    pub backend: BusBackend,
    pub url: String,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self { backend: BusBackend::Nats, url: "nats://127.0.0.1:4222".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log filter, e.g. `info` or `corral_agent=debug,info`.
    pub log: String,
    /// `text` or `json`.
    pub log_format: String,
    /// OTLP/gRPC collector URL for traces (e.g. `http://127.0.0.1:4317`); empty = no export.
    pub otlp_endpoint: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { log: "info".into(), log_format: "text".into(), otlp_endpoint: String::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// The coordinator the client commands talk to.
    pub endpoint: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self { endpoint: "http://127.0.0.1:50051".into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobBackend {
    /// A directory (one machine, or a shared file system).
    Local,
    /// An S3-protocol object store.
    S3,
}

/// Object storage for codebases (and later snapshots), shared by coordinators and agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobSection {
    pub backend: BlobBackend,
    /// For `local`: the directory; empty = `{agent.state_dir}/blobs`.
    pub dir: std::path::PathBuf,
    /// For `s3`: the endpoint URL (empty = AWS), bucket, region, path-style addressing, key
    /// prefix, and credentials (both empty = the standard AWS environment and instance ones).
    pub s3_endpoint: String,
    pub s3_bucket: String,
    pub s3_region: String,
    pub s3_path_style: bool,
    pub s3_prefix: String,
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
}

impl Default for BlobSection {
    fn default() -> Self {
        Self {
            backend: BlobBackend::Local,
            dir: std::path::PathBuf::new(),
            s3_endpoint: String::new(),
            s3_bucket: String::new(),
            s3_region: "us-east-1".into(),
            s3_path_style: true,
            s3_prefix: String::new(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
        }
    }
}

impl BlobSection {
    /// The store's configuration (`state_dir` places the default local directory).
    pub fn store_config(&self, state_dir: &Path) -> Result<corral_blob::BlobConfig, ConfigError> {
        Ok(match self.backend {
            BlobBackend::Local => corral_blob::BlobConfig::Local {
                dir: if self.dir.as_os_str().is_empty() { state_dir.join("blobs") } else { self.dir.clone() },
            },
            BlobBackend::S3 => {
                if self.s3_bucket.is_empty() {
                    return Err(ConfigError::Invalid("blob.s3_bucket must be set when blob.backend = \"s3\"".into()));
                }
                corral_blob::BlobConfig::S3(corral_blob::S3Config {
                    endpoint: self.s3_endpoint.clone(),
                    bucket: self.s3_bucket.clone(),
                    region: self.s3_region.clone(),
                    path_style: self.s3_path_style,
                    access_key_id: self.s3_access_key_id.clone(),
                    secret_access_key: self.s3_secret_access_key.clone(),
                    allow_http: self.s3_endpoint.starts_with("http://"),
                    prefix: self.s3_prefix.clone(),
                })
            }
        })
    }
}

/// Everything configurable, in one tree (`corral --dump-config` prints it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub coordinator: CoordinatorConfig,
    pub agent: AgentConfig,
    pub store: StoreConfig,
    pub bus: BusConfig,
    pub telemetry: TelemetryConfig,
    pub client: ClientConfig,
    pub blob: BlobSection,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(String),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Loads the layers over `defaults`; `flags` is a partial tree of the flags the user gave.
pub fn load(defaults: Config, file: Option<&Path>, flags: serde_json::Value) -> Result<Config, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::MissingFile(path.display().to_string()));
        }
        fig = fig.merge(Toml::file(path));
    }
    let env = Env::prefixed("CORRAL_")
        .filter(|k| k.as_str().contains("__") || k == "endpoint")
        .map(|k| if k == "endpoint" { "client.endpoint".into() } else { k.as_str().replace("__", ".").into() });
    fig = fig.merge(env).merge(Serialized::defaults(flags));
    let config: Config = fig.extract().map_err(|e| ConfigError::Invalid(e.to_string()))?;
    config.coordinator.validate().map_err(ConfigError::Invalid)?;
    config.agent.validate().map_err(ConfigError::Invalid)?;
    Ok(config)
}

/// A node id from the host name (dots become dashes, lowercase), for `agent.node_id` left empty.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "node".into());
    let id: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .take(63)
        .collect();
    if id.is_empty() { "node".into() } else { id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("corral.toml");
        std::fs::write(&file, "[coordinator]\ndefault_cpus = 2.0\n[agent]\nnode_id = \"from-file\"\n").unwrap();
        let flags = serde_json::json!({ "agent": { "node_id": "from-flag" } });
        let c = load(Config::default(), Some(&file), flags).unwrap();
        assert_eq!(c.coordinator.default_cpus, 2.0);
        assert_eq!(c.agent.node_id, "from-flag");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("corral.toml");
        std::fs::write(&file, "[coordinator]\nlisten_adress = \"x\"\n").unwrap();
        let err = load(Config::default(), Some(&file), serde_json::json!({})).unwrap_err().to_string();
        assert!(err.contains("listen_adress"), "{err}");
        let flags = serde_json::json!({ "agent": { "heartbeat_seconds": 60 } });
        let err = load(Config::default(), None, flags).unwrap_err().to_string();
        assert!(err.contains("heartbeat_seconds"), "{err}");
        assert!(load(Config::default(), Some(Path::new("/nonexistent.toml")), serde_json::json!({})).is_err());
    }

    /// docs/CONFIGURATION.md must document every key the loader knows.
    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../docs/CONFIGURATION.md");
        let tree = serde_json::to_value(Config::default()).unwrap();
        for (section, keys) in tree.as_object().unwrap() {
            for key in keys.as_object().unwrap().keys() {
                let short = format!("| `{key}` |");
                let long = format!("| `{section}.{key}` |");
                assert!(doc.contains(&short) || doc.contains(&long), "docs/CONFIGURATION.md lacks {section}.{key}");
            }
        }
    }
}
