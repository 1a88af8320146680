//! Compiling a module where it cannot hurt the server. Cranelift has no fuel and a thread
//! cannot be stopped, so a hostile module (300,000 functions: half a minute of CPU and 2 GB)
//! compiled in the server holds both until it is done, and a limit checked afterwards comes
//! too late. A server compiles in a child process instead: the same executable started with
//! [`CHILD_ARG`], which limits its own address space and CPU time before reading anything,
//! compiles the module from stdin and writes the artifact (`Module::serialize`) to stdout.
//! The parent kills it at the compile deadline and loads the artifact into its engine, as it
//! loads the artifacts it keeps on disk (`artifact.rs`).
//!
//! Protocol, parent → child: `PROGRAM __compile-filter metered|unmetered MEMORY_BYTES
//! CPU_SECS`, the module on stdin. Child → parent: the artifact on stdout and exit 0; or a
//! message on stderr and exit [`EXIT_INVALID`] (the module does not compile),
//! [`EXIT_MEMORY`] (the compiler ran out of its memory) or [`EXIT_SETUP`]. A child killed by a
//! signal hit a limit: SIGKILL/SIGXCPU the CPU time, SIGABRT an allocation refused.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::budget::bytes_text;
use crate::{Error, Result};

/// The argument that makes the executable a compile child (hidden from `--help`: the
/// binary's `main` checks for it before parsing its command line).
pub const CHILD_ARG: &str = "__compile-filter";
const EXIT_INVALID: u8 = 2;
const EXIT_MEMORY: u8 = 3;
const EXIT_SETUP: u8 = 4;
/// What the child may say on stderr: one error message.
const STDERR_BYTES: u64 = 64 << 10;

/// Where [`crate::Filters`] compiles modules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Compiler {
    /// On a blocking thread of this process; the compile-time limit is checked afterwards.
    /// For tests and benchmarks, whose executables are not compile children.
    #[default]
    InProcess,
    /// In a child process of `program` (which answers [`CHILD_ARG`] with [`child_main`]),
    /// limited to `memory_bytes` of address space and the compile-time limit of CPU, and
    /// killed at the compile deadline.
    Child { program: PathBuf, memory_bytes: u64 },
}

impl Compiler {
    /// Children of the running executable: `/proc/self/exe` where there is one (it still
    /// names this process's binary after an upgrade replaced the file), else its path.
    pub fn this_executable(memory_bytes: u64) -> std::io::Result<Compiler> {
        let proc = Path::new("/proc/self/exe");
        let program = if proc.exists() {
            proc.to_path_buf()
        } else {
            std::env::current_exe()?
        };
        Ok(Compiler::Child {
            program,
            memory_bytes,
        })
    }
}

/// Compile `wasm` in a child of `program`: the artifact it made, or why it was refused.
pub(crate) async fn in_child(
    program: &Path,
    memory_bytes: u64,
    metered: bool,
    wasm: &[u8],
    deadline: Duration,
) -> Result<Vec<u8>> {
    // Whole seconds, rounded up and one more: the wall-clock deadline stops it first; the
    // CPU limit is what stops it should this process be unable to.
    let cpu_secs = deadline.as_secs() + 2;
    let mut child = tokio::process::Command::new(program)
        .arg(CHILD_ARG)
        .arg(if metered { "metered" } else { "unmetered" })
        .arg(memory_bytes.to_string())
        .arg(cpu_secs.to_string())
        .env_clear()
        // The tidemark binary's allocator (mimalloc) reserves 1 GiB of address space for its
        // first arena; under the child's address-space limit that fails, so it reserves in
        // small steps instead. (Other allocators ignore the variable.)
        .env("MIMALLOC_ARENA_RESERVE", "32MiB")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| {
            Error::Core(tidemark_core::Error::Io {
                context: format!("starting the filter compiler {}", program.display()),
                source,
            })
        })?;
    let (mut stdin, stdout, stderr) = (
        child.stdin.take().expect("piped"),
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    let (mut artifact, mut message) = (Vec::new(), Vec::new());
    let exchange = async {
        let write = async {
            // A child that stopped early closes its stdin; its exit status says why.
            let _ = stdin.write_all(wasm).await;
            drop(stdin);
        };
        let (mut stdout, mut stderr) = (stdout.take(memory_bytes), stderr.take(STDERR_BYTES));
        let read_artifact = stdout.read_to_end(&mut artifact);
        let read_message = stderr.read_to_end(&mut message);
        let (_, out, err) = tokio::join!(write, read_artifact, read_message);
        out.and(err)?;
        child.wait().await
    };
    let status = match tokio::time::timeout(deadline, exchange).await {
        Ok(status) => status.map_err(|source| {
            Error::Core(tidemark_core::Error::Io {
                context: "talking to the filter compiler".into(),
                source,
            })
        })?,
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(Error::Invalid(format!(
                "compiling took longer than the limit of {} ms (--filter-compile-ms); the \
                 compiler was stopped and the module refused: make it smaller (fewer or \
                 smaller functions)",
                deadline.as_millis()
            )));
        }
    };
    let message = String::from_utf8_lossy(&message).trim().to_string();
    match (status.code(), status.signal()) {
        (Some(0), _) if !artifact.is_empty() => Ok(artifact),
        (Some(c), _) if c == EXIT_INVALID as i32 => Err(Error::Invalid(format!(
            "not a valid WebAssembly module: {message}"
        ))),
        (Some(c), _) if c == EXIT_MEMORY as i32 => Err(out_of_memory(memory_bytes)),
        (_, Some(signal)) if signal == libc_signal::KILL || signal == libc_signal::XCPU => {
            Err(Error::Invalid(format!(
                "compiling used more than its CPU time limit of {cpu_secs} s; the module was \
                 refused: make it smaller (fewer or smaller functions)"
            )))
        }
        (_, Some(_)) if message.contains("overflowed its stack") => Err(Error::Invalid(
            "compiling overflowed the compiler's stack (the module nests too deeply); the \
             module was refused"
                .into(),
        )),
        // Under the address-space limit a refused allocation aborts (SIGABRT), and a stack or
        // an allocator that cannot grow faults (SIGSEGV, SIGBUS).
        (_, Some(signal)) if libc_signal::OUT_OF_MEMORY.contains(&signal) => {
            Err(out_of_memory(memory_bytes))
        }
        _ => Err(Error::Core(tidemark_core::Error::Io {
            context: format!("the filter compiler failed ({status}): {message}"),
            source: std::io::Error::other("compile child failed"),
        })),
    }
}

