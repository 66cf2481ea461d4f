//! svsm-igvm's inputs: the kernel ELF, the OVMF image (its SEV metadata), and IGVM files
//! for `measure` and `inspect`.
//!
//! Input: one selector byte, then the file. Errors are expected; a panic, a hang or an
//! unbounded allocation is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let _ = svsm_igvm::elf::KernelImage::parse(data);
        }
        1 => {
            let _ = svsm_igvm::firmware::Firmware::parse(data.to_vec());
        }
        _ => {
            if let Ok(file) = svsm_igvm::parse_igvm(data) {
                let _ = svsm_igvm::inspect::listing(&file);
                let _ =
                    svsm_igvm::measure::measure(&file, &svsm_igvm::measure::HostConfig::default());
            }
        }
    }
});
