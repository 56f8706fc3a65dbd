//! The fast classic-BPF engine: the translation of [`pipelines::cbpf::ebpf`] compiled to x86-64
//! by rbpf's JIT.
//!
//! Why running it is sound: the machine code comes only from a [`Translated`] (which only
//! `pipelines::cbpf::ebpf::translate` can build, and which passed rbpf's verifier), so it
//! - reads the [`JitCtx`] at constant in-bounds offsets,
//! - reads and writes only the 64 scratch bytes below its frame pointer, inside the 512-byte
//!   stack rbpf's prologue reserves,
//! - reads the frame only at `data + off` for `n` bytes after checking `off + n <= buflen`
//!   (computed in 64 bits), where `data`/`buflen` describe the slice passed to [`Engine::run`]
//!   or [`ChainEngine::run_from`] ([`JitCtx::new`] takes them from that slice); in a fast chain
//!   ([`pipelines::cbpf::translate_chain_fast`]) the check for a load at a constant offset may
//!   be the chain's single entry check `L <= buflen` with `off + n <= L`, which every path to
//!   the load passes,
//! - calls nothing, writes nothing else, and jumps only forward (it terminates).
//!
//! The same holds for chains ([`RbpfChainJit`]): one translated program running the programs
//! of consecutive filters (see [`pipelines::cbpf::ebpf`]).
//!
//! The tests (`pmd-glue/tests/bpf_jit.rs`) run every random program and chain through rbpf's
//! interpreter first, which checks each of those accesses, then compare the JIT with the
//! reference interpreter.
//!
//! rbpf's x86-64 JIT writes into a single 4096-byte page and panics when the code does not fit,
//! so [`RbpfJit::new`] first computes an upper bound of the machine code
//! ([`x86_size_bound`]) and refuses larger programs with [`JitError::TooLarge`]; the caller
//! keeps the interpreter for them.
use pipelines::cbpf::ebpf::{BurstCtx, JitCtx, TranslateError, Translated};
use pipelines::cbpf::{
    translate, translate_chain, translate_chain_burst, translate_chain_fast, ChainEngine, Engine,
    Meta, Mode, Program,
};
use rbpf::ebpf as e;
use std::fmt;

/// Bytes of machine code rbpf's JIT can hold (`jit.rs`: `NUM_PAGES * PAGE_SIZE`).
pub const JIT_CODE_LIMIT: usize = 4096;

/// Upper bound of the prologue and epilogue rbpf emits around every program: five pushes
/// (8 bytes), `mov r10, rdx` (3), `mov rbp, rsp` (3), `sub rsp, 512` (7), `call +5` (5),
/// `jmp exit` (5); then `add rsp, 512` (7), five pops (8), `ret` (1): 47, rounded up.
pub const PROLOGUE_EPILOGUE_BYTES: usize = 64;

