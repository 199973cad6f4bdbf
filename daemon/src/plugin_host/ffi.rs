//! The plugin ABI seen from the host: every `unsafe` block of the daemon lives here.
//! Mapping a library and reading its vtable (`load_library`), the child side of a trial
//! load, copying and freeing the plugin's buffers, and the calls of a [`PluginInstance`].
#![allow(unsafe_code)]

use super::discovery::registry;
use super::exit_guard::LoadInFlight;
use super::trust::TrustedFile;
use super::*;
use std::ffi::c_int;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use infadapt_plugin_abi::{
    ABI_VERSION, ApplyFn, ApplyReport, BackendError, BackendInstance, CheckConfigFn, ConfigCheck,
    ConfigProblem, CreateFn, Description, DestroyFn, ENTRY_SYMBOL, EntryFn, FreeBufferFn,
    HealthReport, OLDEST_ABI_VERSION, PlanMessage, PluginBuffer, PluginHandle, PluginObservation,
    PluginVTable, QueryFn, SCHEMA_VERSION, STATUS_OK, VTABLE_V1_SIZE,
};
use serde::de::DeserializeOwned;

/// A version-1 table as read from foreign memory: entries may be null, so they are
/// `Option`s (same layout as the nullable C function pointers).
#[repr(C)]
pub(super) struct RawVTableV1 {
    pub(super) abi_version: u32,
    pub(super) struct_size: u32,
    pub(super) create: Option<CreateFn>,
    pub(super) destroy: Option<DestroyFn>,
    pub(super) describe: Option<QueryFn>,
    pub(super) observe: Option<QueryFn>,
    pub(super) apply: Option<ApplyFn>,
    pub(super) health: Option<QueryFn>,
    pub(super) free_buffer: Option<FreeBufferFn>,
}

/// A table of this version: version 1's, then the entries appended since.
#[repr(C)]
pub(super) struct RawVTable {
    v1: RawVTableV1,
    pub(super) check_config: Option<CheckConfigFn>,
}

/// The first two fields, the only ones read before the version check.
#[repr(C)]
pub(super) struct VTableHeader {
    pub(super) abi_version: u32,
    pub(super) struct_size: u32,
}

const _: () = assert!(std::mem::size_of::<RawVTable>() == std::mem::size_of::<PluginVTable>());
const _: () = assert!(std::mem::size_of::<RawVTableV1>() == VTABLE_V1_SIZE as usize);

/// The checked entry points of a loaded library.
pub(super) struct Entries {
    pub(super) abi_version: u32,
    pub(super) struct_size: u32,
    pub(super) create: CreateFn,
    pub(super) destroy: DestroyFn,
    pub(super) describe: QueryFn,
    pub(super) observe: QueryFn,
    pub(super) apply: ApplyFn,
    pub(super) health: QueryFn,
    pub(super) free_buffer: FreeBufferFn,
    /// ABI version 2 and later, when the plugin has a check.
    pub(super) check_config: Option<CheckConfigFn>,
}

/// A plugin library mapped into the process; it is never unmapped.
pub struct LoadedLibrary {
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) vtable: Entries,
    pub(super) _library: &'static libloading::os::unix::Library,
}

impl fmt::Debug for LoadedLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedLibrary")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
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
            // Not a report to the user: the child's answer, read from its stderr by the
            // daemon that started it (`TrialLoad`), which words the error itself. The
            // plugin host sits below the commands and does not use their printer.
            eprintln!("{e}");
            1
        }
    }
}

/// Maps the library (or returns the already mapped one) and validates its vtable.
pub(super) fn load_library(
    trusted: TrustedFile,
    name: String,
) -> Result<Arc<LoadedLibrary>, HostError> {
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

    pub(super) fn origin(&self) -> BackendOrigin {
        BackendOrigin::Plugin(self.path.clone())
    }

    /// Copies a buffer the plugin filled and gives it back to the plugin's `free_buffer`.
    pub(super) fn take_buffer(&self, buffer: PluginBuffer) -> Result<Vec<u8>, HostError> {
        if buffer.ptr.is_null() {
            return Ok(Vec::new());
        }
        let result = if buffer.len > MAX_ANSWER_BYTES {
            Err(HostError::AnswerTooLarge { bytes: buffer.len })
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
    pub(super) fn finish(
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
                Err(problem) => problem.to_string(),
            };
            return Err(BackendError {
                code: status,
                message,
            });
        }
        out.map_err(|problem| BackendError::failed(problem.to_string()))
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

    pub(super) fn create_instance(
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

/// One instance created by a loaded plugin; destroyed when dropped.
pub struct PluginInstance {
    pub(super) library: Arc<LoadedLibrary>,
    pub(super) handle: PluginHandle,
    pub(super) description: Description,
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

    pub(super) fn query<T: DeserializeOwned>(
        &mut self,
        function: QueryFn,
    ) -> Result<T, BackendError> {
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

/// Registers `hook` with the C library's `atexit`; false when it could not.
pub(super) fn register_exit_hook(hook: extern "C" fn()) -> bool {
    // SAFETY: `hook` is an `extern "C" fn()` that lives for the whole program; the C
    // library calls it at most once, from `exit()`.
    unsafe { nix::libc::atexit(hook) == 0 }
}

/// Ends the process at once with `status`, running no exit hooks. Callers flush what must
/// not be lost first; the state files are written atomically, so nothing else is.
pub(super) fn exit_at_once(status: i32) -> ! {
    // SAFETY: `_exit` ends the process without running further exit hooks; nothing is
    // left to clean up that the kernel does not.
    unsafe { nix::libc::_exit(status) }
}
