//! A filter module checked against the filter ABI (v1 or v2) and compiled once: imports only from the host's
//! `tidemark` functions with the right types, the required exports, the ABI version it says it
//! was built for, and the size and compile-time limits. Each refusal says what to change.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::{ExternType, FuncType, InstancePre, Module, ValType};

use crate::engine::FilterEngine;
use crate::host::{self, HostState};
use crate::limits::Limits;
use crate::{Error, Result};

/// ABI versions this host runs.
pub const SUPPORTED_ABI: &[i32] = &[1, 2];

pub struct FilterModule {
    pub(crate) engine: Arc<FilterEngine>,
    pub(crate) pre: InstancePre<HostState>,
    pub limits: Limits,
    /// It exports `init` (and `tidemark_alloc`).
    pub has_init: bool,
    pub size: usize,
    /// The filter ABI version the module was built for.
    pub abi_version: i32,
    /// Its exports, as checked.
    pub(crate) exports: Exports,
    /// The string fields a v2 batch carries for it (`tidemark_fields`; all by default).
    pub(crate) fields: u32,
}

/// The ABI's optional exports a module has (their types checked).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exports {
    pub filter: bool,
    pub filter_batch: bool,
    pub alloc: bool,
    pub fields: bool,
}

fn same(ty: &FuncType, params: &[ValType], results: &[ValType]) -> bool {
    let eq = |a: ValType, b: &ValType| ValType::eq(&a, b);
    ty.params().len() == params.len()
        && ty.results().len() == results.len()
        && ty.params().zip(params).all(|(a, b)| eq(a, b))
        && ty.results().zip(results).all(|(a, b)| eq(a, b))
}

fn describe(params: &[ValType], results: &[ValType]) -> String {
    let list = |v: &[ValType]| {
        v.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(params), list(results))
}

fn check_imports(module: &Module) -> Result<()> {
    let host = host::signatures();
    for import in module.imports() {
        let (m, name) = (import.module(), import.name());
        let known = host.iter().find(|(n, _, _)| m == "tidemark" && *n == name);
        let Some((_, params, results)) = known else {
            let hint = if m.starts_with("wasi") {
                " (WASI is not available to filters: build for wasm32-unknown-unknown, not wasm32-wasi)"
            } else {
                ""
            };
            return Err(Error::Invalid(format!(
                "the module imports {m}::{name}, which the host does not provide{hint}; filters may \
                 import only the `tidemark` functions listed in plugins/ABI.md"
            )));
        };
        match import.ty() {
            ExternType::Func(ty) if same(&ty, params, results) => {}
            _ => {
                return Err(Error::Invalid(format!(
                    "the module imports tidemark::{name} with the wrong type; it is a function {}",
                    describe(params, results)
                )));
            }
        }
    }
    Ok(())
}

/// The exports every version needs, and the types of the others; returns whether the module
/// has `init`, and which of the version-specific ones it has.
fn check_exports(module: &Module) -> Result<(bool, Exports)> {
    use ValType::I32;
    let func = |name: &str| match module.get_export(name) {
        Some(ExternType::Func(ty)) => Some(Some(ty)),
        Some(_) => Some(None),
        None => None,
    };
    let require =
        |name: &str, params: &[ValType], results: &[ValType], required: bool| -> Result<bool> {
            match func(name) {
                Some(Some(ty)) if same(&ty, params, results) => Ok(true),
                Some(_) => Err(Error::Invalid(format!(
                    "the export `{name}` must be a function {}",
                    describe(params, results)
                ))),
                None if required => Err(Error::Invalid(format!(
                    "the module does not export `{name}`, a function {}; see plugins/ABI.md",
                    describe(params, results)
                ))),
                None => Ok(false),
            }
        };
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => {}
        _ => {
            return Err(Error::Invalid(
                "the module does not export its memory as `memory`".into(),
            ));
        }
    }
    require("tidemark_abi_version", &[], &[I32], true)?;
    let exports = Exports {
        filter: require("filter", &[], &[I32], false)?,
        filter_batch: require("filter_batch", &[I32, I32], &[I32], false)?,
        alloc: require("tidemark_alloc", &[I32], &[I32], false)?,
        fields: require("tidemark_fields", &[], &[I32], false)?,
    };
    let has_init = require("init", &[I32, I32], &[I32], false)?;
    if has_init && !exports.alloc {
        require("tidemark_alloc", &[I32], &[I32], true)?;
    }
    Ok((has_init, exports))
}

