//! What the SVSM's #VC handler does with an intercepted instruction.
//!
//! A #VC (vector 29, AMD APM vol. 2 "#VC Exception") carries the SVM exit code
//! as its error code. The SVSM resolves exactly three kinds, as Linux's `vc_handle_exitcode`
//! does for the same codes (GHCB spec 56421, "Non-Automatic Exits"):
//! - CPUID (0x72): answered from the CPUID page the PSP checked, never from the
//!   hypervisor;
//! - MSR (0x7C): RDMSR/WRMSR forwarded through the GHCB;
//! - IOIO (0x7B): IN/OUT with an immediate or DX port, forwarded through the GHCB.
//!
//! Everything else is refused with a typed error (the caller terminates): string and
//! REP I/O, an exit code the SVSM never causes (a hypervisor injecting #VC with a
//! made-up code), and instruction bytes that do not match the exit code. The handler
//! reads the instruction bytes once, from SVSM memory (the SVSM only runs its own
//! code), and advances RIP by the decoded length only on success.

use super::cpuid::CpuidPage;
use super::hypervisor::{HvClient, IoSize};
use super::{GhcbTransport, SnpError};

/// `SVM_EXIT_CPUID`.
pub const EXIT_CPUID: u64 = 0x72;
/// `SVM_EXIT_IOIO`.
pub const EXIT_IOIO: u64 = 0x7B;
/// `SVM_EXIT_MSR`.
pub const EXIT_MSR: u64 = 0x7C;

/// Why a #VC was not resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcError {
    /// An exit code the SVSM does not handle.
    UnsupportedExit(u64),
    /// The instruction at RIP is not one the exit code describes.
    InstructionMismatch(u64),
    /// A string or REP I/O instruction.
    StringIo,
}

/// The registers the handled instructions read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VcRegisters {
    /// RAX.
    pub rax: u64,
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
}

/// A decoded IN/OUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoInstruction {
    /// The port.
    pub port: u16,
    /// The operand size.
    pub size: IoSize,
    /// IN (true) or OUT.
    pub is_in: bool,
    /// Instruction length.
    pub len: usize,
}

/// Decodes a non-string IN/OUT (opcodes E4-E7, EC-EF, optionally with the 0x66
/// operand-size prefix); `rdx` gives the port of the DX forms.
pub fn decode_io(insn: &[u8], rdx: u64) -> Result<IoInstruction, VcError> {
    let (prefix, rest) = match insn.first() {
        Some(0x66) => (1usize, insn.get(1..).unwrap_or_default()),
        _ => (0, insn),
    };
    let opcode = *rest
        .first()
        .ok_or(VcError::InstructionMismatch(EXIT_IOIO))?;
    let wide = if prefix == 1 {
        IoSize::Word
    } else {
        IoSize::Dword
    };
    let (is_in, size, imm) = match opcode {
        0xE4 => (true, IoSize::Byte, true),
        0xE5 => (true, wide, true),
        0xE6 => (false, IoSize::Byte, true),
        0xE7 => (false, wide, true),
        0xEC => (true, IoSize::Byte, false),
        0xED => (true, wide, false),
        0xEE => (false, IoSize::Byte, false),
        0xEF => (false, wide, false),
        0x6C..=0x6F | 0xF2 | 0xF3 => return Err(VcError::StringIo),
        _ => return Err(VcError::InstructionMismatch(EXIT_IOIO)),
    };
    let (port, len) = if imm {
        let port = *rest.get(1).ok_or(VcError::InstructionMismatch(EXIT_IOIO))?;
        (u16::from(port), prefix.saturating_add(2))
    } else {
        ((rdx & 0xFFFF) as u16, prefix.saturating_add(1))
    };
    Ok(IoInstruction {
        port,
        size,
        is_in,
        len,
    })
}

