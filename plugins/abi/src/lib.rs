//! The versioned C ABI between `infadaptd` and backend plugins, and the Rust SDK that
//! implements it for plugin authors.
//!
//! A plugin is a shared library exporting one symbol, [`ENTRY_SYMBOL`], a function that
//! returns a pointer to a static [`PluginVTable`]. The host checks `abi_version` and
//! `struct_size` before touching anything else. All data crossing the boundary is UTF-8
//! JSON carrying a `schema` version ([`SCHEMA_VERSION`]); buffers are allocated by the side
//! that fills them and released by the same side ([`PluginVTable::free_buffer`]). Every call
//! returns a status code; on failure the plugin fills an error buffer with a message.
//!
//! Rust plugins implement [`Backend`] and call [`export_plugin!`], which wraps every entry
//! point in `catch_unwind`: a panic becomes [`STATUS_PANIC`] instead of aborting the daemon.
//! The C header `include/infadapt_plugin.h` describes the same ABI for other languages.
#![allow(unsafe_code)]

pub mod config_check;
pub mod messages;
pub mod sdk;

use std::ffi::c_void;

pub use config_check::{
    ConfigCheck, ConfigProblem, ConfigProblems, NameRule, PipelineStages, ProblemKind, is_http_url,
};
pub use messages::{
    ApplyReport, AssignmentMessage, Capabilities, Description, HealthReport, NodeMessage,
    ObservedStage, PlacementMessage, PlanMessage, PluginObservation, SCHEMA_VERSION,
    StagePlanMessage,
};
pub use sdk::{Backend, BackendError, BackendInstance};

/// Version of the binary interface. Bumped on any change to [`PluginVTable`]'s layout or
/// meaning. Version 2 appended `check_config` to version 1's table; the host loads plugins
/// built for any version from [`OLDEST_ABI_VERSION`] to this one and refuses the others.
pub const ABI_VERSION: u32 = 2;

/// The oldest ABI version the host still loads (its table ends before `check_config`).
pub const OLDEST_ABI_VERSION: u32 = 1;

/// Size of a version-1 table: `abi_version`, `struct_size` and seven entry points.
pub const VTABLE_V1_SIZE: u32 = (8 + 7 * std::mem::size_of::<usize>()) as u32;

/// Name of the exported entry function (`const PluginVTable *infadapt_plugin_entry(void)`).
pub const ENTRY_SYMBOL: &str = "infadapt_plugin_entry";

/// The call succeeded.
pub const STATUS_OK: i32 = 0;
/// The call failed; the error buffer holds a message.
pub const STATUS_ERROR: i32 = 1;
/// The input (config, plan) was invalid; the error buffer holds a message.
pub const STATUS_INVALID_INPUT: i32 = 2;
/// The plugin panicked (Rust SDK) or hit an internal fault; the handle may be unusable.
pub const STATUS_PANIC: i32 = 3;
/// The backend the plugin drives is unreachable.
pub const STATUS_UNAVAILABLE: i32 = 4;

/// A byte buffer owned by the plugin that filled it; release with `free_buffer`.
#[repr(C)]
#[derive(Debug)]
pub struct PluginBuffer {
    pub ptr: *mut u8,
    pub len: usize,
    pub capacity: usize,
}

impl PluginBuffer {
    /// An empty buffer (nothing to free).
    pub const fn empty() -> Self {
        PluginBuffer {
            ptr: std::ptr::null_mut(),
            len: 0,
            capacity: 0,
        }
    }

    /// Hands a byte vector over the boundary; the receiver must give it back to
    /// `free_buffer` of the same library.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        PluginBuffer {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            capacity: bytes.capacity(),
        }
    }

    /// Takes back a buffer made by [`PluginBuffer::from_vec`] in this same library.
    ///
    /// # Safety
    /// `self` must come from `from_vec` of this library and not have been freed.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        if self.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: the caller guarantees ptr/len/capacity come from a Vec<u8> leaked by
        // `from_vec` in this library and not yet reclaimed.
        unsafe { Vec::from_raw_parts(self.ptr, self.len, self.capacity) }
    }
}

/// Opaque plugin instance.
pub type PluginHandle = *mut c_void;

/// Creates an instance from its config (JSON object, the backend's table of the daemon
/// config plus `pipeline`); writes the handle to `out_handle`.
pub type CreateFn = unsafe extern "C" fn(
    config_json: *const u8,
    config_len: usize,
    out_handle: *mut PluginHandle,
    error: *mut PluginBuffer,
) -> i32;
/// Destroys an instance. Called once; the handle is not used afterwards.
pub type DestroyFn = unsafe extern "C" fn(handle: PluginHandle);
/// Calls that answer with a JSON document (`describe`, `observe`, `health`).
pub type QueryFn = unsafe extern "C" fn(
    handle: PluginHandle,
    out: *mut PluginBuffer,
    error: *mut PluginBuffer,
) -> i32;
/// Reconciles the backend to a plan (JSON); idempotent. Writes a JSON report to `out`.
pub type ApplyFn = unsafe extern "C" fn(
    handle: PluginHandle,
    plan_json: *const u8,
    plan_len: usize,
    out: *mut PluginBuffer,
    error: *mut PluginBuffer,
) -> i32;
/// Checks a config (the same JSON `create` gets) without creating anything or contacting
/// the backend; writes a [`ConfigCheck`] (JSON) to `out`. `STATUS_OK` means the check ran,
/// whatever it found. Added in ABI version 2.
pub type CheckConfigFn = unsafe extern "C" fn(
    config_json: *const u8,
    config_len: usize,
    out: *mut PluginBuffer,
    error: *mut PluginBuffer,
) -> i32;
/// Releases a buffer this library filled.
pub type FreeBufferFn = unsafe extern "C" fn(buffer: PluginBuffer);

/// The table of entry points a plugin exports. Field order is part of the ABI.
#[repr(C)]
#[derive(Debug)]
pub struct PluginVTable {
    /// Must equal [`ABI_VERSION`] of the host.
    pub abi_version: u32,
    /// `size_of::<PluginVTable>()` as the plugin was built; the host refuses a smaller one.
    pub struct_size: u32,
    pub create: CreateFn,
    pub destroy: DestroyFn,
    pub describe: QueryFn,
    pub observe: QueryFn,
    pub apply: ApplyFn,
    pub health: QueryFn,
    pub free_buffer: FreeBufferFn,
    /// ABI version 2: the config check `validate` and reloads run. The host reads it only
    /// from plugins that declare version 2 or later.
    pub check_config: CheckConfigFn,
}

/// Signature of the exported entry symbol.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginVTable;
