//! Finding plugins: file names to backend names, the directories searched in order, and
//! the [`PluginHost`] that loads each file once (after the trust checks and a trial load).

use super::ffi::load_library;
use super::trust::open_trusted;
use super::*;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// A plugin found by [`PluginHost::discover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Name derived from the file name (see [`plugin_name`]).
    pub name: String,
    pub path: PathBuf,
}

/// The backend name of a plugin file: the file name without `lib`, `infadapt_plugin_` and
/// `.so` (`libinfadapt_plugin_sim.so` → `sim`, `libecho.so` → `echo`).
pub fn plugin_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_suffix(".so")?;
    let stem = stem.strip_prefix("lib").unwrap_or(stem);
    let stem = stem.strip_prefix("infadapt_plugin_").unwrap_or(stem);
    (!stem.is_empty()).then(|| stem.to_owned())
}

/// The file [`PluginHost::library`] would load for `name`: the first directory holding a
/// file whose [`plugin_name`] is `name` (the first such file by name). Reads directories
/// only; loads nothing.
pub fn find_plugin_file(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter().find_map(|dir| {
        let entries = std::fs::read_dir(dir).ok()?;
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| plugin_name(p).as_deref() == Some(name))
            .min()
    })
}

/// Libraries mapped so far, by canonical path; entries are never removed.
pub(super) fn registry() -> &'static Mutex<HashMap<PathBuf, Arc<LoadedLibrary>>> {
    static LIBRARIES: OnceLock<Mutex<HashMap<PathBuf, Arc<LoadedLibrary>>>> = OnceLock::new();
    LIBRARIES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Finds and loads plugins from a list of directories.
#[derive(Debug)]
pub struct PluginHost {
    dirs: Vec<PathBuf>,
    allowed_owners: Vec<u32>,
    /// Tried in a child process before it is mapped here, when set.
    trial: Option<TrialLoad>,
    loaded: Mutex<BTreeMap<String, Arc<LoadedLibrary>>>,
}

impl PluginHost {
    /// A host looking in `dirs` (in order), accepting files owned by root or `service_uid`.
    pub fn new(dirs: Vec<PathBuf>, service_uid: Option<u32>) -> PluginHost {
        let mut allowed_owners = vec![0];
        allowed_owners.extend(service_uid.filter(|&uid| uid != 0));
        PluginHost {
            dirs,
            allowed_owners,
            trial: None,
            loaded: Mutex::new(BTreeMap::new()),
        }
    }

    /// Replaces the owners (uids) a plugin file and its directory may have.
    pub fn with_allowed_owners(mut self, owners: Vec<u32>) -> PluginHost {
        self.allowed_owners = owners;
        self
    }

    /// Tries each library in a child process ([`TrialLoad`]) before mapping it here.
    pub fn with_trial_load(mut self, trial: Option<TrialLoad>) -> PluginHost {
        self.trial = trial;
        self
    }

    /// The directories searched.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Loads every `*.so` in the directories (sorted by file name within each), returning
    /// what loaded and why the rest was refused. Names are unique: a later file with a name
    /// already loaded is reported as [`HostError::DuplicateName`].
    pub fn discover(&self) -> Vec<Result<PluginInfo, HostError>> {
        let mut outcomes = Vec::new();
        for dir in &self.dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(source) => {
                    outcomes.push(Err(HostError::ReadDir {
                        dir: dir.clone(),
                        source,
                    }));
                    continue;
                }
            };
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| plugin_name(p).is_some())
                .collect();
            paths.sort();
            for path in paths {
                outcomes.push(self.load(&path).map(|lib| PluginInfo {
                    name: lib.name.clone(),
                    path: lib.path.clone(),
                }));
            }
        }
        outcomes
    }

    /// Loads one library (or returns it if this host already has it under its name).
    ///
    /// # Errors
    ///
    /// Any refusal listed in the module docs, naming the file.
    pub fn load(&self, path: &Path) -> Result<Arc<LoadedLibrary>, HostError> {
        let name = plugin_name(path).ok_or_else(|| HostError::Load {
            path: path.to_owned(),
            message: "a plugin file name must end in `.so`".into(),
        })?;
        let trusted = open_trusted(path, &self.allowed_owners)?;
        let canonical = trusted.canonical.clone();
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lib) = loaded.get(&name) {
            if lib.path == canonical {
                return Ok(lib.clone());
            }
            return Err(HostError::DuplicateName {
                name,
                path: canonical,
                first: lib.path.clone(),
            });
        }
        let mapped = registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&canonical);
        if let (Some(trial), false) = (&self.trial, mapped) {
            trial.run(&canonical)?;
        }
        let lib = load_library(trusted, name.clone())?;
        loaded.insert(name, lib.clone());
        Ok(lib)
    }

    /// The library called `name`, loading it from the directories when needed.
    ///
    /// # Errors
    ///
    /// [`HostError::NotFound`] when no file has that name, or why it was refused.
    pub fn library(&self, name: &str) -> Result<Arc<LoadedLibrary>, HostError> {
        if let Some(lib) = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(lib.clone());
        }
        if let Some(path) = find_plugin_file(&self.dirs, name) {
            return self.load(&path);
        }
        Err(HostError::NotFound {
            name: name.to_owned(),
            dirs: if self.dirs.is_empty() {
                "(no plugin directories configured)".to_owned()
            } else {
                self.dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
    }
}
