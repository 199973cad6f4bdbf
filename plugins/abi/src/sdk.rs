//! The Rust SDK: implement [`Backend`], then `export_plugin!(YourType)` exports the C entry
//! points with every call wrapped in `catch_unwind`.

use std::fmt;

use crate::config_check::ConfigProblem;
use crate::messages::{ApplyReport, Description, HealthReport, PlanMessage, PluginObservation};

/// An error a backend returns; `code` is one of the `STATUS_*` constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    pub code: i32,
    pub message: String,
}

impl BackendError {
    /// A failure of the backend (`STATUS_ERROR`).
    pub fn failed(message: impl Into<String>) -> Self {
        BackendError {
            code: crate::STATUS_ERROR,
            message: message.into(),
        }
    }
    /// Invalid config or plan (`STATUS_INVALID_INPUT`).
    pub fn invalid(message: impl Into<String>) -> Self {
        BackendError {
            code: crate::STATUS_INVALID_INPUT,
            message: message.into(),
        }
    }
    /// The driven server is unreachable (`STATUS_UNAVAILABLE`).
    pub fn unavailable(message: impl Into<String>) -> Self {
        BackendError {
            code: crate::STATUS_UNAVAILABLE,
            message: message.into(),
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {}

/// What a plugin implements. Calls on one instance never overlap (the host serialises
/// them); they may come from different threads, hence `Send`.
pub trait Backend: Send + Sized + 'static {
    /// Builds an instance from the JSON config (the backend table of the daemon config,
    /// plus `pipeline` with the pipeline's name and stages).
    fn create(config: serde_json::Value) -> Result<Self, BackendError>;
    /// Every problem with `config` (the JSON `create` would get), found without creating
    /// anything or contacting the backend: unknown keys (with the key meant as a hint),
    /// wrong types, values out of range. `validate` and reloads run it, so that a mistake
    /// is reported with its file position before a pipeline depends on it. The default
    /// checks nothing; every shipped plugin overrides it.
    fn check_config(config: &serde_json::Value) -> Vec<ConfigProblem> {
        let _ = config;
        Vec::new()
    }
    /// Name, version and capabilities.
    fn describe(&self) -> Description;
    /// What happened since the previous call.
    fn observe(&mut self) -> Result<PluginObservation, BackendError>;
    /// Reconciles the backend to `plan`; calling it again with the same plan changes nothing.
    fn apply(&mut self, plan: &PlanMessage) -> Result<ApplyReport, BackendError>;
    /// Whether the driven server is reachable and sane.
    fn health(&mut self) -> Result<HealthReport, BackendError>;
}

/// Glue used by [`export_plugin!`]; not part of the stable API.
#[doc(hidden)]
pub mod glue {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Mutex;

    use super::{Backend, BackendError};
    use crate::{PluginBuffer, PluginHandle, STATUS_INVALID_INPUT, STATUS_OK, STATUS_PANIC};

    fn write(target: *mut PluginBuffer, bytes: Vec<u8>) {
        if !target.is_null() {
            // SAFETY: the host passes a valid, writable PluginBuffer slot (ABI contract).
            unsafe { target.write(PluginBuffer::from_vec(bytes)) };
        }
    }

    fn fail(error: *mut PluginBuffer, code: i32, message: &str) -> i32 {
        write(error, message.as_bytes().to_vec());
        code
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

    /// Runs `body` with panics caught and turned into `STATUS_PANIC`.
    fn guarded(
        error: *mut PluginBuffer,
        body: impl FnOnce() -> Result<Vec<u8>, BackendError>,
        out: *mut PluginBuffer,
    ) -> i32 {
        match catch_unwind(AssertUnwindSafe(body)) {
            Ok(Ok(bytes)) => {
                write(out, bytes);
                STATUS_OK
            }
            Ok(Err(e)) => fail(error, e.code, &e.message),
            Err(payload) => fail(
                error,
                STATUS_PANIC,
                &format!("plugin panicked: {}", panic_message(payload.as_ref())),
            ),
        }
    }

    fn with_instance<B: Backend, R>(
        handle: PluginHandle,
        f: impl FnOnce(&mut B) -> Result<R, BackendError>,
    ) -> Result<R, BackendError> {
        if handle.is_null() {
            return Err(BackendError::invalid("null plugin handle"));
        }
        // SAFETY: non-null handles are only made by `create::<B>` below from a
        // Box<Mutex<B>> and stay valid until `destroy::<B>`.
        let cell = unsafe { &*(handle as *const Mutex<B>) };
        let mut guard = cell.lock().map_err(|_| BackendError {
            code: STATUS_PANIC,
            message: "plugin instance poisoned by an earlier panic".into(),
        })?;
        f(&mut guard)
    }

    fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, BackendError> {
        serde_json::to_vec(value)
            .map_err(|e| BackendError::failed(format!("cannot encode answer: {e}")))
    }

    fn input<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], BackendError> {
        if ptr.is_null() {
            return if len == 0 {
                Ok(&[])
            } else {
                Err(BackendError::invalid("null input buffer"))
            };
        }
        // SAFETY: the host passes `len` readable bytes at `ptr` for the duration of the call.
        Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
    }

    /// The config `create` and `check_config` get: the host's bytes as a JSON value.
    fn config_value(ptr: *const u8, len: usize) -> Result<serde_json::Value, BackendError> {
        serde_json::from_slice(input(ptr, len)?)
            .map_err(|e| BackendError::invalid(format!("config is not valid JSON: {e}")))
    }

    /// # Safety
    /// ABI entry point: pointers as documented in the C header.
    pub unsafe extern "C" fn create<B: Backend>(
        config: *const u8,
        config_len: usize,
        out_handle: *mut PluginHandle,
        error: *mut PluginBuffer,
    ) -> i32 {
        if out_handle.is_null() {
            return fail(error, STATUS_INVALID_INPUT, "null out_handle");
        }
        let made = catch_unwind(AssertUnwindSafe(|| -> Result<B, BackendError> {
            B::create(config_value(config, config_len)?)
        }));
        match made {
            Ok(Ok(instance)) => {
                let handle = Box::into_raw(Box::new(Mutex::new(instance))) as PluginHandle;
                // SAFETY: checked non-null above; the host owns this slot.
                unsafe { out_handle.write(handle) };
                STATUS_OK
            }
            Ok(Err(e)) => fail(error, e.code, &e.message),
            Err(payload) => fail(
                error,
                STATUS_PANIC,
                &format!(
                    "plugin panicked in create: {}",
                    panic_message(payload.as_ref())
                ),
            ),
        }
    }

    /// # Safety
    /// ABI entry point: `handle` from `create`, not used afterwards.
    pub unsafe extern "C" fn destroy<B: Backend>(handle: PluginHandle) {
        if handle.is_null() {
            return;
        }
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: made by `create::<B>` from Box<Mutex<B>>; the host calls destroy once.
            drop(unsafe { Box::from_raw(handle as *mut Mutex<B>) });
        }));
    }

    /// # Safety
    /// ABI entry point.
    pub unsafe extern "C" fn describe<B: Backend>(
        handle: PluginHandle,
        out: *mut PluginBuffer,
        error: *mut PluginBuffer,
    ) -> i32 {
        guarded(
            error,
            || with_instance::<B, _>(handle, |b| to_json(&b.describe())),
            out,
        )
    }

    /// # Safety
    /// ABI entry point.
    pub unsafe extern "C" fn observe<B: Backend>(
        handle: PluginHandle,
        out: *mut PluginBuffer,
        error: *mut PluginBuffer,
    ) -> i32 {
        guarded(
            error,
            || with_instance::<B, _>(handle, |b| to_json(&b.observe()?)),
            out,
        )
    }

    /// # Safety
    /// ABI entry point.
    pub unsafe extern "C" fn health<B: Backend>(
        handle: PluginHandle,
        out: *mut PluginBuffer,
        error: *mut PluginBuffer,
    ) -> i32 {
        guarded(
            error,
            || with_instance::<B, _>(handle, |b| to_json(&b.health()?)),
            out,
        )
    }

    /// # Safety
    /// ABI entry point.
    pub unsafe extern "C" fn apply<B: Backend>(
        handle: PluginHandle,
        plan: *const u8,
        plan_len: usize,
        out: *mut PluginBuffer,
        error: *mut PluginBuffer,
    ) -> i32 {
        guarded(
            error,
            || {
                let bytes = input(plan, plan_len)?;
                let plan = serde_json::from_slice(bytes)
                    .map_err(|e| BackendError::invalid(format!("plan is not valid JSON: {e}")))?;
                with_instance::<B, _>(handle, |b| to_json(&b.apply(&plan)?))
            },
            out,
        )
    }

    /// # Safety
    /// ABI entry point: pointers as documented in the C header.
    pub unsafe extern "C" fn check_config<B: Backend>(
        config: *const u8,
        config_len: usize,
        out: *mut PluginBuffer,
        error: *mut PluginBuffer,
    ) -> i32 {
        guarded(
            error,
            || {
                let value = config_value(config, config_len)?;
                to_json(&crate::ConfigCheck {
                    problems: B::check_config(&value),
                    ..crate::ConfigCheck::default()
                })
            },
            out,
        )
    }

    /// # Safety
    /// ABI entry point: `buffer` filled by this library.
    pub unsafe extern "C" fn free_buffer(buffer: PluginBuffer) {
        // SAFETY: the host only returns buffers this library made with `from_vec`.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { buffer.into_vec() })));
    }
}

