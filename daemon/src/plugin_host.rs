//! The plugin host: finds backend plugins (`*.so`) in the configured directories, refuses
//! unsafe or incompatible ones, drives loaded and linked-in backends alike through
//! [`BackendInstance`], and guards every call ([`GuardedBackend`]).
//!
//! Loading. A library is refused before `dlopen` when it, or any directory on its path, is
//! group- or world-writable (a sticky directory excepted) or owned by someone other than
//! root or the service user, or when a symbolic link leads out of its directory
//! (`open_trusted`); the file checked is mapped by descriptor. With a [`TrialLoad`] it is
//! first mapped in a child process and refused when its initialisers do not finish there.
//! It is refused after
//! `dlopen` when its entry symbol is missing, its `abi_version` is outside
//! [`OLDEST_ABI_VERSION`]..=[`ABI_VERSION`], its `struct_size` is smaller than the table of
//! the version it declares or a version-1 entry in the table is null. Only the first 8
//! bytes of the vtable are read before the version check. A version-1 plugin has no config
//! check ([`LoadedLibrary::check_config`] answers `None`); version 2 may leave it null.
//!
//! Never unloading. A library stays mapped for the life of the process: its `Library`
//! handle is leaked and registered in a process-wide table keyed by canonical path. A plugin
//! call that timed out may still be running on a blocking thread, a plugin may have started
//! threads of its own, and `dlclose` under running code is a crash. Loading the same path
//! again (a reload) reuses the mapped library, so upgrading a plugin's file takes a restart.
//!
//! Calling. The ABI is synchronous; [`GuardedBackend`] runs each call on tokio's blocking
//! pool with a timeout. A failed, panicking or timed-out call marks the backend *degraded*:
//! further calls are refused for an exponentially growing backoff; a timed-out call leaves
//! the instance *hung* and it is not called again until that call returns. After a panic
//! the instance is recreated when a factory is known (plugins created through
//! [`GuardedBackend::create_plugin`]). Because a hung call holds a blocking thread, the
//! runtime should be shut down with `Runtime::shutdown_timeout`, not by dropping it.
#![allow(unsafe_code)]

mod exit_guard;
mod trial_load;

use exit_guard::LoadInFlight;
pub use exit_guard::{PLUGIN_EXIT_STATUS, exit_process, guard_exits, loads_in_flight};
pub use trial_load::{PROBE_COMMAND, TrialLoad};

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_int;
use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use infadapt_plugin_abi::{
    ABI_VERSION, ApplyFn, ApplyReport, BackendError, BackendInstance, CheckConfigFn, ConfigCheck,
    ConfigProblem, CreateFn, Description, DestroyFn, ENTRY_SYMBOL, EntryFn, FreeBufferFn,
    HealthReport, OLDEST_ABI_VERSION, PlanMessage, PluginBuffer, PluginHandle, PluginObservation,
    PluginVTable, QueryFn, SCHEMA_VERSION, STATUS_ERROR, STATUS_INVALID_INPUT, STATUS_OK,
    STATUS_PANIC, STATUS_UNAVAILABLE, VTABLE_V1_SIZE,
};
use serde::de::DeserializeOwned;

/// Default time limit of one plugin call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// While a backend stays degraded, a changed error is warned about at most this often.
pub const REWARN_INTERVAL: Duration = Duration::from_secs(60);

/// Largest answer accepted from a plugin, bytes.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The calls a backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Create,
    CheckConfig,
    Describe,
    Observe,
    Apply,
    Health,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Create => "create",
            Call::CheckConfig => "check_config",
            Call::Describe => "describe",
            Call::Observe => "observe",
            Call::Apply => "apply",
            Call::Health => "health",
        })
    }
}

/// Where a backend's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendOrigin {
    /// Loaded from this shared library.
    Plugin(PathBuf),
    /// Linked into the daemon.
    Linked,
}

impl fmt::Display for BackendOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendOrigin::Plugin(path) => write!(f, "plugin {}", path.display()),
            BackendOrigin::Linked => f.write_str("linked in"),
        }
    }
}

fn seconds(d: &Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else if s >= 1.0 {
        format!("{s:.1} s")
    } else {
        format!("{} ms", d.as_millis())
    }
}

fn status_name(code: &i32) -> &'static str {
    match *code {
        STATUS_OK => "ok",
        STATUS_ERROR => "error",
        STATUS_INVALID_INPUT => "invalid input",
        STATUS_PANIC => "panic",
        STATUS_UNAVAILABLE => "unavailable",
        _ => "unknown status",
    }
}

/// Everything that goes wrong loading or calling a backend.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("plugin directory {}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {}: {source}", path.display())]
    Metadata {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {} refused: {reason}", path.display())]
    Unsafe { path: PathBuf, reason: String },
    #[error("plugin {} could not be loaded: {message}", path.display())]
    Load { path: PathBuf, message: String },
    #[error("plugin {} refused: it exports no `{ENTRY_SYMBOL}` symbol ({message})", path.display())]
    MissingEntry { path: PathBuf, message: String },
    #[error(
        "plugin {} refused: built for plugin ABI version {found}, this daemon speaks versions {OLDEST_ABI_VERSION} to {expected}",
        path.display()
    )]
    AbiVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "plugin {} refused: its vtable is {found} bytes, this daemon needs at least {expected}",
        path.display()
    )]
    VTableTooSmall {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("plugin {} refused: {problem}", path.display())]
    BadVTable { path: PathBuf, problem: String },
    #[error("plugin {} is named `{name}` like {}, which was found first", path.display(), first.display())]
    DuplicateName {
        name: String,
        path: PathBuf,
        first: PathBuf,
    },
    #[error("no plugin named `{name}` in {dirs}")]
    NotFound { name: String, dirs: String },
    #[error("backend `{backend}` ({origin}): {call} failed ({}): {message}", status_name(.code))]
    Failed {
        backend: String,
        origin: BackendOrigin,
        call: Call,
        code: i32,
        message: String,
    },
    #[error("backend `{backend}` ({origin}): {call} panicked: {message}")]
    Panicked {
        backend: String,
        origin: BackendOrigin,
        call: Call,
        message: String,
    },
    #[error("backend `{backend}` ({origin}): {call} timed out after {}", seconds(.timeout))]
    TimedOut {
        backend: String,
        origin: BackendOrigin,
        call: Call,
        timeout: Duration,
    },
    #[error(
        "backend `{backend}` ({origin}): {call} not attempted: its {hung_call} has been hung for {}",
        seconds(.hung_for)
    )]
    Hung {
        backend: String,
        origin: BackendOrigin,
        call: Call,
        hung_call: Call,
        hung_for: Duration,
    },
    #[error(
        "backend `{backend}` ({origin}) is degraded: {call} not attempted for another {}; last error: {last_error}",
        seconds(.retry_in)
    )]
    Backoff {
        backend: String,
        origin: BackendOrigin,
        call: Call,
        retry_in: Duration,
        last_error: String,
    },
    #[error("backend `{backend}` ({origin}): {call} not attempted: {reason}")]
    Unusable {
        backend: String,
        origin: BackendOrigin,
        call: Call,
        reason: String,
    },
}

