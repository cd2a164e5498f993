//! Image configs. The bytes are kept as they came (the image ID is their digest); parsing
//! goes through oci-spec, which reads docker's schema2 configs too.

use oci_spec::image::{
    Arch, ConfigBuilder, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, Os,
    RootFsBuilder,
};
use serde::Serialize;
use strata_store::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("image config is not valid JSON of an image config: {0}")]
    Json(String),
    #[error("image config rootfs type is {0:?}; only \"layers\" is supported")]
    RootFsType(String),
    #[error("image config lists diff ID {0:?}, which is not a sha256 digest")]
    DiffId(String),
    #[error(
        "image config history marks {history} entries as layers but rootfs has {layers} diff IDs"
    )]
    HistoryMismatch { history: usize, layers: usize },
}

#[derive(Debug, Clone)]
pub struct ImageConfig {
    pub oci: ImageConfiguration,
    pub raw: serde_json::Value,
    diff_ids: Vec<Digest>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryEntry {
    pub created: Option<String>,
    pub created_by: String,
    pub comment: String,
    pub author: String,
    pub empty_layer: bool,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        let oci: ImageConfiguration =
            serde_json::from_value(raw.clone()).map_err(|e| ConfigError::Json(e.to_string()))?;
        if oci.rootfs().typ() != "layers" {
            return Err(ConfigError::RootFsType(oci.rootfs().typ().clone()));
        }
        let diff_ids = oci
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| {
                d.parse::<Digest>()
                    .map_err(|_| ConfigError::DiffId(d.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cfg = ImageConfig { oci, raw, diff_ids };
        let history = cfg.history();
        let layered = history.iter().filter(|h| !h.empty_layer).count();
        if !history.is_empty() && layered != cfg.diff_ids.len() {
            return Err(ConfigError::HistoryMismatch {
                history: layered,
                layers: cfg.diff_ids.len(),
            });
        }
        Ok(cfg)
    }

    pub fn diff_ids(&self) -> &[Digest] {
        &self.diff_ids
    }

    pub fn created(&self) -> Option<&str> {
        self.oci.created().as_deref()
    }

    pub fn history(&self) -> Vec<HistoryEntry> {
        self.oci
            .history()
            .iter()
            .flatten()
            .map(|h| HistoryEntry {
                created: h.created().clone(),
                created_by: h.created_by().clone().unwrap_or_default(),
                comment: h.comment().clone().unwrap_or_default(),
                author: h.author().clone().unwrap_or_default(),
                empty_layer: h.empty_layer().unwrap_or(false),
            })
            .collect()
    }

    /// A string field of the raw config (`comment`, `docker_version`, `author`...).
    pub fn raw_str(&self, key: &str) -> &str {
        self.raw.get(key).and_then(|v| v.as_str()).unwrap_or("")
    }
}

/// The container config a new image carries (`import -c`, `commit -c`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunConfig {
    pub user: Option<String>,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub labels: Vec<(String, String)>,
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub stop_signal: Option<String>,
    pub onbuild: Vec<String>,
}

/// Builds the config of an image made from one layer tarball, as `docker import` does.
pub fn imported_config(diff_id: &Digest, run: &RunConfig, created: &str, comment: &str) -> Vec<u8> {
    let mut cb = ConfigBuilder::default();
    if let Some(u) = &run.user {
        cb = cb.user(u.clone());
    }
    if !run.env.is_empty() {
        cb = cb.env(run.env.clone());
    }
    if let Some(e) = &run.entrypoint {
        cb = cb.entrypoint(e.clone());
    }
    if let Some(c) = &run.cmd {
        cb = cb.cmd(c.clone());
    }
    if let Some(w) = &run.working_dir {
        cb = cb.working_dir(w.clone());
    }
    if !run.labels.is_empty() {
        cb = cb.labels(
            run.labels
                .iter()
                .cloned()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    if !run.exposed_ports.is_empty() {
        cb = cb.exposed_ports(run.exposed_ports.clone());
    }
    if !run.volumes.is_empty() {
        cb = cb.volumes(run.volumes.clone());
    }
    if let Some(s) = &run.stop_signal {
        cb = cb.stop_signal(s.clone());
    }
    let config = cb.build().expect("all config fields are optional");
    let history = HistoryBuilder::default()
        .created(created.to_string())
        .created_by(String::new())
        .comment(comment.to_string())
        .build()
        .expect("history fields are optional");
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![diff_id.to_string()])
        .build()
        .expect("rootfs complete");
    let image = ImageConfigurationBuilder::default()
        .created(created.to_string())
        .architecture(host_arch())
        .os(Os::Linux)
        .config(config)
        .rootfs(rootfs)
        .history(vec![history])
        .build()
        .expect("image config complete");
    let mut value = serde_json::to_value(&image).expect("config serialises");
    if !run.onbuild.is_empty() {
        value["config"]["OnBuild"] = serde_json::json!(run.onbuild);
    }
    serde_json::to_vec(&value).expect("config serialises")
}

pub fn host_arch() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        other => Arch::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imported_config_round_trips() {
        let d = Digest::of(b"layer");
        let run = RunConfig {
            cmd: Some(vec!["sh".into()]),
            env: vec!["A=1".into()],
            ..Default::default()
        };
        let bytes = imported_config(&d, &run, "2026-01-01T00:00:00Z", "Imported from -");
        let c = ImageConfig::parse(&bytes).unwrap();
        assert_eq!(c.diff_ids(), &[d]);
        assert_eq!(c.history().len(), 1);
        assert_eq!(
            c.oci.config().as_ref().unwrap().cmd().as_ref().unwrap(),
            &vec!["sh".to_string()]
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(ImageConfig::parse(b"not json").is_err());
        assert!(ImageConfig::parse(b"{}").is_err());
        let bad = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:zz"]}}"#;
        assert!(matches!(
            ImageConfig::parse(bad),
            Err(ConfigError::DiffId(_))
        ));
    }
}
