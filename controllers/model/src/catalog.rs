//! Profile catalogs: a TOML file listing variants with their accuracy, cold-start time,
//! resource needs and measured profile points.
//!
//! ```toml
//! schema = 1
//! [[variant]]
//! name = "resnet18"
//! accuracy = 0.69758
//! load_time_s = 6.44
//! points = [ { batch = 1, cores = 2, p99_ms = 80.0, throughput_rps = 34.0 } ]
//! ```

use serde::{Deserialize, Serialize};

use crate::{ModelError, Profile, ProfilePoint, Variant};

/// The catalog file format version this build reads and writes.
pub const CATALOG_SCHEMA: u32 = 1;

/// A catalog as stored on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub schema: u32,
    #[serde(default, rename = "variant")]
    pub variants: Vec<CatalogVariant>,
}

/// One variant entry of a catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogVariant {
    pub name: String,
    /// Task accuracy in the unit of the catalog (e.g. ImageNet top-1 in [0, 1]).
    pub accuracy: f64,
    /// Seconds from starting a replica until it serves (cold start).
    pub load_time_s: f64,
    /// GPU memory one replica holds, in MiB (0 for CPU-only variants).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gpu_mem_mb: f64,
    /// Where the figures come from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    pub points: Vec<ProfilePoint>,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl Catalog {
    /// Parses a catalog; the error names the line and column of the first problem.
    pub fn from_toml_str(text: &str) -> Result<Catalog, ModelError> {
        let catalog: Catalog =
            toml::from_str(text).map_err(|e| ModelError::Catalog(e.to_string()))?;
        if catalog.schema != CATALOG_SCHEMA {
            return Err(ModelError::Catalog(format!(
                "schema {} is not supported (this build reads schema {CATALOG_SCHEMA})",
                catalog.schema
            )));
        }
        for (i, v) in catalog.variants.iter().enumerate() {
            if catalog.variants[..i].iter().any(|w| w.name == v.name) {
                return Err(ModelError::Catalog(format!(
                    "variant `{}` appears twice",
                    v.name
                )));
            }
            v.to_variant()?;
        }
        Ok(catalog)
    }

    /// Serialises the catalog in the format `from_toml_str` reads.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# catalog could not be written: {e}\n"))
    }

    /// Looks a variant up by name.
    pub fn get(&self, name: &str) -> Option<&CatalogVariant> {
        self.variants.iter().find(|v| v.name == name)
    }
}

impl CatalogVariant {
    /// Validates the entry and builds the domain variant with its fitted profile.
    pub fn to_variant(&self) -> Result<Variant, ModelError> {
        let bad = |problem: String| ModelError::BadVariant {
            variant: self.name.clone(),
            problem,
        };
        if self.name.trim().is_empty() {
            return Err(bad("name must not be empty".into()));
        }
        if !self.accuracy.is_finite() {
            return Err(bad(format!(
                "accuracy must be finite, got {}",
                self.accuracy
            )));
        }
        if !(self.load_time_s.is_finite() && self.load_time_s >= 0.0) {
            return Err(bad(format!(
                "load_time_s must be >= 0, got {}",
                self.load_time_s
            )));
        }
        if !(self.gpu_mem_mb.is_finite() && self.gpu_mem_mb >= 0.0) {
            return Err(bad(format!(
                "gpu_mem_mb must be >= 0, got {}",
                self.gpu_mem_mb
            )));
        }
        let profile = Profile::new(self.points.clone()).map_err(|e| bad(e.to_string()))?;
        Ok(Variant {
            name: self.name.clone(),
            accuracy: self.accuracy,
            load_time_s: self.load_time_s,
            gpu_mem_mb: self.gpu_mem_mb,
            profile,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
schema = 1
[[variant]]
name = "small"
accuracy = 0.7
load_time_s = 2.0
points = [ { batch = 1, cores = 1, p99_ms = 20.0 }, { batch = 4, cores = 2, p99_ms = 40.0, mean_ms = 30.0 } ]
"#;

    #[test]
    fn round_trips() {
        let catalog = Catalog::from_toml_str(SAMPLE).expect("parse");
        assert_eq!(catalog.variants.len(), 1);
        let again = Catalog::from_toml_str(&catalog.to_toml_string()).expect("reparse");
        assert_eq!(catalog, again);
    }

    #[test]
    fn reports_position_of_unknown_key() {
        let text = SAMPLE.replace("load_time_s", "load_time");
        let err = Catalog::from_toml_str(&text)
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("line 6"), "{err}");
        assert!(err.contains("load_time"), "{err}");
    }

    #[test]
    fn rejects_duplicates_and_bad_schema() {
        let twice = format!(
            "{SAMPLE}{}",
            &SAMPLE[SAMPLE.find("[[variant]]").unwrap_or(0)..]
        );
        assert!(
            Catalog::from_toml_str(&twice)
                .expect_err("dup")
                .to_string()
                .contains("twice")
        );
        let schema = SAMPLE.replace("schema = 1", "schema = 9");
        assert!(
            Catalog::from_toml_str(&schema)
                .expect_err("schema")
                .to_string()
                .contains("schema 9")
        );
    }
}