/// Worst case of the x86-64 bytes rbpf 0.4's JIT (`jit.rs`) emits for one eBPF instruction
/// (opcode `opc`, offset field `off`), over every register choice; `None` for opcodes the
/// translator never emits (refused).
///
/// Building blocks (a REX prefix counted wherever one may appear): `emit_alu32` 3 (REX,
/// opcode, ModRM), `emit_alu64`/`emit_mov`/`emit_cmp` 3, with an imm32 7 and with an imm8 4;
/// `emit_load` 4 + displacement (REX, two opcode bytes for `movzx`, ModRM; the displacement
/// is one byte for `off` in -128..=127, else four); `emit_store` 4 + displacement (0x66, REX,
/// opcode, ModRM); `emit_load_imm` 10 (`movabs`); `jcc` 6; `jmp` 5; `push`/`pop` 2.
pub fn insn_size_bound(opc: u8, off: i16) -> Option<usize> {
    let disp = if i8::try_from(off).is_ok() { 1 } else { 4 };
    let n = match opc {
        e::EXIT => 1,
        e::JA => 5,
        e::MOV32_IMM => 7,
        e::MOV32_REG | e::MOV64_REG => 3,
        e::LD_DW_IMM => 10,
        e::LD_B_REG | e::LD_H_REG | e::LD_W_REG | e::LD_DW_REG => 4 + disp,
        e::ST_B_REG | e::ST_H_REG | e::ST_W_REG | e::ST_DW_REG => 4 + disp,
        e::ADD32_IMM | e::SUB32_IMM | e::OR32_IMM | e::AND32_IMM | e::XOR32_IMM => 7,
        e::ADD32_REG | e::SUB32_REG | e::OR32_REG | e::AND32_REG | e::XOR32_REG => 3,
        e::ADD64_IMM => 7,
        e::ADD64_REG | e::OR64_REG => 3,
        e::NEG32 => 3,
        e::LSH32_IMM | e::RSH32_IMM | e::LSH64_IMM => 4,
        // mov rcx, src; shift dst, cl.
        e::LSH32_REG | e::RSH32_REG => 6,
        // be16: 0x66 + rol imm8 (4) + and imm32 (7); be32/be64: REX + bswap (3).
        e::BE => 12,
        // emit_muldivmod: push rax/rdx (4), divisor into rcx (10), mov rax (3), xor edx (3),
        // REX (1), mul/div (3), result moves and pops (10): 34; div/mod by a register also
        // test it for zero (load_imm 10 + test 3 + jcc 6 + xor 3 + jmp 5): 61, rounded up.
        e::MUL32_IMM | e::MUL32_REG | e::DIV32_IMM | e::MOD32_IMM => 34,
        e::DIV32_REG | e::MOD32_REG => 64,
        // cmp/test with imm32 (7) + jcc (6).
        e::JEQ_IMM
        | e::JGT_IMM
        | e::JGE_IMM
        | e::JLT_IMM
        | e::JLE_IMM
        | e::JSET_IMM
        | e::JNE_IMM => 13,
        e::JEQ_IMM32
        | e::JGT_IMM32
        | e::JGE_IMM32
        | e::JLT_IMM32
        | e::JLE_IMM32
        | e::JSET_IMM32
        | e::JNE_IMM32 => 13,
        // cmp/test register (3) + jcc (6).
        e::JEQ_REG
        | e::JGT_REG
        | e::JGE_REG
        | e::JLT_REG
        | e::JLE_REG
        | e::JSET_REG
        | e::JNE_REG => 9,
        e::JEQ_REG32
        | e::JGT_REG32
        | e::JGE_REG32
        | e::JLT_REG32
        | e::JLE_REG32
        | e::JSET_REG32
        | e::JNE_REG32 => 9,
        _ => return None,
    };
    Some(n)
}

/// Upper bound of the machine code rbpf's JIT emits for `code` (eBPF bytecode), prologue and
/// epilogue included; `None` when it contains an opcode [`insn_size_bound`] does not know.
pub fn x86_size_bound(code: &[u8]) -> Option<usize> {
    let mut total = PROLOGUE_EPILOGUE_BYTES;
    let mut slots = code.chunks_exact(e::INSN_SIZE);
    while let Some(insn) = slots.next() {
        total += insn_size_bound(insn[0], i16::from_le_bytes([insn[2], insn[3]]))?;
        if insn[0] == e::LD_DW_IMM {
            slots.next(); // the second half of `lddw` emits nothing
        }
    }
    Some(total)
}

/// Why a program was not compiled. The caller keeps the interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JitError {
    /// The translation to eBPF failed.
    Translate(TranslateError),
    /// The machine code could exceed the JIT's one page.
    TooLarge {
        /// Upper bound of the machine code, bytes.
        bound: usize,
        /// What fits, bytes.
        limit: usize,
    },
    /// No JIT for this target (rbpf's JIT emits x86-64 only).
    Unsupported,
    /// rbpf refused the program (a translator bug).
    Rbpf(String),
}

impl fmt::Display for JitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JitError::Translate(e) => e.fmt(f),
            JitError::TooLarge { bound, limit } => write!(
                f,
                "the machine code could take {bound} bytes, rbpf's JIT holds {limit}"
            ),
            JitError::Unsupported => f.write_str("rbpf's JIT supports x86-64 only"),
            JitError::Rbpf(e) => write!(f, "rbpf: {e}"),
        }
    }
}

impl std::error::Error for JitError {}

impl From<TranslateError> for JitError {
    fn from(e: TranslateError) -> JitError {
        JitError::Translate(e)
    }
}

/// A classic-BPF program compiled to x86-64 by rbpf's JIT. Immutable, shared by every lcore;
/// a run allocates nothing.
pub struct RbpfJit {
    jit: imp::Compiled,
    uses_metadata: bool,
    code_bound: usize,
}

impl fmt::Debug for RbpfJit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbpfJit")
            .field("uses_metadata", &self.uses_metadata)
            .field("code_bound", &self.code_bound)
            .finish()
    }
}