/// Exports `$backend` (a type implementing [`Backend`]) as a plugin: defines the entry
/// symbol returning a static vtable whose functions catch every panic.
#[macro_export]
macro_rules! export_plugin {
    ($backend:ty) => {
        static INFADAPT_PLUGIN_VTABLE: $crate::PluginVTable = $crate::PluginVTable {
            abi_version: $crate::ABI_VERSION,
            struct_size: ::std::mem::size_of::<$crate::PluginVTable>() as u32,
            create: $crate::sdk::glue::create::<$backend>,
            destroy: $crate::sdk::glue::destroy::<$backend>,
            describe: $crate::sdk::glue::describe::<$backend>,
            observe: $crate::sdk::glue::observe::<$backend>,
            apply: $crate::sdk::glue::apply::<$backend>,
            health: $crate::sdk::glue::health::<$backend>,
            free_buffer: $crate::sdk::glue::free_buffer,
            check_config: $crate::sdk::glue::check_config::<$backend>,
        };

        /// Entry point of the plugin: returns its vtable.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn infadapt_plugin_entry() -> *const $crate::PluginVTable {
            &INFADAPT_PLUGIN_VTABLE
        }
    };
}

/// Object-safe view of a backend instance, as the daemon drives it: implemented for every
/// in-process [`Backend`] (linked-in plugins) and by the host for loaded libraries.
pub trait BackendInstance: Send {
    fn describe(&self) -> Description;
    fn observe(&mut self) -> Result<PluginObservation, BackendError>;
    fn apply(&mut self, plan: &PlanMessage) -> Result<ApplyReport, BackendError>;
    fn health(&mut self) -> Result<HealthReport, BackendError>;
}

impl<B: Backend> BackendInstance for B {
    fn describe(&self) -> Description {
        Backend::describe(self)
    }
    fn observe(&mut self) -> Result<PluginObservation, BackendError> {
        Backend::observe(self)
    }
    fn apply(&mut self, plan: &PlanMessage) -> Result<ApplyReport, BackendError> {
        Backend::apply(self, plan)
    }
    fn health(&mut self) -> Result<HealthReport, BackendError> {
        Backend::health(self)
    }
}