impl HostError {
    /// Whether the error came from the plugin panicking.
    pub fn is_panic(&self) -> bool {
        matches!(self, HostError::Panicked { .. })
    }

    /// Whether the error is a call that ran past its time limit.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HostError::TimedOut { .. })
    }
}

/// A version-1 table as read from foreign memory: entries may be null, so they are
/// `Option`s (same layout as the nullable C function pointers).
#[repr(C)]
struct RawVTableV1 {
    abi_version: u32,
    struct_size: u32,
    create: Option<CreateFn>,
    destroy: Option<DestroyFn>,
    describe: Option<QueryFn>,
    observe: Option<QueryFn>,
    apply: Option<ApplyFn>,
    health: Option<QueryFn>,
    free_buffer: Option<FreeBufferFn>,
}

/// A table of this version: version 1's, then the entries appended since.
#[repr(C)]
struct RawVTable {
    v1: RawVTableV1,
    check_config: Option<CheckConfigFn>,
}

/// The first two fields, the only ones read before the version check.
#[repr(C)]
struct VTableHeader {
    abi_version: u32,
    struct_size: u32,
}

const _: () = assert!(std::mem::size_of::<RawVTable>() == std::mem::size_of::<PluginVTable>());
const _: () = assert!(std::mem::size_of::<RawVTableV1>() == VTABLE_V1_SIZE as usize);

/// The checked entry points of a loaded library.
struct Entries {
    abi_version: u32,
    struct_size: u32,
    create: CreateFn,
    destroy: DestroyFn,
    describe: QueryFn,
    observe: QueryFn,
    apply: ApplyFn,
    health: QueryFn,
    free_buffer: FreeBufferFn,
    /// ABI version 2 and later, when the plugin has a check.
    check_config: Option<CheckConfigFn>,
}

/// A plugin library mapped into the process; it is never unmapped.
pub struct LoadedLibrary {
    name: String,
    path: PathBuf,
    vtable: Entries,
    _library: &'static libloading::os::unix::Library,
}

impl fmt::Debug for LoadedLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedLibrary")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

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
fn registry() -> &'static Mutex<HashMap<PathBuf, Arc<LoadedLibrary>>> {
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
            trial.run(&canonical).map_err(|message| HostError::Load {
                path: canonical.clone(),
                message,
            })?;
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

/// A plugin file opened for loading: its canonical path and the open file the checks were
/// made on (loaded through `/proc/self/fd`, so the file mapped is the file checked).
struct TrustedFile {
    canonical: PathBuf,
    file: std::fs::File,
}

/// Checks a plugin file and the whole path to it, then opens it without following a
/// symbolic link. Refused: a file that is not a regular file, is group- or world-writable
/// or is owned by anyone but `allowed_owners`; a file that a symbolic link leads to
/// outside the directory it was found in; any directory on the way from `/` that is owned
/// by someone else or is group- or world-writable without the sticky bit (anyone who can
/// rename entries there could swap the plugin). Ownership and mode are read from the open
/// file, so a file replaced after the path checks is not the one loaded.
fn open_trusted(path: &Path, allowed_owners: &[u32]) -> Result<TrustedFile, HostError> {
    use std::os::unix::fs::OpenOptionsExt;

    let metadata_error = |source| HostError::Metadata {
        path: path.to_owned(),
        source,
    };
    let canonical = path.canonicalize().map_err(metadata_error)?;
    let refuse = |reason: String| HostError::Unsafe {
        path: path.to_owned(),
        reason,
    };
    let owners = || {
        allowed_owners
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let found_in = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .canonicalize()
        .map_err(metadata_error)?;
    if canonical.parent() != Some(found_in.as_path()) {
        return Err(refuse(format!(
            "it is a symbolic link to {}, outside its directory {}; install the file itself there",
            canonical.display(),
            found_in.display()
        )));
    }
    for dir in canonical.ancestors().skip(1) {
        let meta = std::fs::metadata(dir).map_err(metadata_error)?;
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(refuse(format!(
                "the directory {} on its path is group- or world-writable (mode {:o}); run `chmod go-w` on it",
                dir.display(),
                mode & 0o7777
            )));
        }
        if meta.uid() != 0 && !allowed_owners.contains(&meta.uid()) {
            return Err(refuse(format!(
                "the directory {} on its path is owned by uid {}, not by uid {} (root or the service user)",
                dir.display(),
                meta.uid(),
                owners()
            )));
        }
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&canonical)
        .map_err(metadata_error)?;
    let meta = file.metadata().map_err(metadata_error)?;
    if !meta.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "the file is group- or world-writable (mode {:o}); run `chmod go-w` on it",
            mode & 0o7777
        )));
    }
    if !allowed_owners.contains(&meta.uid()) {
        return Err(refuse(format!(
            "the file is owned by uid {}, not by uid {} (root or the service user)",
            meta.uid(),
            owners()
        )));
    }
    Ok(TrustedFile { canonical, file })
}