impl RbpfJit {
    /// Translates and compiles `prog`.
    pub fn new(prog: &Program) -> Result<RbpfJit, JitError> {
        if !imp::SUPPORTED {
            return Err(JitError::Unsupported);
        }
        RbpfJit::from_translated(translate(prog)?)
    }

    /// Compiles a translation.
    pub fn from_translated(t: Translated) -> Result<RbpfJit, JitError> {
        if !imp::SUPPORTED {
            return Err(JitError::Unsupported);
        }
        if t.chain_len().is_some() {
            return Err(JitError::Rbpf("a chain needs RbpfChainJit".into()));
        }
        let bound = admit(&t)?;
        let uses_metadata = t.uses_metadata();
        Ok(RbpfJit {
            jit: imp::Compiled::new(t)?,
            uses_metadata,
            code_bound: bound,
        })
    }

    /// The upper bound of the machine code this program was admitted with, bytes.
    pub fn code_bound(&self) -> usize {
        self.code_bound
    }
}

impl Engine for RbpfJit {
    fn name(&self) -> &'static str {
        "rbpf-jit"
    }

    #[inline]
    fn run(&self, data: &[u8], wirelen: u32, meta: &Meta) -> u32 {
        let mut ctx = JitCtx::new(data, wirelen);
        if self.uses_metadata {
            ctx.set_meta(meta);
        }
        // A single program's result is a zero-extended 32-bit value.
        self.jit.run(&mut ctx).unwrap_or(0) as u32
    }
}

/// A chain of classic-BPF programs ([`pipelines::cbpf::ebpf::translate_chain`]: the programs of
/// consecutive filters on a hook) compiled to x86-64 by rbpf's JIT: one call, one context and
/// one prologue for all of them. Immutable, shared by every lcore; a run allocates nothing.
pub struct RbpfChainJit {
    jit: imp::Compiled,
    uses_metadata: bool,
    members: usize,
    code_bound: usize,
}

impl fmt::Debug for RbpfChainJit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbpfChainJit")
            .field("members", &self.members)
            .field("uses_metadata", &self.uses_metadata)
            .field("code_bound", &self.code_bound)
            .finish()
    }
}

impl RbpfChainJit {
    /// Translates and compiles the chain of `members` (program and mode, in filter order).
    /// [`JitError::TooLarge`] when the machine code could exceed the JIT's page: the caller
    /// then splits the chain.
    pub fn new(members: &[(&Program, Mode)]) -> Result<RbpfChainJit, JitError> {
        if !imp::SUPPORTED {
            return Err(JitError::Unsupported);
        }
        RbpfChainJit::compile(translate_chain(members)?)
    }

    /// Translates and compiles the burst variant of the chain of `members`
    /// ([`pipelines::cbpf::translate_chain_burst`]), for [`ChainEngine::run_burst`] only.
    pub fn new_burst(members: &[(&Program, Mode)]) -> Result<RbpfChainJit, JitError> {
        if !imp::SUPPORTED {
            return Err(JitError::Unsupported);
        }
        RbpfChainJit::compile(translate_chain_burst(members)?)
    }

    /// Translates and compiles the fast variant of the chain of `members`
    /// ([`pipelines::cbpf::translate_chain_fast`]); `Ok(None)` when it has none.
    pub fn new_fast(members: &[(&Program, Mode)]) -> Result<Option<RbpfChainJit>, JitError> {
        if !imp::SUPPORTED {
            return Err(JitError::Unsupported);
        }
        translate_chain_fast(members)?
            .map(RbpfChainJit::compile)
            .transpose()
    }

    fn compile(t: Translated) -> Result<RbpfChainJit, JitError> {
        let members = t
            .chain_len()
            .ok_or_else(|| JitError::Rbpf("not a chain".into()))?;
        let bound = admit(&t)?;
        let uses_metadata = t.uses_metadata();
        Ok(RbpfChainJit {
            jit: imp::Compiled::new(t)?,
            uses_metadata,
            members,
            code_bound: bound,
        })
    }

    /// Whether the chain of `members` would be admitted: its machine-code bound, or why not
    /// (without compiling it).
    pub fn fits(members: &[(&Program, Mode)]) -> Result<usize, JitError> {
        if !imp::SUPPORTED {
            return Err(JitError::Unsupported);
        }
        admit(&translate_chain(members)?)
    }

