//! Profile catalogs: a TOML file listing variants with their accuracy, cold-start time,
//! resource needs and measured profile points.
//!
//! ```toml
//! schema = 1
//! [[variant]]
//! name = "resnet18"
//! accuracy = 0.69
//! load_time_s = 3.0
//! points = [ { batch = 1, cores = 2, p99_ms = 80.0, throughput_rps = 34.0 } ]
//! ```
//!
//! `gpu_mem_mb` is the GPU memory one replica holds, in MiB: a number (left out: 0, a
//! CPU-only variant), or `"unmeasured"` when the variant may use a GPU but its memory was
//! not measured (what `infadaptd profile` writes without an NVIDIA driver). The planner
//! never reads an unmeasured figure as 0 where GPU memory counts.

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
    /// GPU memory one replica holds, in MiB (0 for CPU-only variants); `None` when it was
    /// not measured (`gpu_mem_mb = "unmeasured"` in the file).
    #[serde(
        default = "cpu_only",
        skip_serializing_if = "is_cpu_only",
        with = "gpu_memory"
    )]
    pub gpu_mem_mb: Option<f64>,
    /// Where the figures come from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    pub points: Vec<ProfilePoint>,
}

/// The word a catalog uses for GPU memory that was not measured.
pub const UNMEASURED: &str = "unmeasured";

fn cpu_only() -> Option<f64> {
    Some(0.0)
}

fn is_cpu_only(v: &Option<f64>) -> bool {
    *v == Some(0.0)
}

/// `gpu_mem_mb` in a catalog: a number of MiB or the string `"unmeasured"` (`None`).
mod gpu_memory {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    use super::UNMEASURED;

    pub fn serialize<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(mb) => serializer.serialize_f64(*mb),
            None => serializer.serialize_str(UNMEASURED),
        }
    }

    struct GpuMemory;

    impl Visitor<'_> for GpuMemory {
        type Value = Option<f64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a number of MiB or \"{UNMEASURED}\"")
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<f64>, E> {
            Ok(Some(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<f64>, E> {
            Ok(Some(v as f64))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<f64>, E> {
            Ok(Some(v as f64))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<f64>, E> {
            if v == UNMEASURED {
                Ok(None)
            } else {
                Err(E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<f64>, D::Error> {
        deserializer.deserialize_any(GpuMemory)
    }
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
        if let Some(mb) = self.gpu_mem_mb
            && !(mb.is_finite() && mb >= 0.0)
        {
            return Err(bad(format!("gpu_mem_mb must be >= 0, got {mb}")));
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

    #[test]
    fn gpu_memory_is_a_number_absent_for_cpu_only_or_unmeasured() {
        let cpu = Catalog::from_toml_str(SAMPLE).expect("parse");
        assert_eq!(cpu.variants[0].gpu_mem_mb, Some(0.0));
        assert!(!cpu.to_toml_string().contains("gpu_mem_mb"));

        let measured = SAMPLE.replace("load_time_s = 2.0", "load_time_s = 2.0\ngpu_mem_mb = 1536");
        let measured = Catalog::from_toml_str(&measured).expect("parse");
        assert_eq!(measured.variants[0].gpu_mem_mb, Some(1536.0));
        let again = Catalog::from_toml_str(&measured.to_toml_string()).expect("reparse");
        assert_eq!(again, measured);

        let text = SAMPLE.replace(
            "load_time_s = 2.0",
            "load_time_s = 2.0\ngpu_mem_mb = \"unmeasured\"",
        );
        let unmeasured = Catalog::from_toml_str(&text).expect("parse");
        assert_eq!(unmeasured.variants[0].gpu_mem_mb, None);
        let written = unmeasured.to_toml_string();
        assert!(written.contains("gpu_mem_mb = \"unmeasured\""), "{written}");
        let again = Catalog::from_toml_str(&written).expect("reparse");
        assert_eq!(again, unmeasured);
        let variant = again.variants[0].to_variant().expect("variant");
        assert_eq!(variant.gpu_mem_mb, None);

        // Through JSON too (the plugins receive catalog entries as JSON).
        let json = serde_json::to_string(&unmeasured.variants[0]).expect("json");
        assert!(json.contains("\"gpu_mem_mb\":\"unmeasured\""), "{json}");
        let back: CatalogVariant = serde_json::from_str(&json).expect("from json");
        assert_eq!(back, unmeasured.variants[0]);
    }

    #[test]
    fn a_bad_gpu_memory_names_its_line_and_the_accepted_forms() {
        let text = SAMPLE.replace(
            "load_time_s = 2.0",
            "load_time_s = 2.0\ngpu_mem_mb = \"lots\"",
        );
        let err = Catalog::from_toml_str(&text).expect_err("bad").to_string();
        assert!(err.contains("line 7"), "{err}");
        assert!(err.contains("unmeasured"), "{err}");
        let negative = SAMPLE.replace("load_time_s = 2.0", "load_time_s = 2.0\ngpu_mem_mb = -5");
        let err = Catalog::from_toml_str(&negative)
            .expect_err("negative")
            .to_string();
        assert!(err.contains("gpu_mem_mb must be >= 0"), "{err}");
    }
}
