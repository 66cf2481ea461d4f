"""Cross-checks svsm-igvm against sev-snp-measure, an independent implementation.

Input: a JSON file written by tests/crosscheck.rs. Checks, each against sev-snp-measure's
own code: the OVMF SEV metadata; the launch digest after the OVMF pages (its
calc_snp_ovmf_hash); the VMSA page bytes of the BSP (built with its SevEsSaveArea) and of
an AP in reset state (its QEMU model); and the final digest, replaying the other steps
through its GCTX (the PAGE_INFO encoding) with the VMSA pages hashed by it.
"""
import json
import sys

from sevsnpmeasure.gctx import GCTX
from sevsnpmeasure.guest import calc_snp_ovmf_hash
from sevsnpmeasure.ovmf import OVMF
from sevsnpmeasure.vmm_types import VMMType
from sevsnpmeasure.vmsa import VMSA, SevEsSaveArea, VmcbSeg

VMSA_TYPE = 2

ours = json.load(open(sys.argv[1]))
failures = []
checks = 0


def check(name, mine, theirs):
    global checks
    checks += 1
    if mine != theirs:
        failures.append(name)
        print(f"crosscheck: MISMATCH {name}:\n  svsm-igvm:       {mine}\n  sev-snp-measure: {theirs}")
    else:
        print(f"crosscheck: ok {name}")


ovmf = OVMF(ours["ovmf"])
check("OVMF SEV metadata sections",
      ours["sections"], [[s.gpa, s.size, s.section_type_int] for s in ovmf.metadata_items()])
check("OVMF image GPA", ours["ovmf_gpa"], ovmf.gpa())

ovmf_pages = ours["ovmf_pages"]
ovmf_digest = calc_snp_ovmf_hash(ours["ovmf"]).hex()
check("digest after the OVMF pages", ours["steps"][ovmf_pages - 1]["digest"], ovmf_digest)

l = ours["launch"]
data = VmcbSeg(0x10, 0xc93, 0xffffffff, 0)
bsp = SevEsSaveArea(
    es=data, cs=VmcbSeg(0x08, 0xc9b, 0xffffffff, 0), ss=data, ds=data, fs=data, gs=data,
    gdtr=VmcbSeg(0, 0, 0xffff, 0), idtr=VmcbSeg(0, 0, 0xffff, 0),
    ldtr=VmcbSeg(0, 0x82, 0xffff, 0), tr=VmcbSeg(0, 0x8b, 0xffff, 0),
    efer=0x1000, cr4=0x40, cr0=0x31, dr7=0x400, dr6=0xffff0ff0, rflags=0x2,
    rip=l["rip"], rax=l["rax"], rbx=l["rbx"], g_pat=0x7040600070406,
    sev_features=l["sev_features"], xcr0=0x1, mxcsr=0x1f80, x87_fcw=0x37f)
bsp_page = bytes(bsp)
check("BSP VMSA page", ours["vmsa"][0], bsp_page.hex())
ap_page = bytes(VMSA.build_save_area(VMSA.BSP_EIP, l["sev_features"], l["vcpu_signature"], VMMType.QEMU))
check("AP reset VMSA page", ours["vmsa"][1], ap_page.hex())

gctx = GCTX(seed=bytes.fromhex(ovmf_digest))
vmsa_pages = iter([bsp_page, ap_page])
for step in ours["steps"][ovmf_pages:]:
    if step["type"] == VMSA_TYPE:
        gctx.update_vmsa_page(next(vmsa_pages))
    else:
        gctx._update(step["type"], step["gpa"], bytes.fromhex(step["contents"]))
check("launch digest", ours["digest"], gctx.hex_ld())

if failures:
    print(f"crosscheck: {len(failures)} of {checks} checks disagree")
    sys.exit(1)
print(f"crosscheck: {checks} checks agree")