    /// Number of member programs.
    pub fn members(&self) -> usize {
        self.members
    }

    /// The upper bound of the machine code this chain was admitted with, bytes.
    pub fn code_bound(&self) -> usize {
        self.code_bound
    }
}

impl ChainEngine for RbpfChainJit {
    fn name(&self) -> &'static str {
        "rbpf-jit"
    }

    #[inline]
    fn run_from(&self, data: &[u8], wirelen: u32, meta: &Meta, start: u32) -> u64 {
        let mut ctx = JitCtx::new(data, wirelen);
        ctx.set_start(start);
        if self.uses_metadata {
            ctx.set_meta(meta);
        }
        // rbpf fails only for a program it did not compile, which `new` rules out; the fallback
        // is "no member decided".
        self.jit
            .run(&mut ctx)
            .unwrap_or((self.members as u64) << 32)
    }

    #[inline]
    fn run_burst(&self, ctx: &mut BurstCtx<'_>) -> Option<u64> {
        self.jit.run_burst(ctx)
    }
}

/// The machine-code bound of `t`, or why the JIT cannot take it.
fn admit(t: &Translated) -> Result<usize, JitError> {
    let bound = x86_size_bound(t.code()).ok_or_else(|| {
        JitError::Rbpf("the translation has an opcode without a size bound".into())
    })?;
    if bound > JIT_CODE_LIMIT {
        return Err(JitError::TooLarge {
            bound,
            limit: JIT_CODE_LIMIT,
        });
    }
    Ok(bound)
}

#[cfg(all(target_arch = "x86_64", not(windows)))]
mod imp {
    use super::JitError;
    use pipelines::cbpf::ebpf::{BurstCtx, JitCtx, Translated};
    use rbpf::EbpfVmMbuff;
    use std::mem::{size_of, ManuallyDrop};
    use std::ptr::NonNull;

    pub(super) const SUPPORTED: bool = true;

    /// The bytecode, leaked from its `Box` so that the VM can borrow it for `'static`, and freed
    /// by [`Compiled`]'s `Drop` after the VM. Only ever read.
    struct OwnedCode(NonNull<[u8]>);

    impl Drop for OwnedCode {
        fn drop(&mut self) {
            // SAFETY: the pointer comes from `Box::leak` in `Compiled::new` and is freed only
            // here, once. The only borrow of the bytes (the VM's) has ended: `Compiled::drop`
            // drops the VM before its fields (this one) are dropped.
            drop(unsafe { Box::from_raw(self.0.as_ptr()) });
        }
    }

    /// The VM holding the JIT-compiled page, and the bytecode it borrows.
    pub(super) struct Compiled {
        /// Borrows `code` with a `'static` lifetime that is really "until `Compiled::drop`";
        /// never handed out.
        vm: ManuallyDrop<EbpfVmMbuff<'static>>,
        /// A burst chain (its context is a `BurstCtx`, else a `JitCtx`).
        burst: bool,
        /// Held for its `Drop`, which frees the bytes after the VM is gone.
        _code: OwnedCode,
    }

    impl Drop for Compiled {
        fn drop(&mut self) {
            // SAFETY: the VM is dropped exactly once, here, and never used afterwards; this
            // ends its borrow of `code` before `code`'s own `Drop` frees the bytes.
            unsafe { ManuallyDrop::drop(&mut self.vm) }
        }
    }

    // SAFETY: `EbpfVmMbuff` is neither `Send` nor `Sync` only because its stack verifier may
    // hold a `Box<dyn Any>` for a custom stack-usage calculator; this VM never gets one
    // (`set_stack_usage_calculator` is never called), and its other parts (helper and
    // allowed-memory tables, both empty; the JIT page; fn pointers) are plain data. `code` is
    // the unique owner of immutable bytes, like a `Box<[u8]>`. After construction only
    // `execute_program_jit(&self)` is called: it reads the page and runs machine code whose only
    // state is its own stack and the context and frame of that call, so concurrent runs from
    // several lcores share nothing mutable.
    unsafe impl Send for Compiled {}
    // SAFETY: as for `Send` above.
    unsafe impl Sync for Compiled {}