fn out_of_memory(memory_bytes: u64) -> Error {
    Error::Invalid(format!(
        "compiling needs more memory than a compile may use ({}, \
         --filter-compile-memory-bytes); the module was refused: make it smaller (fewer or \
         smaller functions)",
        bytes_text(memory_bytes as usize)
    ))
}

/// Signal numbers, from rustix (no libc here).
mod libc_signal {
    use rustix::process::Signal;
    pub const KILL: i32 = Signal::KILL.as_raw();
    pub const XCPU: i32 = Signal::XCPU.as_raw();
    pub const OUT_OF_MEMORY: [i32; 3] = [
        Signal::ABORT.as_raw(),
        Signal::SEGV.as_raw(),
        Signal::BUS.as_raw(),
    ];
}

/// The compile child: what the executable runs when its first argument is [`CHILD_ARG`].
/// Nothing of the server is started: limits first, then one module, then exit.
pub fn child_main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let parsed = match args.as_slice() {
        [metered, memory, cpu] => memory
            .parse::<u64>()
            .ok()
            .zip(cpu.parse::<u64>().ok())
            .map(|(m, c)| (metered == "metered", m, c)),
        _ => None,
    };
    let Some((metered, memory_bytes, cpu_secs)) = parsed else {
        eprintln!("usage: {CHILD_ARG} metered|unmetered MEMORY_BYTES CPU_SECS < module.wasm");
        return ExitCode::from(EXIT_SETUP);
    };
    if let Err(e) = limit_self(memory_bytes, cpu_secs) {
        eprintln!("cannot limit the compiler process: {e}");
        return ExitCode::from(EXIT_SETUP);
    }
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut wasm) {
        eprintln!("reading the module: {e}");
        return ExitCode::from(match e.kind() {
            std::io::ErrorKind::OutOfMemory => EXIT_MEMORY,
            _ => EXIT_SETUP,
        });
    }
    let compiled = wasmtime::Engine::new(&crate::engine::code_config(metered)).and_then(|engine| {
        wasmtime::Module::new(&engine, &wasm).and_then(|module| module.serialize())
    });
    match compiled {
        Ok(artifact) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(&artifact).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("writing the artifact: {e}");
                    ExitCode::from(EXIT_SETUP)
                }
            }
        }
        Err(e) => {
            eprintln!("{e:#}");
            let out_of_memory = e.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::OutOfMemory)
                    || cause.to_string().contains("Cannot allocate memory")
            });
            ExitCode::from(if out_of_memory {
                EXIT_MEMORY
            } else {
                EXIT_INVALID
            })
        }
    }
}

/// Die with the parent; no core file; at most `memory_bytes` of address space and
/// `cpu_secs` of CPU (SIGXCPU then, SIGKILL a second later).
fn limit_self(memory_bytes: u64, cpu_secs: u64) -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, Signal, set_parent_process_death_signal, setrlimit};
    set_parent_process_death_signal(Some(Signal::KILL))?;
    let limit = |resource, current: u64, maximum: u64| {
        setrlimit(
            resource,
            Rlimit {
                current: Some(current),
                maximum: Some(maximum),
            },
        )
    };
    limit(Resource::Core, 0, 0)?;
    limit(Resource::Cpu, cpu_secs, cpu_secs + 1)?;
    limit(Resource::As, memory_bytes, memory_bytes)?;
    Ok(())
}
