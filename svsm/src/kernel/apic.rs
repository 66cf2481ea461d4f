//! The local APIC (xAPIC, memory mapped): its timer, end-of-interrupt and IPIs.
//!
//! Only the interrupt stress test starts the timer; the legacy 8259 PICs are masked so
//! nothing else interrupts. Every CPU enables its own APIC ([`init_local`]); the boot
//! CPU starts the others with INIT and start-up IPIs and all of them send the kernel's
//! call and shootdown IPIs through the ICR ([`XApicIpi`]).
#![allow(unsafe_code, reason = "memory-mapped APIC registers")]

use core::sync::atomic::{AtomicU64, Ordering};

use svsm::arch::io::outb;
use x86_64::registers::model_specific::Msr;

use svsm::smp::apic::{Ipi, ICR_DELIVERY_PENDING, XAPIC_ICR_HIGH, XAPIC_ICR_LOW};
use svsm::smp::{IpiSend, SmpError};

use super::idt::{SPURIOUS_VECTOR, TIMER_VECTOR};

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_GLOBAL_ENABLE: u64 = 1 << 11;
const REG_ID: u64 = 0x20;
const REG_EOI: u64 = 0xb0;
const REG_SPURIOUS: u64 = 0xf0;
const REG_LVT_TIMER: u64 = 0x320;
const REG_TIMER_INITIAL: u64 = 0x380;
const REG_TIMER_DIVIDE: u64 = 0x3e0;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;

static BASE: AtomicU64 = AtomicU64::new(0);

/// The APIC's physical (= virtual) base address.
pub fn base() -> u64 {
    let base = BASE.load(Ordering::Relaxed);
    if base != 0 {
        return base;
    }
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU with an APIC (Intel SDM vol. 3A
    // §11.4.4); reading it has no side effects.
    let value = unsafe { Msr::new(IA32_APIC_BASE).read() };
    let base = value & 0x000f_ffff_ffff_f000;
    BASE.store(base, Ordering::Relaxed);
    base
}

fn write(register: u64, value: u32) {
    // SAFETY: a 32-bit aligned store to an xAPIC register (Intel SDM vol. 3A §11.4.1,
    // table 11-1); the page tables map the APIC page uncached.
    unsafe { core::ptr::write_volatile((base() + register) as *mut u32, value) }
}

fn read(register: u64) -> u32 {
    // SAFETY: a 32-bit aligned load from an xAPIC register (Intel SDM vol. 3A §11.4.1,
    // table 11-1); the page tables map the APIC page uncached.
    unsafe { core::ptr::read_volatile((base() + register) as *const u32) }
}

/// Masks the 8259 PICs and software-enables the boot CPU's APIC.
pub fn init() {
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    init_local();
}

/// This CPU's APIC ID (xAPIC ID register bits 31:24, Intel SDM vol. 3A §11.4.6).
pub fn id() -> u32 {
    read(REG_ID) >> 24
}

/// Software-enables this CPU's APIC with the spurious vector, timer masked.
pub fn init_local() {
    let mut msr = Msr::new(IA32_APIC_BASE);
    // SAFETY: reading IA32_APIC_BASE has no side effects (Intel SDM vol. 3A §11.4.4).
    let value = unsafe { msr.read() };
    // SAFETY: sets the global enable bit only, keeping the base (§11.4.3).
    unsafe { msr.write(value | APIC_GLOBAL_ENABLE) };
    write(REG_SPURIOUS, 0x100 | u32::from(SPURIOUS_VECTOR));
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
}

/// Starts the timer: periodic, every `count` bus clocks (divide by 1).
pub fn start_timer(count: u32) {
    write(REG_TIMER_DIVIDE, 0b1011);
    write(REG_LVT_TIMER, LVT_PERIODIC | u32::from(TIMER_VECTOR));
    write(REG_TIMER_INITIAL, count);
}

/// Stops the timer.
pub fn stop_timer() {
    write(REG_TIMER_INITIAL, 0);
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
}

/// Acknowledges the interrupt being handled.
pub fn end_of_interrupt() {
    write(REG_EOI, 0);
}

/// Sends `ipi` to `apic_id` through the xAPIC ICR (high half first: writing the low
/// half sends, Intel SDM vol. 3A §11.6.1) and waits until the APIC accepted it.
pub fn send(apic_id: u32, ipi: Ipi) -> Result<(), SmpError> {
    let (high, low) = ipi.xapic(apic_id).map_err(|_| SmpError::Ipi(apic_id))?;
    write(XAPIC_ICR_HIGH, high);
    write(XAPIC_ICR_LOW, low);
    for _ in 0..10_000_000u32 {
        if read(XAPIC_ICR_LOW) & ICR_DELIVERY_PENDING == 0 {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(SmpError::Ipi(apic_id))
}

/// The kernel's IPIs through the xAPIC (QEMU without SEV).
#[derive(Debug, Clone, Copy)]
pub struct XApicIpi;

impl IpiSend for XApicIpi {
    fn send(&self, apic_id: u32, vector: u8) -> Result<(), SmpError> {
        send(apic_id, Ipi::Fixed(vector))
    }
}