    impl Compiled {
        /// Compiles `t`, whose machine code the caller checked fits the JIT's page.
        pub(super) fn new(t: Translated) -> Result<Compiled, JitError> {
            let burst = t.is_burst();
            let code = OwnedCode(NonNull::from(Box::leak(t.into_code())));
            // SAFETY: the bytes stay allocated and unchanged until `OwnedCode::drop`, which
            // runs after the VM holding this reference is dropped (`Compiled::drop`; on the
            // error path below the VM is dropped before `code` too, as a `Compiled`).
            let bytes: &'static [u8] = unsafe { code.0.as_ref() };
            let vm = match EbpfVmMbuff::new(Some(bytes)) {
                Ok(vm) => vm,
                Err(e) => return Err(JitError::Rbpf(e.to_string())),
            };
            let mut c = Compiled {
                vm: ManuallyDrop::new(vm),
                burst,
                _code: code,
            };
            c.vm.jit_compile()
                .map_err(|e| JitError::Rbpf(e.to_string()))?;
            Ok(c)
        }

        #[inline]
        pub(super) fn run(&self, ctx: &mut JitCtx) -> Option<u64> {
            if self.burst {
                // Its code reads a `BurstCtx`: never hand it a smaller context.
                return None;
            }
            // SAFETY: `JitCtx` is `#[repr(C)]` of integer fields with explicit padding (its
            // layout is const-asserted in `pipelines`: 56 bytes, no implicit padding), so all
            // of its bytes are initialized and any byte pattern is valid; the slice borrows
            // `ctx` exclusively for this call.
            let mbuff = unsafe {
                std::slice::from_raw_parts_mut(
                    (ctx as *mut JitCtx).cast::<u8>(),
                    size_of::<JitCtx>(),
                )
            };
            // The generated code never touches rbpf's `mem` area (no LD_ABS/LD_IND).
            let mut no_mem: [u8; 0] = [];
            // SAFETY: the page was compiled (in `new`) from a `Translated`, whose code only
            // reads `ctx` at in-bounds offsets, its own stack slots, and `ctx.data[off..off + n]`
            // after checking `off + n <= ctx.buflen`; `ctx` was built by `JitCtx::new` from
            // the frame slice the caller borrows for this call (see the module documentation).
            // rbpf only returns `Err` when the program was not compiled, which `new` rules out.
            unsafe { self.vm.execute_program_jit(&mut no_mem, mbuff) }.ok()
        }

        /// Runs a burst chain over `ctx`: its mask.
        #[inline]
        pub(super) fn run_burst(&self, ctx: &mut BurstCtx<'_>) -> Option<u64> {
            if !self.burst {
                return None;
            }
            // SAFETY: `BurstCtx` is `#[repr(C)]` of integer fields with explicit padding (its
            // layout is const-asserted in `pipelines`: `BurstCtx::SIZE` bytes, no implicit
            // padding; the `PhantomData` is zero-sized), so all of its bytes are initialized
            // and any byte pattern is valid; the slice borrows `ctx` exclusively for this call.
            let mbuff = unsafe {
                std::slice::from_raw_parts_mut(
                    (ctx as *mut BurstCtx<'_>).cast::<u8>(),
                    size_of::<BurstCtx<'_>>(),
                )
            };
            let mut no_mem: [u8; 0] = [];
            // SAFETY: the page was compiled (in `new`) from a burst `Translated`
            // (`translate_chain_burst`), whose code reads the count at offset 0, clamps it to
            // `BURST_MAX`, and runs the fast chain's code once per slot with the slot as its
            // `JitCtx` (slots lie inside the `BurstCtx::SIZE` bytes); each slot's frame was
            // pushed as a slice borrowed for the context's lifetime, which outlives this call,
            // and is only read after checking its bounds as in `run`. Besides its stack, the
            // code writes nothing. rbpf only returns `Err` for a program it did not compile.
            unsafe { self.vm.execute_program_jit(&mut no_mem, mbuff) }.ok()
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", not(windows))))]
mod imp {
    use super::JitError;
    use pipelines::cbpf::ebpf::{BurstCtx, JitCtx, Translated};

    pub(super) const SUPPORTED: bool = false;

    /// No JIT on this target: never constructed.
    pub(super) enum Compiled {}

    impl Compiled {
        pub(super) fn new(_: Translated) -> Result<Compiled, JitError> {
            Err(JitError::Unsupported)
        }

        pub(super) fn run(&self, _: &mut JitCtx) -> Option<u64> {
            match *self {}
        }

        pub(super) fn run_burst(&self, _: &mut BurstCtx<'_>) -> Option<u64> {
            match *self {}
        }
    }
}