/// What version `version` needs beyond the common exports.
fn check_version(module: &Module, version: i32, exports: Exports) -> Result<()> {
    use ValType::I32;
    let missing = |name: &str, params: &[ValType]| {
        Error::Invalid(format!(
            "the module does not export `{name}`, a function {}; see plugins/ABI.md",
            describe(params, &[I32])
        ))
    };
    match version {
        1 if !exports.filter => Err(missing("filter", &[])),
        2 if !exports.filter_batch => Err(missing("filter_batch", &[I32, I32])),
        2 if !exports.alloc => Err(Error::Invalid(
            "an ABI v2 module must export `tidemark_alloc`, a function (i32) -> (i32): the host \
             writes each batch into the buffer it returns; see plugins/ABI.md"
                .into(),
        )),
        2 => match module
            .imports()
            .find(|i| !host::V2_IMPORTS.contains(&i.name()))
        {
            Some(i) => Err(Error::Invalid(format!(
                "the module imports tidemark::{}, a version 1 field getter; an ABI v2 module \
                 reads every field from its batch and may import only {:?}",
                i.name(),
                host::V2_IMPORTS
            ))),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Refuse limits beyond the server's maxima, and a module larger than its limit.
fn check_limits(engine: &FilterEngine, limits: &Limits, size: usize) -> Result<()> {
    let max = engine.maxima;
    if limits.memory_bytes > max.memory_bytes
        || limits.fuel > max.fuel
        || limits.deadline > max.deadline
        || limits.module_bytes > max.module_bytes
    {
        return Err(Error::Invalid(format!(
            "the limits asked for exceed the server's maxima (memory {} bytes, fuel {}, \
             timeout {} ms, module {} bytes)",
            max.memory_bytes,
            max.fuel,
            max.deadline.as_millis(),
            max.module_bytes
        )));
    }
    if size > limits.module_bytes {
        return Err(Error::Invalid(format!(
            "the module is {size} bytes; the limit is {} bytes",
            limits.module_bytes
        )));
    }
    Ok(())
}

impl FilterModule {
    /// Check and compile `bytes` (a binary WebAssembly module) under `limits`.
    pub fn compile(
        engine: &Arc<FilterEngine>,
        bytes: &[u8],
        limits: Limits,
    ) -> Result<FilterModule> {
        Self::precheck(engine, bytes, &limits)?;
        let started = Instant::now();
        let module = Module::new(&engine.engine, bytes)
            .map_err(|e| Error::Invalid(format!("not a valid WebAssembly module: {e:#}")))?;
        let took = started.elapsed();
        if took > limits.compile {
            return Err(Error::Invalid(format!(
                "compiling took {} ms; the limit is {} ms",
                took.as_millis(),
                limits.compile.as_millis()
            )));
        }
        Self::link(engine, module, limits, bytes.len())
    }

    /// What is checked before compiling, wherever that happens: the limits asked for, the
    /// module's size, and that it is a WebAssembly binary at all.
    pub(crate) fn precheck(engine: &FilterEngine, bytes: &[u8], limits: &Limits) -> Result<()> {
        check_limits(engine, limits, bytes.len())?;
        if !bytes.starts_with(b"\0asm") {
            return Err(Error::Invalid(
                "not a WebAssembly binary (it does not start with \\0asm); upload the .wasm file"
                    .into(),
            ));
        }
        Ok(())
    }

    /// A module compiled earlier, from the artifact [`FilterModule::artifact`] made. The
    /// checks run again (they are cheap); compiling does not.
    pub fn from_artifact(
        engine: &Arc<FilterEngine>,
        artifact: &[u8],
        limits: Limits,
        size: usize,
    ) -> Result<FilterModule> {
        check_limits(engine, &limits, size)?;
        let module = crate::artifact::deserialize(&engine.engine, artifact)?;
        Self::link(engine, module, limits, size)
    }

    /// The compiled machine code, for [`FilterModule::from_artifact`] after a restart.
    pub fn artifact(&self) -> Result<Vec<u8>> {
        self.pre
            .module()
            .serialize()
            .map_err(|e| Error::Invalid(format!("cannot serialize the compiled module: {e:#}")))
    }

    /// The same compiled module under other limits (no recompiling).
    pub fn with_limits(&self, limits: Limits) -> Result<FilterModule> {
        check_limits(&self.engine, &limits, self.size)?;
        Ok(FilterModule {
            engine: self.engine.clone(),
            pre: self.pre.clone(),
            limits,
            has_init: self.has_init,
            size: self.size,
            abi_version: self.abi_version,
            exports: self.exports,
            fields: self.fields,
        })
    }

    fn link(
        engine: &Arc<FilterEngine>,
        module: Module,
        limits: Limits,
        size: usize,
    ) -> Result<FilterModule> {
        check_imports(&module)?;
        let (has_init, exports) = check_exports(&module)?;
        let pre = engine
            .linker
            .instantiate_pre(&module)
            .map_err(|e| Error::Invalid(format!("cannot link the module: {e:#}")))?;
        let mut m = FilterModule {
            engine: engine.clone(),
            pre,
            limits,
            has_init,
            size,
            abi_version: 0,
            exports,
            fields: crate::batch::wants::ALL,
        };
        let (version, fields) = m.read_abi_version()?;
        if !SUPPORTED_ABI.contains(&version) {
            return Err(Error::Invalid(format!(
                "the module was built for filter ABI version {version}; this host supports {SUPPORTED_ABI:?}"
            )));
        }
        check_version(m.pre.module(), version, exports)?;
        m.abi_version = version;
        if let Some(fields) = fields {
            if fields as u32 & !crate::batch::wants::ALL != 0 || version < 2 {
                return Err(Error::Invalid(format!(
                    "tidemark_fields returned {fields:#x}: an ABI v2 module's mask of the fields \
                     its batches carry, at most {:#x}; see plugins/ABI.md",
                    crate::batch::wants::ALL
                )));
            }
            m.fields = fields as u32;
        }
        Ok(m)
    }

    /// The version the module says it was built for, and its field mask if it exports one.
    fn read_abi_version(&self) -> Result<(i32, Option<i32>)> {
        let mut store = crate::instance::new_store(self);
        // A start section runs now, under the per-event fuel, deadline and memory limit: one
        // that finishes within them is accepted (the ABI does not forbid them).
        crate::instance::arm(&mut store, self);
        let instance =
            self.pre.instantiate(&mut store).map_err(|e| {
                match crate::instance::classify(&e, store.data().memory_denied, &self.limits) {
                    capacity @ Error::Capacity(_) => capacity,
                    why => Error::Invalid(format!("cannot instantiate the module: {why}")),
                }
            })?;
        let f = instance
            .get_typed_func::<(), i32>(&mut store, "tidemark_abi_version")
            .map_err(|e| Error::Invalid(format!("{e:#}")))?;
        crate::instance::arm(&mut store, self);
        let version = f
            .call(&mut store, ())
            .map_err(|e| Error::Invalid(format!("tidemark_abi_version failed: {e:#}")))?;
        if !self.exports.fields {
            return Ok((version, None));
        }
        let f = instance
            .get_typed_func::<(), i32>(&mut store, "tidemark_fields")
            .map_err(|e| Error::Invalid(format!("{e:#}")))?;
        crate::instance::arm(&mut store, self);
        let fields = f
            .call(&mut store, ())
            .map_err(|e| Error::Invalid(format!("tidemark_fields failed: {e:#}")))?;
        Ok((version, Some(fields)))
    }
}