/// Resolves one #VC with `error_code` for the instruction `insn` (bytes at RIP),
/// updating `regs`; returns the instruction length to skip.
pub fn handle_vc<T: GhcbTransport>(
    error_code: u64,
    insn: &[u8],
    regs: &mut VcRegisters,
    cpuid: &CpuidPage,
    hv: &HvClient<T>,
) -> Result<usize, SnpError> {
    let fail = |e| SnpError::Vc(e);
    match error_code {
        EXIT_CPUID => {
            if insn.get(..2) != Some(&[0x0F, 0xA2]) {
                return Err(fail(VcError::InstructionMismatch(EXIT_CPUID)));
            }
            let r = cpuid.lookup(regs.rax as u32, regs.rcx as u32);
            regs.rax = r.eax.into();
            regs.rbx = r.ebx.into();
            regs.rcx = r.ecx.into();
            regs.rdx = r.edx.into();
            Ok(2)
        }
        EXIT_MSR => {
            let msr = regs.rcx as u32;
            match insn.get(..2) {
                Some([0x0F, 0x32]) => {
                    let value = hv.read_msr(msr)?;
                    regs.rax = value & 0xFFFF_FFFF;
                    regs.rdx = value >> 32;
                    Ok(2)
                }
                Some([0x0F, 0x30]) => {
                    let value = (regs.rdx << 32) | (regs.rax & 0xFFFF_FFFF);
                    hv.write_msr(msr, value)?;
                    Ok(2)
                }
                _ => Err(fail(VcError::InstructionMismatch(EXIT_MSR))),
            }
        }
        EXIT_IOIO => {
            let io = decode_io(insn, regs.rdx).map_err(fail)?;
            if io.is_in {
                let value = hv.io_in(io.port, io.size)?;
                // IN to AL/AX leaves the rest of RAX; IN to EAX zero-extends.
                regs.rax = match io.size {
                    IoSize::Dword => value,
                    size => (regs.rax & !size.mask()) | value,
                };
            } else {
                hv.io_out(io.port, io.size, regs.rax & io.size.mask())?;
            }
            Ok(io.len)
        }
        other => Err(fail(VcError::UnsupportedExit(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snp::cpuid::CpuidEntry;
    use crate::snp::GhcbError;
    use std::sync::Mutex;
    use svsm_protocol::ghcb::{Ghcb, GhcbField};

    /// exit code, exit_info_1, RCX and RAX of a request, as far as they are valid.
    type Seen = (u64, u64, Option<u64>, Option<u64>);

    /// A hypervisor that records the last GHCB request and answers with a closure.
    struct Peer {
        last: Mutex<Option<Seen>>,
        answer: fn(&mut Ghcb),
    }

    impl GhcbTransport for Peer {
        fn msr_exchange(&self, _: u64) -> u64 {
            0
        }
        fn ghcb_exchange(&self, g: &mut Ghcb) {
            *self.last.lock().unwrap() = Some((
                g.sw_exit_code,
                g.sw_exit_info_1,
                g.get_if_valid(GhcbField::Rcx),
                g.get_if_valid(GhcbField::Rax),
            ));
            let request_info1 = g.sw_exit_info_1;
            (self.answer)(g);
            // Success unless the answer says otherwise.
            if g.sw_exit_info_1 == request_info1 {
                g.sw_exit_info_1 = 0;
            }
        }
    }

    fn peer(answer: fn(&mut Ghcb)) -> HvClient<Peer> {
        HvClient::new(Peer {
            last: Mutex::new(None),
            answer,
        })
    }

    fn cpuid() -> CpuidPage {
        CpuidPage::parse(
            &CpuidPage::encode(&[CpuidEntry {
                eax_in: 0x8000_001F,
                eax: 0x1_001B,
                ebx: 0x173,
                ..Default::default()
            }])
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn cpuid_is_answered_from_the_page_without_the_hypervisor() {
        let hv = peer(|_| panic!("CPUID must not reach the hypervisor"));
        let mut regs = VcRegisters {
            rax: 0x8000_001F,
            ..Default::default()
        };
        assert_eq!(
            handle_vc(0x72, &[0x0F, 0xA2], &mut regs, &cpuid(), &hv),
            Ok(2)
        );
        assert_eq!((regs.rax, regs.rbx), (0x1_001B, 0x173));
    }

    #[test]
    fn msr_and_io_go_through_the_ghcb() {
        let hv = peer(|g| {
            g.set(GhcbField::Rax, 0x1234_5678);
            g.set(GhcbField::Rdx, 0x9);
        });
        let mut regs = VcRegisters {
            rcx: 0x1B,
            ..Default::default()
        };
        assert_eq!(
            handle_vc(0x7C, &[0x0F, 0x32], &mut regs, &cpuid(), &hv),
            Ok(2)
        );
        assert_eq!((regs.rax, regs.rdx), (0x1234_5678, 0x9));
        assert_eq!(
            *hv.transport().last.lock().unwrap(),
            Some((0x7C, 0, Some(0x1B), None))
        );
        // OUT DX, AL with DX = 0x3F8.
        let hv = peer(|_| {});
        let mut regs = VcRegisters {
            rax: 0xAB41,
            rdx: 0x3F8,
            ..Default::default()
        };
        assert_eq!(handle_vc(0x7B, &[0xEE], &mut regs, &cpuid(), &hv), Ok(1));
        assert_eq!(
            *hv.transport().last.lock().unwrap(),
            Some((0x7B, 0x03F8_0210, None, Some(0x41)))
        );
        // IN AL, 0x60 keeps RAX above AL.
        let hv = peer(|g| g.set(GhcbField::Rax, 0xFF_FF77));
        let mut regs = VcRegisters {
            rax: 0x1111_2200,
            ..Default::default()
        };
        assert_eq!(
            handle_vc(0x7B, &[0xE4, 0x60], &mut regs, &cpuid(), &hv),
            Ok(2)
        );
        assert_eq!(regs.rax, 0x1111_2277);
        // 16-bit IN AX, DX.
        assert_eq!(
            decode_io(&[0x66, 0xED], 0x1_0CFC).unwrap(),
            IoInstruction {
                port: 0xCFC,
                size: IoSize::Word,
                is_in: true,
                len: 2
            }
        );
    }

    #[test]
    fn what_must_be_refused_is_refused() {
        let hv = peer(|_| {});
        let mut regs = VcRegisters::default();
        let before = regs;
        // #VC with an exit code the SVSM never causes (e.g. an injected NPF, VMMCALL).
        for code in [0x400, 0x81, 0x6F, u64::MAX] {
            assert_eq!(
                handle_vc(code, &[0x0F, 0xA2], &mut regs, &cpuid(), &hv),
                Err(SnpError::Vc(VcError::UnsupportedExit(code)))
            );
        }
        // Bytes that do not match the code.
        assert!(handle_vc(0x72, &[0x0F, 0x32], &mut regs, &cpuid(), &hv).is_err());
        assert!(handle_vc(0x7C, &[0x0F, 0xA2], &mut regs, &cpuid(), &hv).is_err());
        assert!(handle_vc(0x7C, &[], &mut regs, &cpuid(), &hv).is_err());
        // String and REP I/O.
        assert_eq!(
            handle_vc(0x7B, &[0xF3, 0x6E], &mut regs, &cpuid(), &hv),
            Err(SnpError::Vc(VcError::StringIo))
        );
        assert_eq!(regs, before, "a refused #VC changes no register");
        // The hypervisor failing the access is an error, not a value.
        let bad = peer(|g| {
            g.sw_exit_info_1 = 2;
        });
        let mut regs = VcRegisters::default();
        assert!(matches!(
            handle_vc(0x7C, &[0x0F, 0x32], &mut regs, &cpuid(), &bad),
            Err(SnpError::Ghcb(GhcbError::Vmm { .. }))
        ));
    }
}
