//! `QConfigMapping`: which qconfig each layer gets, PyTorch's
//! `torch.ao.quantization.QConfigMapping`: a global default, overrides by layer kind
//! (`set_object_type`), by module-path regex (`set_module_name_regex`) and by module path
//! (`set_module_name`), each of which may be `None` to leave the layer in float (eager mode's
//! `qconfig = None`).
//!
//! For a layer, the most specific setting wins, as in PyTorch: its module path (the longest
//! set path equal to the layer's or a dotted prefix of it: setting `blocks.3` covers
//! `blocks.3.depthwise`), then the first regex that matches the path from its start, then its
//! kind, then the global default.
//!
//! ```
//! use burn_qat::quant::{QConfig, QConfigMapping, QuantBackend};
//!
//! let mapping = QConfigMapping::new()
//!     .with_global(Some(QConfig::default_ptq(QuantBackend::X86)))
//!     .with_path("stem", None) // the first layer stays float
//!     .with_kind("LinearBnAct", None); // so do linear layers
//! assert!(mapping.qconfig_for("stem", "ConvBnAct").is_none());
//! assert!(mapping.qconfig_for("blocks.0.depthwise", "ConvBnAct").is_some());
//! ```

use regex::Regex;

use super::qconfig::QConfig;
use crate::{Error, Result};

/// Which qconfig each layer gets; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct QConfigMapping {
    global: Option<QConfig>,
    kinds: Vec<(String, Option<QConfig>)>,
    regexes: Vec<(Regex, Option<QConfig>)>,
    paths: Vec<(String, Option<QConfig>)>,
}

impl QConfigMapping {
    /// An empty mapping: every layer stays float until a setting says otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// The default for layers no other setting names (`set_global`).
    pub fn with_global(mut self, qconfig: Option<QConfig>) -> Self {
        self.global = qconfig;
        self
    }

    /// The qconfig of every layer of `kind` (its `QuantLayer::kind`, e.g. `"ConvBnAct"`;
    /// `set_object_type`).
    pub fn with_kind(mut self, kind: &str, qconfig: Option<QConfig>) -> Self {
        self.kinds.retain(|(k, _)| k != kind);
        self.kinds.push((kind.to_string(), qconfig));
        self
    }

    /// The qconfig of the layer at module path `path` and of the layers under it
    /// (`set_module_name`).
    pub fn with_path(mut self, path: &str, qconfig: Option<QConfig>) -> Self {
        self.paths.retain(|(p, _)| p != path);
        self.paths.push((path.to_string(), qconfig));
        self
    }

    /// The qconfig of the layers whose module path matches `pattern` from its start
    /// (`set_module_name_regex`); the first regex set that matches wins. A pattern that does
    /// not compile is an error naming it.
    pub fn with_path_regex(mut self, pattern: &str, qconfig: Option<QConfig>) -> Result<Self> {
        let regex = Regex::new(&format!("^(?:{pattern})")).map_err(|e| {
            Error::Config(format!(
                "QConfigMapping: the module-path regex `{pattern}`: {e}"
            ))
        })?;
        self.regexes.push((regex, qconfig));
        Ok(self)
    }

    /// The qconfig of the layer of `kind` at `path`, `None` for a layer left in float.
    pub fn qconfig_for(&self, path: &str, kind: &str) -> Option<&QConfig> {
        let covers = |set: &str| {
            set == path || (path.starts_with(set) && path[set.len()..].starts_with('.'))
        };
        if let Some((_, qconfig)) = self
            .paths
            .iter()
            .filter(|(p, _)| covers(p))
            .max_by_key(|(p, _)| p.len())
        {
            return qconfig.as_ref();
        }
        if let Some((_, qconfig)) = self.regexes.iter().find(|(r, _)| r.is_match(path)) {
            return qconfig.as_ref();
        }
        if let Some((_, qconfig)) = self.kinds.iter().find(|(k, _)| k == kind) {
            return qconfig.as_ref();
        }
        self.global.as_ref()
    }

    /// Every qconfig the mapping can hand out, for checking them before any layer changes.
    pub fn qconfigs(&self) -> impl Iterator<Item = &QConfig> {
        let set = self.kinds.iter().map(|(_, q)| q);
        let set = set.chain(self.regexes.iter().map(|(_, q)| q));
        let set = set.chain(self.paths.iter().map(|(_, q)| q));
        self.global.iter().chain(set.flatten())
    }
}

/// One qconfig for every layer.
impl From<QConfig> for QConfigMapping {
    fn from(qconfig: QConfig) -> Self {
        QConfigMapping::new().with_global(Some(qconfig))
    }
}

impl From<&QConfig> for QConfigMapping {
    fn from(qconfig: &QConfig) -> Self {
        qconfig.clone().into()
    }
}

impl From<&QConfigMapping> for QConfigMapping {
    fn from(mapping: &QConfigMapping) -> Self {
        mapping.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantBackend;

    #[test]
    fn the_most_specific_setting_wins() {
        let x86 = QConfig::default_ptq(QuantBackend::X86);
        let qnnpack = QConfig::default_ptq(QuantBackend::Qnnpack);
        let mapping = QConfigMapping::new()
            .with_global(Some(x86.clone()))
            .with_kind("LinearBnAct", None)
            .with_path_regex(r"blocks\.1\d", Some(qnnpack.clone()))
            .unwrap()
            .with_path("blocks", None)
            .with_path("blocks.12", Some(x86.clone()));
        let engine = |path: &str, kind: &str| {
            mapping
                .qconfig_for(path, kind)
                .map(|q| q.activation.observer().qmin_qmax().unwrap().1)
        };
        let (x86_max, qnnpack_max) = (Some(127), Some(255));
        assert_eq!(engine("stem", "ConvBnAct"), x86_max, "global");
        assert_eq!(engine("classifier", "LinearBnAct"), None, "by kind");
        assert_eq!(
            engine("blocks.3.expand", "ConvBnAct"),
            None,
            "by path prefix"
        );
        assert_eq!(
            engine("blocks.12.expand", "ConvBnAct"),
            x86_max,
            "longest path"
        );
        assert_eq!(
            engine("blocks3", "ConvBnAct"),
            x86_max,
            "a prefix must end at a dot"
        );
        let regex_only = QConfigMapping::new()
            .with_path_regex(r"blocks\.1\d", Some(qnnpack))
            .unwrap();
        assert_eq!(
            regex_only
                .qconfig_for("blocks.15.project", "ConvBnAct")
                .map(|q| q.activation.observer().qmin_qmax().unwrap().1),
            qnnpack_max
        );
        assert!(regex_only.qconfig_for("xblocks.15", "ConvBnAct").is_none());
        let err = QConfigMapping::new()
            .with_path_regex("(", None)
            .unwrap_err();
        assert!(err.to_string().contains("`(`"), "{err}");
    }
}
