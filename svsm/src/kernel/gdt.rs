//! GDT, TSS and the interrupt stacks.
//!
//! Every IDT gate switches to an IST stack (see `idt`): the C engine's assembly keeps
//! data in the red zone below `%rsp`, which an interrupt pushed onto the interrupted
//! stack would overwrite. The entry path then moves the handler off it, below that red
//! zone ([`svsm::nesting`]), so an IST stack only holds an event's first instructions.
//! Each IST stack has an unmapped guard page below it.
#![allow(
    unsafe_code,
    reason = "the CPU writes the IST stacks; loading segment registers"
)]

use alloc::boxed::Box;
use core::cell::UnsafeCell;

use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// IST slot (1-based, as the IDT encodes it) for #DF.
pub const IST_DOUBLE_FAULT: u16 = 1;
/// IST slot for NMI and #MC.
pub const IST_NMI: u16 = 2;
/// IST slot for the other exceptions.
pub const IST_EXCEPTION: u16 = 3;
/// IST slot for external interrupts.
pub const IST_INTERRUPT: u16 = 4;
/// IST slot for #HV (SEV-SNP restricted injection): a hypervisor can raise it while a
/// #VC or another exception is on `IST_EXCEPTION`, which a shared slot would overwrite.
pub const IST_HV: u16 = 5;

/// Bytes of a page (and of a guard page).
pub const PAGE: usize = 4096;
/// Bytes of one IST stack.
pub const IST_STACK_SIZE: usize = 32 * 1024;
/// IST stacks per CPU.
pub const IST_STACKS: usize = svsm::nesting::IST_SLOTS;

/// Guard page + stack, per IST slot.
#[repr(C, align(4096))]
struct IstArea(UnsafeCell<[[u8; PAGE + IST_STACK_SIZE]; IST_STACKS]>);

// SAFETY: Rust code never reads or writes the stacks; only the CPU does, while it runs
// the interrupt handlers on them.
unsafe impl Sync for IstArea {}

static IST_AREA: IstArea = IstArea(UnsafeCell::new([[0; PAGE + IST_STACK_SIZE]; IST_STACKS]));

struct Tables {
    gdt: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static TSS: Once<TaskStateSegment> = Once::new();
static TABLES: Once<Tables> = Once::new();

fn slot_base(slot: usize) -> u64 {
    IST_AREA.0.get() as u64 + (slot * (PAGE + IST_STACK_SIZE)) as u64
}

/// The tops of the boot CPU's IST stacks.
pub fn boot_ist_tops() -> [u64; IST_STACKS] {
    core::array::from_fn(|slot| slot_base(slot) + (PAGE + IST_STACK_SIZE) as u64)
}

/// The guard pages below the boot CPU's IST stacks (the page tables leave them
/// unmapped).
pub fn guard_pages() -> [u64; IST_STACKS] {
    core::array::from_fn(slot_base)
}

fn tss_with(ist_tops: [u64; IST_STACKS]) -> TaskStateSegment {
    let mut tss = TaskStateSegment::new();
    for (slot, top) in ist_tops.into_iter().enumerate() {
        tss.interrupt_stack_table[slot] = VirtAddr::new(top);
    }
    tss
}

fn tables_for(tss: &'static TaskStateSegment) -> Tables {
    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss = gdt.append(Descriptor::tss_segment(tss));
    Tables {
        gdt,
        code,
        data,
        tss,
    }
}

/// Loads the boot CPU's GDT and TSS and reloads the segment registers.
pub fn init() {
    let tss = TSS.call_once(|| tss_with(boot_ist_tops()));
    load(TABLES.call_once(|| tables_for(tss)));
}

/// Gives an AP its own GDT and TSS (a TSS is busy once loaded, and the IST stacks
/// must be the CPU's own), with the IST stacks whose tops are `ist_tops`, and loads
/// them. Runs on the AP.
pub fn init_ap(ist_tops: [u64; IST_STACKS]) {
    let tss: &'static TaskStateSegment = Box::leak(Box::new(tss_with(ist_tops)));
    load(Box::leak(Box::new(tables_for(tss))));
}

fn load(tables: &'static Tables) {
    tables.gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded (AMD APM vol. 2
    // §4.8 "Long-mode segment descriptors"), code for CS, data for the data segments;
    // the TSS descriptor points at a 'static TSS whose IST stacks exist, and this
    // CPU has loaded no other TSS from these tables (a loaded TSS is busy).
    unsafe { CS::set_reg(tables.code) };
    // SAFETY: as above.
    unsafe { DS::set_reg(tables.data) };
    // SAFETY: as above.
    unsafe { ES::set_reg(tables.data) };
    // SAFETY: as above.
    unsafe { SS::set_reg(tables.data) };
    // SAFETY: as above.
    unsafe { load_tss(tables.tss) };
}