/// The child side of a [`TrialLoad`]: maps `library` (running its initialisers) and
/// answers 0, or 1 with the loader's message on stderr.
pub fn trial_load_main(library: &Path) -> u8 {
    let flags: c_int = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
    // SAFETY: mapping runs the library's initialisers, in this child process only, which
    // exists to find out whether they finish.
    match unsafe { libloading::os::unix::Library::open(Some(library), flags) } {
        Ok(mapped) => {
            std::mem::forget(mapped);
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Maps the library (or returns the already mapped one) and validates its vtable.
fn load_library(trusted: TrustedFile, name: String) -> Result<Arc<LoadedLibrary>, HostError> {
    use std::os::fd::AsRawFd;

    let mut registry = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(lib) = registry.get(&trusted.canonical) {
        return Ok(lib.clone());
    }
    let path = trusted.canonical.clone();
    // The open file the checks were made on, by descriptor: a file swapped in at the path
    // after the checks is not the one mapped. A load that fails closes the descriptor.
    let by_descriptor = PathBuf::from(format!("/proc/self/fd/{}", trusted.file.as_raw_fd()));
    let flags: c_int = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
    let _loading = LoadInFlight::enter();
    // SAFETY: mapping runs the library's initialisers; the file passed the ownership and
    // permission checks, which is the trust decision for running its code.
    let library = unsafe { libloading::os::unix::Library::open(Some(&by_descriptor), flags) }
        .map_err(|e| HostError::Load {
            path: path.clone(),
            message: e.to_string().replace(
                &by_descriptor.display().to_string(),
                &path.display().to_string(),
            ),
        })?;
    // Leaked on purpose: a library is never unloaded (see the module docs). A refused
    // library stays mapped too, since its initialisers may have started code. Its
    // descriptor stays open as long: the loader knows the library by the name
    // `/proc/self/fd/N` and would hand it out again for a later file opened as N.
    let _descriptor: &'static std::fs::File = Box::leak(Box::new(trusted.file));
    let library: &'static libloading::os::unix::Library = Box::leak(Box::new(library));
    // SAFETY: the symbol's type is fixed by the ABI (`const PluginVTable *(void)`).
    let entry: EntryFn = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL.as_bytes()) }
        .map(|symbol| *symbol)
        .map_err(|e| HostError::MissingEntry {
            path: path.clone(),
            message: e.to_string(),
        })?;
    // SAFETY: calling the entry point as the ABI defines it; it takes no arguments.
    let table = unsafe { entry() };
    if table.is_null() {
        return Err(HostError::BadVTable {
            path,
            problem: format!("`{ENTRY_SYMBOL}` returned a null vtable"),
        });
    }
    // SAFETY: every vtable version starts with two u32 (`abi_version`, `struct_size`);
    // only those 8 bytes are read before the version is known.
    let header = unsafe { std::ptr::read_unaligned(table.cast::<VTableHeader>()) };
    if !(OLDEST_ABI_VERSION..=ABI_VERSION).contains(&header.abi_version) {
        return Err(HostError::AbiVersion {
            path,
            found: header.abi_version,
            expected: ABI_VERSION,
        });
    }
    let expected = if header.abi_version == 1 {
        VTABLE_V1_SIZE
    } else {
        std::mem::size_of::<PluginVTable>() as u32
    };
    if header.struct_size < expected {
        return Err(HostError::VTableTooSmall {
            path,
            found: header.struct_size,
            expected,
        });
    }
    let (raw, check_config) = if header.abi_version == 1 {
        // SAFETY: the plugin declared version 1 and at least a version-1 table's bytes;
        // entries are read as nullable function pointers and checked below.
        let v1 = unsafe { std::ptr::read_unaligned(table.cast::<RawVTableV1>()) };
        (v1, None)
    } else {
        // SAFETY: the plugin declared version 2 and at least this many bytes; entries are
        // read as nullable function pointers and checked below.
        let raw = unsafe { std::ptr::read_unaligned(table.cast::<RawVTable>()) };
        (raw.v1, raw.check_config)
    };
    let missing = |entry: &str| HostError::BadVTable {
        path: path.clone(),
        problem: format!("vtable entry `{entry}` is null"),
    };
    let vtable = Entries {
        abi_version: raw.abi_version,
        struct_size: raw.struct_size,
        create: raw.create.ok_or_else(|| missing("create"))?,
        destroy: raw.destroy.ok_or_else(|| missing("destroy"))?,
        describe: raw.describe.ok_or_else(|| missing("describe"))?,
        observe: raw.observe.ok_or_else(|| missing("observe"))?,
        apply: raw.apply.ok_or_else(|| missing("apply"))?,
        health: raw.health.ok_or_else(|| missing("health"))?,
        free_buffer: raw.free_buffer.ok_or_else(|| missing("free_buffer"))?,
        check_config,
    };
    let lib = Arc::new(LoadedLibrary {
        name,
        path: path.clone(),
        vtable,
        _library: library,
    });
    registry.insert(path, lib.clone());
    Ok(lib)
}

impl LoadedLibrary {
    /// The backend name (from the file name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The canonical path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `abi_version` and `struct_size` the plugin declared.
    pub fn declared_abi(&self) -> (u32, u32) {
        (self.vtable.abi_version, self.vtable.struct_size)
    }

    fn origin(&self) -> BackendOrigin {
        BackendOrigin::Plugin(self.path.clone())
    }

    /// Copies a buffer the plugin filled and gives it back to the plugin's `free_buffer`.
    fn take_buffer(&self, buffer: PluginBuffer) -> Result<Vec<u8>, String> {
        if buffer.ptr.is_null() {
            return Ok(Vec::new());
        }
        let result = if buffer.len > MAX_ANSWER_BYTES {
            Err(format!(
                "answer of {} bytes exceeds the limit of {MAX_ANSWER_BYTES}",
                buffer.len
            ))
        } else {
            // SAFETY: the plugin filled `ptr` with `len` readable bytes (ABI contract); they
            // stay valid until the `free_buffer` below.
            Ok(unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.len) }.to_vec())
        };
        // SAFETY: the buffer was filled by this library and is released exactly once.
        unsafe { (self.vtable.free_buffer)(buffer) };
        result
    }

    /// Turns a status and the two buffers into the answer bytes or a backend error.
    fn finish(
        &self,
        status: i32,
        out: PluginBuffer,
        error: PluginBuffer,
    ) -> Result<Vec<u8>, BackendError> {
        let out = self.take_buffer(out);
        let error = self.take_buffer(error);
        if status != STATUS_OK {
            let message = match error {
                Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
                Ok(_) => "(the plugin gave no message)".to_owned(),
                Err(problem) => problem,
            };
            return Err(BackendError {
                code: status,
                message,
            });
        }
        out.map_err(BackendError::failed)
    }

    /// Runs the plugin's config check on `config_json` (what `create` would get), on the
    /// calling thread: `Ok(None)` when the plugin has none (ABI version 1, or a null entry).
    ///
    /// # Errors
    ///
    /// The call failed or panicked, or its answer is not a config check.
    pub fn check_config(
        self: &Arc<Self>,
        config_json: &str,
    ) -> Result<Option<Vec<ConfigProblem>>, HostError> {
        let Some(check) = self.vtable.check_config else {
            return Ok(None);
        };
        let mut out = PluginBuffer::empty();
        let mut error = PluginBuffer::empty();
        // SAFETY: the config bytes are valid for the call; `out` and `error` are writable
        // slots owned by this frame.
        let status = unsafe {
            check(
                config_json.as_ptr(),
                config_json.len(),
                &mut out,
                &mut error,
            )
        };
        self.finish(status, out, error)
            .and_then(|bytes| decode::<ConfigCheck>(&bytes))
            .map(|check| Some(check.problems))
            .map_err(|e| backend_error(&self.name, &self.origin(), Call::CheckConfig, e))
    }

    /// Creates an instance from its JSON config (synchronously; a guarded variant is
    /// [`GuardedBackend::create_plugin`]).
    ///
    /// # Errors
    ///
    /// [`HostError::Failed`] or [`HostError::Panicked`] with the plugin's message.
    pub fn create(self: &Arc<Self>, config_json: &str) -> Result<PluginInstance, HostError> {
        self.create_instance(config_json)
            .map_err(|e| backend_error(&self.name, &self.origin(), Call::Create, e))
    }

    fn create_instance(
        self: &Arc<Self>,
        config_json: &str,
    ) -> Result<PluginInstance, BackendError> {
        let mut handle: PluginHandle = std::ptr::null_mut();
        let mut error = PluginBuffer::empty();
        // SAFETY: the config bytes are valid for the call; `handle` and `error` are
        // writable slots owned by this frame.
        let status = unsafe {
            (self.vtable.create)(
                config_json.as_ptr(),
                config_json.len(),
                &mut handle,
                &mut error,
            )
        };
        self.finish(status, PluginBuffer::empty(), error)?;
        if handle.is_null() {
            return Err(BackendError::failed(
                "create succeeded but gave a null handle",
            ));
        }
        let mut instance = PluginInstance {
            library: self.clone(),
            handle,
            description: Description {
                schema: SCHEMA_VERSION,
                name: self.name.clone(),
                version: String::new(),
                capabilities: Default::default(),
                gpu_mem_mb: None,
            },
        };
        // On failure `instance` is dropped, which destroys the handle.
        instance.description = instance.query(self.vtable.describe)?;
        Ok(instance)
    }
}

fn backend_error(backend: &str, origin: &BackendOrigin, call: Call, e: BackendError) -> HostError {
    if e.code == STATUS_PANIC {
        HostError::Panicked {
            backend: backend.to_owned(),
            origin: origin.clone(),
            call,
            message: e.message,
        }
    } else {
        HostError::Failed {
            backend: backend.to_owned(),
            origin: origin.clone(),
            call,
            code: e.code,
            message: e.message,
        }
    }
}

/// Parses a plugin's JSON answer, refusing a `schema` this build does not read (the fuzz
/// target `abi_from_plugin` drives it with arbitrary bytes).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BackendError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| BackendError::failed(format!("the answer is not valid JSON: {e}")))?;
    // serde reads a struct from an array too (`[2]` is a schema-2 answer), which would
    // pass the schema check below unseen: every answer is an object.
    if !value.is_object() {
        return Err(BackendError::failed(
            "the answer is not a JSON object".to_owned(),
        ));
    }
    if let Some(schema) = value.get("schema")
        && schema.as_u64() != Some(u64::from(SCHEMA_VERSION))
    {
        return Err(BackendError::failed(format!(
            "the answer has schema {schema}; this daemon reads schema {SCHEMA_VERSION}"
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| BackendError::failed(format!("the answer does not fit the schema: {e}")))
}

/// One instance created by a loaded plugin; destroyed when dropped.
pub struct PluginInstance {
    library: Arc<LoadedLibrary>,
    handle: PluginHandle,
    description: Description,
}

// SAFETY: the ABI lets a handle be used from any thread as long as calls never overlap;
// every call takes `&mut self` (or happens in `drop`), so they cannot.
unsafe impl Send for PluginInstance {}

impl fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginInstance")
            .field("library", &self.library.path)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl PluginInstance {
    /// The library the instance comes from.
    pub fn library(&self) -> &Arc<LoadedLibrary> {
        &self.library
    }

    fn query<T: DeserializeOwned>(&mut self, function: QueryFn) -> Result<T, BackendError> {
        let mut out = PluginBuffer::empty();
        let mut error = PluginBuffer::empty();
        // SAFETY: `handle` is live (destroyed only in drop); both slots are writable and
        // owned by this frame.
        let status = unsafe { function(self.handle, &mut out, &mut error) };
        decode(&self.library.finish(status, out, error)?)
    }
}

impl BackendInstance for PluginInstance {
    fn describe(&self) -> Description {
        self.description.clone()
    }

    fn observe(&mut self) -> Result<PluginObservation, BackendError> {
        self.query(self.library.vtable.observe)
    }

    fn apply(&mut self, plan: &PlanMessage) -> Result<ApplyReport, BackendError> {
        let plan = serde_json::to_vec(plan)
            .map_err(|e| BackendError::failed(format!("cannot encode the plan: {e}")))?;
        let mut out = PluginBuffer::empty();
        let mut error = PluginBuffer::empty();
        // SAFETY: `handle` is live; the plan bytes are valid for the call; both slots are
        // writable and owned by this frame.
        let status = unsafe {
            (self.library.vtable.apply)(
                self.handle,
                plan.as_ptr(),
                plan.len(),
                &mut out,
                &mut error,
            )
        };
        decode(&self.library.finish(status, out, error)?)
    }

    fn health(&mut self) -> Result<HealthReport, BackendError> {
        self.query(self.library.vtable.health)
    }
}

impl Drop for PluginInstance {
    fn drop(&mut self) {
        // SAFETY: the handle came from this library's `create` and is destroyed once.
        unsafe { (self.library.vtable.destroy)(self.handle) };
    }
}

/// Time limits and backoff of a [`GuardedBackend`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallPolicy {
    /// Limit of one call.
    pub timeout: Duration,
    /// Backoff after the first failure; doubled after each further one.
    pub backoff_initial: Duration,
    /// Upper bound of the backoff.
    pub backoff_max: Duration,
}

impl Default for CallPolicy {
    fn default() -> CallPolicy {
        CallPolicy {
            timeout: DEFAULT_CALL_TIMEOUT,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Why and since when a backend is degraded.
#[derive(Debug, Clone, PartialEq)]
pub struct Degraded {
    pub since: Instant,
    pub last_error: String,
    /// Calls are refused until then.
    pub retry_at: Instant,
}

/// Counters and state of a guarded backend (exported as metrics by the service).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardStats {
    pub calls: u64,
    /// Calls that returned an error status (panics and timeouts not included).
    pub errors: u64,
    pub panics: u64,
    pub timeouts: u64,
    /// Calls refused because of backoff or a hung call.
    pub refused: u64,
    /// Instances recreated after a panic.
    pub restarts: u64,
    pub consecutive_failures: u32,
    pub degraded: Option<Degraded>,
}

/// Makes a fresh instance (used after a panic).
pub type InstanceFactory =
    Arc<dyn Fn() -> Result<Box<dyn BackendInstance>, BackendError> + Send + Sync>;

/// What a blocking call produced.
enum Answer {
    Observation(PluginObservation),
    Applied(ApplyReport),
    Health(HealthReport),
    Restarted,
}

type Outcome = (
    Option<Box<dyn BackendInstance>>,
    std::thread::Result<Result<Answer, BackendError>>,
);

struct HungCall {
    call: Call,
    since: Instant,
    job: tokio::task::JoinHandle<Outcome>,
}

/// A backend called through tokio's blocking pool with a time limit per call, turning
/// errors, panics and timeouts into [`HostError`]s naming the backend and the call, and
/// keeping it degraded with exponential backoff after a failure.
pub struct GuardedBackend {
    name: String,
    origin: BackendOrigin,
    policy: CallPolicy,
    description: Description,
    instance: Option<Box<dyn BackendInstance>>,
    hung: Option<HungCall>,
    factory: Option<InstanceFactory>,
    needs_restart: bool,
    stats: GuardStats,
    /// While degraded: when the next health probe may run (see [`GuardedBackend::call`]).
    next_probe: Option<Instant>,
    /// A health probe is running (its failure is logged quietly).
    probing: bool,
    /// When the last "backend degraded" warning was logged.
    warned_at: Option<Instant>,
}

impl fmt::Debug for GuardedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedBackend")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("policy", &self.policy)
            .field("hung", &self.hung.as_ref().map(|h| h.call))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl GuardedBackend {
    /// Guards an instance; its name is the one it describes.
    pub fn new(
        instance: Box<dyn BackendInstance>,
        origin: BackendOrigin,
        policy: CallPolicy,
    ) -> GuardedBackend {
        let description = instance.describe();
        GuardedBackend {
            name: description.name.clone(),
            origin,
            policy,
            description,
            instance: Some(instance),
            hung: None,
            factory: None,
            needs_restart: false,
            stats: GuardStats::default(),
            next_probe: None,
            probing: false,
            warned_at: None,
        }
    }

    /// Guards an instance of a loaded plugin.
    pub fn from_plugin(instance: PluginInstance, policy: CallPolicy) -> GuardedBackend {
        let origin = instance.library.origin();
        GuardedBackend::new(Box::new(instance), origin, policy)
    }

    /// Creates an instance of `library` on the blocking pool within the time limit, with a
    /// factory that recreates it from the same config after a panic.
    ///
    /// # Errors
    ///
    /// The plugin's error, panic or timeout in `create`.
    pub async fn create_plugin(
        library: Arc<LoadedLibrary>,
        config_json: String,
        policy: CallPolicy,
    ) -> Result<GuardedBackend, HostError> {
        let origin = library.origin();
        let name = library.name.clone();
        let factory: InstanceFactory = {
            let library = library.clone();
            Arc::new(move || {
                library
                    .create_instance(&config_json)
                    .map(|i| Box::new(i) as Box<dyn BackendInstance>)
            })
        };
        let make = factory.clone();
        let mut job =
            tokio::task::spawn_blocking(move || catch_unwind(AssertUnwindSafe(|| make())));
        let made = match tokio::time::timeout(policy.timeout, &mut job).await {
            Ok(Ok(made)) => made,
            Ok(Err(join)) => Err(Box::new(join.to_string()) as Box<dyn std::any::Any + Send>),
            Err(_) => {
                return Err(HostError::TimedOut {
                    backend: name,
                    origin,
                    call: Call::Create,
                    timeout: policy.timeout,
                });
            }
        };
        let instance = match made {
            Ok(Ok(instance)) => instance,
            Ok(Err(e)) => return Err(backend_error(&name, &origin, Call::Create, e)),
            Err(payload) => {
                return Err(HostError::Panicked {
                    backend: name,
                    origin,
                    call: Call::Create,
                    message: panic_message(payload.as_ref()),
                });
            }
        };
        let mut guarded = GuardedBackend::new(instance, origin, policy);
        guarded.factory = Some(factory);
        Ok(guarded)
    }

    /// Sets how to recreate the instance after a panic.
    pub fn with_factory(mut self, factory: InstanceFactory) -> GuardedBackend {
        self.factory = Some(factory);
        self
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its code comes from.
    pub fn origin(&self) -> &BackendOrigin {
        &self.origin
    }

    /// What it described at creation.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// Counters and degraded state.
    pub fn stats(&self) -> &GuardStats {
        &self.stats
    }

    /// Whether the last call failed (and calls are being backed off).
    pub fn is_degraded(&self) -> bool {
        self.stats.degraded.is_some()
    }

    /// Whether a timed-out call is still running.
    pub fn is_hung(&self) -> bool {
        self.hung.as_ref().is_some_and(|h| !h.job.is_finished())
    }

    /// What happened since the previous observe.
    ///
    /// # Errors
    ///
    /// See [`HostError`]: the backend's error, a panic, a timeout, or a refusal while hung
    /// or backing off.
    pub async fn observe(&mut self) -> Result<PluginObservation, HostError> {
        match self
            .call(Call::Observe, |b| b.observe().map(Answer::Observation))
            .await?
        {
            Answer::Observation(o) => Ok(o),
            _ => Err(self.mismatch(Call::Observe)),
        }
    }

    /// Reconciles the backend to `plan`.
    ///
    /// # Errors
    ///
    /// As for [`GuardedBackend::observe`].
    pub async fn apply(&mut self, plan: &PlanMessage) -> Result<ApplyReport, HostError> {
        let plan = plan.clone();
        match self
            .call(Call::Apply, move |b| b.apply(&plan).map(Answer::Applied))
            .await?
        {
            Answer::Applied(r) => Ok(r),
            _ => Err(self.mismatch(Call::Apply)),
        }
    }

    /// Whether the driven server is reachable and sane.
    ///
    /// # Errors
    ///
    /// As for [`GuardedBackend::observe`].
    pub async fn health(&mut self) -> Result<HealthReport, HostError> {
        match self
            .call(Call::Health, |b| b.health().map(Answer::Health))
            .await?
        {
            Answer::Health(h) => Ok(h),
            _ => Err(self.mismatch(Call::Health)),
        }
    }

    fn mismatch(&self, call: Call) -> HostError {
        self.unusable(
            call,
            "internal error: the call answered another kind".into(),
        )
    }

    fn unusable(&self, call: Call, reason: String) -> HostError {
        HostError::Unusable {
            backend: self.name.clone(),
            origin: self.origin.clone(),
            call,
            reason,
        }
    }

    /// Takes the instance back from a hung call that has since returned.
    async fn reclaim_hung(&mut self, call: Call) -> Result<(), HostError> {
        let Some(hung) = &self.hung else {
            return Ok(());
        };
        if !hung.job.is_finished() {
            self.stats.refused += 1;
            return Err(HostError::Hung {
                backend: self.name.clone(),
                origin: self.origin.clone(),
                call,
                hung_call: hung.call,
                hung_for: hung.since.elapsed(),
            });
        }
        let Some(hung) = self.hung.take() else {
            return Ok(());
        };
        match hung.job.await {
            Ok((instance, result)) => {
                tracing::info!(
                    backend = %self.name,
                    origin = %self.origin,
                    "backend returned from its {} after {} (the late answer is discarded)",
                    hung.call,
                    seconds(&hung.since.elapsed())
                );
                if matches!(
                    result,
                    Err(_)
                        | Ok(Err(BackendError {
                            code: STATUS_PANIC,
                            ..
                        }))
                ) {
                    self.needs_restart = true;
                }
                match instance {
                    Some(instance) => self.instance = Some(instance),
                    None => self.needs_restart = true,
                }
            }
            Err(join) => {
                self.needs_restart = true;
                tracing::warn!(backend = %self.name, "hung call ended abnormally: {join}");
            }
        }
        Ok(())
    }

    async fn call(
        &mut self,
        call: Call,
        body: impl FnOnce(&mut dyn BackendInstance) -> Result<Answer, BackendError> + Send + 'static,
    ) -> Result<Answer, HostError> {
        self.reclaim_hung(call).await?;
        if let Some(degraded) = &self.stats.degraded {
            let now = Instant::now();
            // While backing off, a cheap health call once per initial backoff (one period in
            // the service) finds a backend that is back, so control resumes at once instead
            // of after the whole backoff.
            let probe_due = now < degraded.retry_at
                && self.next_probe.is_none_or(|at| now >= at)
                && self.instance.is_some()
                && !self.needs_restart
                && call != Call::Health;
            if probe_due && self.probe_recovered().await {
                // Recovered: the call goes ahead below.
            } else if let Some(degraded) = &self.stats.degraded
                && now < degraded.retry_at
            {
                self.stats.refused += 1;
                return Err(HostError::Backoff {
                    backend: self.name.clone(),
                    origin: self.origin.clone(),
                    call,
                    retry_in: degraded.retry_at - now,
                    last_error: degraded.last_error.clone(),
                });
            }
        }
        if self.needs_restart || self.instance.is_none() {
            if let Some(factory) = self.factory.clone() {
                let old = self.instance.take();
                let result = self
                    .run(call, old, move |old| {
                        drop(old);
                        match factory() {
                            Ok(fresh) => (Some(fresh), Ok(Ok(Answer::Restarted))),
                            Err(e) => (None, Ok(Err(e))),
                        }
                    })
                    .await;
                match result {
                    Ok(_) => {
                        self.stats.restarts += 1;
                        self.needs_restart = false;
                        tracing::info!(backend = %self.name, origin = %self.origin, "backend instance recreated");
                    }
                    Err(e) => return Err(e),
                }
            } else if self.instance.is_none() {
                self.stats.refused += 1;
                return Err(self.unusable(
                    call,
                    "its instance was lost in an earlier failure and cannot be recreated".into(),
                ));
            }
        }
        let instance = self.instance.take();
        self.run(call, instance, move |instance| match instance {
            Some(mut instance) => {
                let result = catch_unwind(AssertUnwindSafe(|| body(instance.as_mut())));
                (Some(instance), result)
            }
            None => (None, Ok(Err(BackendError::failed("no instance")))),
        })
        .await
    }

    /// One health call while degraded: whether the backend answered healthy, in which case
    /// the backoff ends now and the call asked for goes ahead (its outcome decides whether
    /// the backend recovered, or backs off longer as before). A failed probe keeps the
    /// backoff as it was. Either way the next probe is one initial backoff later.
    async fn probe_recovered(&mut self) -> bool {
        let before = self.stats.degraded.clone();
        let consecutive = self.stats.consecutive_failures;
        let instance = self.instance.take();
        self.probing = true;
        let result = self
            .run(Call::Health, instance, move |instance| match instance {
                Some(mut instance) => {
                    let result = catch_unwind(AssertUnwindSafe(|| {
                        instance.health().and_then(|report| {
                            if report.healthy {
                                Ok(Answer::Health(report))
                            } else {
                                Err(BackendError::unavailable(format!(
                                    "unhealthy: {}",
                                    report.detail
                                )))
                            }
                        })
                    }));
                    (Some(instance), result)
                }
                None => (None, Ok(Err(BackendError::failed("no instance")))),
            })
            .await;
        self.probing = false;
        let interval = self.policy.backoff_initial.max(Duration::from_millis(1));
        self.next_probe = Some(Instant::now() + interval);
        match result {
            Ok(_) => {
                if let Some(degraded) = &mut self.stats.degraded {
                    degraded.retry_at = Instant::now();
                }
                true
            }
            Err(_) => {
                if let (Some(mut kept), Some(now)) = (before, self.stats.degraded.as_ref()) {
                    kept.last_error = now.last_error.clone();
                    self.stats.degraded = Some(kept);
                }
                self.stats.consecutive_failures = consecutive;
                false
            }
        }
    }

    /// Runs `job` on the blocking pool within the time limit and books the outcome.
    async fn run(
        &mut self,
        call: Call,
        instance: Option<Box<dyn BackendInstance>>,
        job: impl FnOnce(Option<Box<dyn BackendInstance>>) -> Outcome + Send + 'static,
    ) -> Result<Answer, HostError> {
        self.stats.calls += 1;
        let mut handle = tokio::task::spawn_blocking(move || job(instance));
        let error = match tokio::time::timeout(self.policy.timeout, &mut handle).await {
            Ok(Ok((instance, result))) => {
                self.instance = instance;
                match result {
                    Ok(Ok(answer)) => {
                        // A recreated instance has not answered a call yet: no recovery.
                        if !matches!(answer, Answer::Restarted) {
                            self.succeeded();
                        }
                        return Ok(answer);
                    }
                    Ok(Err(e)) => {
                        let error = backend_error(&self.name, &self.origin, call, e);
                        if error.is_panic() {
                            self.needs_restart = true;
                        }
                        error
                    }
                    Err(payload) => {
                        self.needs_restart = true;
                        HostError::Panicked {
                            backend: self.name.clone(),
                            origin: self.origin.clone(),
                            call,
                            message: panic_message(payload.as_ref()),
                        }
                    }
                }
            }
            Ok(Err(join)) => {
                self.needs_restart = true;
                self.unusable(call, format!("the blocking call ended abnormally: {join}"))
            }
            Err(_) => {
                self.hung = Some(HungCall {
                    call,
                    since: Instant::now()
                        .checked_sub(self.policy.timeout)
                        .unwrap_or_else(Instant::now),
                    job: handle,
                });
                HostError::TimedOut {
                    backend: self.name.clone(),
                    origin: self.origin.clone(),
                    call,
                    timeout: self.policy.timeout,
                }
            }
        };
        self.failed(&error);
        Err(error)
    }

    fn succeeded(&mut self) {
        if self.probing {
            // A healthy probe only lets the next call try; that call decides.
            return;
        }
        self.next_probe = None;
        if let Some(degraded) = self.stats.degraded.take() {
            tracing::info!(
                backend = %self.name,
                origin = %self.origin,
                "backend recovered after {} degraded",
                seconds(&degraded.since.elapsed())
            );
        }
        self.stats.consecutive_failures = 0;
    }

    fn failed(&mut self, error: &HostError) {
        match error {
            HostError::Panicked { .. } => self.stats.panics += 1,
            HostError::TimedOut { .. } => self.stats.timeouts += 1,
            _ => self.stats.errors += 1,
        }
        self.stats.consecutive_failures = self.stats.consecutive_failures.saturating_add(1);
        let doublings = self.stats.consecutive_failures.saturating_sub(1).min(20);
        let backoff = self
            .policy
            .backoff_initial
            .saturating_mul(1 << doublings)
            .min(self.policy.backoff_max);
        let now = Instant::now();
        let since = self.stats.degraded.as_ref().map_or(now, |d| d.since);
        // The same failure again is logged quietly: one warning when a backend degrades, and
        // while it stays degraded one when its error changes, at most every
        // `REWARN_INTERVAL` (a backend whose answers change each time, as garbage does,
        // would otherwise warn at every attempt).
        let repeated = self.stats.degraded.as_ref().is_some_and(|d| {
            d.last_error == error.to_string()
                || self
                    .warned_at
                    .is_some_and(|at| now.duration_since(at) < REWARN_INTERVAL)
        });
        self.stats.degraded = Some(Degraded {
            since,
            last_error: error.to_string(),
            retry_at: now + backoff,
        });
        if self.probing {
            tracing::debug!(backend = %self.name, "health probe while degraded failed: {error}");
            return;
        }
        self.next_probe = Some(now + self.policy.backoff_initial.max(Duration::from_millis(1)));
        if repeated {
            tracing::debug!(
                backend = %self.name,
                retry_in_s = backoff.as_secs_f64(),
                "backend still degraded: {error}"
            );
            return;
        }
        self.warned_at = Some(now);
        tracing::warn!(
            backend = %self.name,
            origin = %self.origin,
            retry_in_s = backoff.as_secs_f64(),
            "backend degraded: {error}"
        );
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A linked-in backend whose observe follows a script.
    #[derive(Debug)]
    struct Scripted {
        script: Arc<Mutex<Vec<&'static str>>>,
        sleep: Duration,
    }

    impl BackendInstance for Scripted {
        fn describe(&self) -> Description {
            Description {
                schema: SCHEMA_VERSION,
                name: "scripted".into(),
                version: "0".into(),
                capabilities: Default::default(),
                gpu_mem_mb: None,
            }
        }
        fn observe(&mut self) -> Result<PluginObservation, BackendError> {
            let step = self.script.lock().unwrap().pop().unwrap_or("ok");
            match step {
                "panic" => panic!("scripted panic"),
                "error" => Err(BackendError::unavailable("scripted failure")),
                "sleep" => {
                    std::thread::sleep(self.sleep);
                    Ok(PluginObservation::default())
                }
                _ => Ok(PluginObservation::default()),
            }
        }
        fn apply(&mut self, _plan: &PlanMessage) -> Result<ApplyReport, BackendError> {
            Ok(ApplyReport::default())
        }
        fn health(&mut self) -> Result<HealthReport, BackendError> {
            Ok(HealthReport {
                schema: SCHEMA_VERSION,
                healthy: true,
                detail: String::new(),
            })
        }
    }

    /// `steps` run first to last.
    fn scripted(steps: &[&'static str], sleep_ms: u64) -> Box<dyn BackendInstance> {
        let mut script: Vec<&'static str> = steps.to_vec();
        script.reverse();
        Box::new(Scripted {
            script: Arc::new(Mutex::new(script)),
            sleep: Duration::from_millis(sleep_ms),
        })
    }

    fn policy(timeout_ms: u64, backoff_ms: u64) -> CallPolicy {
        CallPolicy {
            timeout: Duration::from_millis(timeout_ms),
            backoff_initial: Duration::from_millis(backoff_ms),
            backoff_max: Duration::from_millis(backoff_ms * 4),
        }
    }

    #[test]
    fn plugin_names_come_from_file_names() {
        assert_eq!(
            plugin_name(Path::new("/x/libinfadapt_plugin_sim.so")).as_deref(),
            Some("sim")
        );
        assert_eq!(
            plugin_name(Path::new("libecho.so")).as_deref(),
            Some("echo")
        );
        assert_eq!(plugin_name(Path::new("echo.so")).as_deref(), Some("echo"));
        assert_eq!(plugin_name(Path::new("echo.so.1")), None);
        assert_eq!(plugin_name(Path::new("lib.so")), None);
    }

    #[tokio::test]
    async fn errors_degrade_with_doubling_backoff_then_recover() {
        let mut backend = GuardedBackend::new(
            scripted(&["error", "error"], 0),
            BackendOrigin::Linked,
            policy(1000, 40),
        );
        let err = backend.observe().await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("backend `scripted` (linked in): observe failed (unavailable)"),
            "{err}"
        );
        assert!(backend.is_degraded());
        let refused = backend.observe().await.unwrap_err();
        assert!(matches!(refused, HostError::Backoff { .. }), "{refused}");
        assert!(
            refused.to_string().contains("scripted failure"),
            "{refused}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        backend.observe().await.unwrap_err();
        let degraded = backend.stats().degraded.clone().unwrap();
        let wait = degraded.retry_at - Instant::now();
        assert!(
            wait > Duration::from_millis(50),
            "second backoff doubles: {wait:?}"
        );
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
        backend.observe().await.unwrap();
        assert!(!backend.is_degraded());
        let stats = backend.stats();
        assert_eq!((stats.errors, stats.refused, stats.calls), (2, 1, 3));
    }

    #[tokio::test]
    async fn a_health_probe_while_backing_off_lets_a_recovered_backend_answer_early() {
        // A long backoff (400 ms after two failures) but probes every 20 ms.
        let policy = CallPolicy {
            timeout: Duration::from_millis(1000),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_secs(10),
        };
        let mut backend = GuardedBackend::new(
            scripted(&["error", "error", "error", "error", "error"], 0),
            BackendOrigin::Linked,
            policy,
        );
        backend.observe().await.unwrap_err();
        // Still failing: the probe is healthy, the observe it lets through fails, and the
        // backoff keeps doubling.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(25)).await;
            let err = backend.observe().await.unwrap_err();
            assert!(!matches!(err, HostError::Backoff { .. }), "{err}");
        }
        let stats = backend.stats();
        assert_eq!(stats.consecutive_failures, 4);
        let degraded = stats.degraded.clone().expect("degraded");
        assert!(degraded.retry_at - Instant::now() > Duration::from_millis(100));
        // Within the probe interval, calls are refused as before.
        let refused = backend.observe().await.unwrap_err();
        assert!(matches!(refused, HostError::Backoff { .. }), "{refused}");
        // The backend is back: the next probe finds it long before the backoff ends.
        tokio::time::sleep(Duration::from_millis(25)).await;
        backend.observe().await.unwrap_err();
        tokio::time::sleep(Duration::from_millis(25)).await;
        backend.observe().await.expect("answered after a probe");
        assert!(!backend.is_degraded());
        assert_eq!(backend.stats().consecutive_failures, 0);
    }

    #[tokio::test]
    async fn a_linked_panic_is_contained_and_the_instance_recreated() {
        let mut backend = GuardedBackend::new(
            scripted(&["panic"], 0),
            BackendOrigin::Linked,
            policy(1000, 1),
        )
        .with_factory(Arc::new(|| Ok(scripted(&["ok"], 0))));
        let err = backend.observe().await.unwrap_err();
        assert!(err.is_panic(), "{err}");
        assert!(err.to_string().contains("scripted panic"), "{err}");
        tokio::time::sleep(Duration::from_millis(5)).await;
        backend.observe().await.unwrap();
        assert_eq!(backend.stats().restarts, 1);
        assert_eq!(backend.stats().panics, 1);
    }

    #[tokio::test]
    async fn a_hung_call_times_out_and_is_not_called_again_until_it_returns() {
        let mut backend = GuardedBackend::new(
            scripted(&["sleep"], 400),
            BackendOrigin::Linked,
            policy(100, 1),
        );
        let started = Instant::now();
        let err = backend.observe().await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(started.elapsed() < Duration::from_millis(300));
        assert_eq!(
            err.to_string(),
            "backend `scripted` (linked in): observe timed out after 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let hung = backend.health().await.unwrap_err();
        assert!(matches!(hung, HostError::Hung { .. }), "{hung}");
        assert!(backend.is_hung());
        tokio::time::sleep(Duration::from_millis(450)).await;
        backend.health().await.unwrap();
        backend.observe().await.unwrap();
        assert!(!backend.is_hung());
        assert_eq!(backend.stats().timeouts, 1);
    }

    #[test]
    fn refuses_writable_or_foreign_files_before_loading() {
        let dir = std::env::temp_dir().join(format!("infadapt-host-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let uid = std::fs::metadata(&dir).unwrap().uid();
        let file = dir.join("libwritable.so");
        std::fs::write(&file, b"not a library").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let host = PluginHost::new(vec![dir.clone()], None).with_allowed_owners(vec![uid]);
        let err = host.load(&file).unwrap_err().to_string();
        assert!(err.contains("libwritable.so refused"), "{err}");
        assert!(err.contains("world-writable"), "{err}");

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let foreign = PluginHost::new(vec![dir.clone()], None).with_allowed_owners(vec![uid + 1]);
        let err = foreign.load(&file).unwrap_err().to_string();
        assert!(err.contains(&format!("owned by uid {uid}")), "{err}");

        let err = host.load(&file).unwrap_err();
        assert!(matches!(err, HostError::Load { .. }), "{err}");
        let err = host.library("missing").unwrap_err().to_string();
        assert!(err.starts_with("no plugin named `missing` in"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Found by the fuzz target `abi_from_plugin`: serde reads a struct from a JSON array,
    /// so `[2]` decoded as a config-check answer of schema 2 past the schema check.
    #[test]
    fn fuzz_regression_an_answer_that_is_an_array_is_refused() {
        let err = decode::<ConfigCheck>(b"[2]").expect_err("an array is not an answer");
        assert!(err.message.contains("not a JSON object"), "{}", err.message);
        let err = decode::<ApplyReport>(b"[2, true, []]").expect_err("an array is not an answer");
        assert!(err.message.contains("not a JSON object"), "{}", err.message);
        let err = decode::<HealthReport>(b"\"ok\"").expect_err("a string is not an answer");
        assert!(err.message.contains("not a JSON object"), "{}", err.message);
        let read: ApplyReport = decode(br#"{"changed": true}"#).expect("an object is read");
        assert!(read.changed);
        let err = decode::<ApplyReport>(br#"{"schema": 2, "changed": true}"#)
            .expect_err("schema 2 is refused");
        assert!(err.message.contains("schema 2"), "{}", err.message);
    }
}
