#!/usr/bin/env bash
# Launches the SVSM IGVM file (with OVMF inside it) and a Linux guest on an AMD SEV-SNP
# host. Needs an IGVM-capable QEMU (10.1 or later) and a host kernel with SNP and the
# multi-VMPL support COCONUT-SVSM documents; see README.md, "Running on an SNP host".
#
#   scripts/snp/launch.sh [--dry-run] [--igvm FILE] [--disk IMAGE] [--memory SIZE]
#                         [--smp N] [--cbitpos N] [--cpu MODEL] [--qemu PATH]
#                         [--vtpm-state-socket PATH]
#
# --dry-run prints the QEMU command line without checking the host or starting QEMU.
# --vtpm-state-socket connects the SVSM's COM3 (its vTPM state store channel) to the
# Unix socket a `vtpm-state-store --socket PATH --state FILE` listens on, so the vTPM
# keeps its sealed state between boots; without it the vTPM is new at every boot.
# The expected launch digest for the same vCPU count and CPU model (EPYC-v4 has the
# CPUID signature 0x800f12, the measure default; EPYC-Milan 0xa00f11, EPYC-Genoa 0xa10f10):
#   cargo run -p svsm-igvm -- measure --vcpus N [--vcpu-signature SIG] FILE
set -euo pipefail

QEMU=${QEMU:-qemu-system-x86_64}
IGVM=${IGVM:-target/svsm-ovmf.igvm}
DISK=${DISK:-guest.qcow2}
MEMORY=${MEMORY:-2G}
SMP=${SMP:-1}
CBITPOS=${CBITPOS:-51}
CPU=${CPU:-EPYC-v4}
DRY_RUN=0
STATE_SOCKET=

die() { echo "launch.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --igvm) IGVM=${2:?--igvm needs a file}; shift ;;
        --disk) DISK=${2:?--disk needs an image}; shift ;;
        --memory) MEMORY=${2:?--memory needs a size}; shift ;;
        --smp) SMP=${2:?--smp needs a count}; shift ;;
        --cbitpos) CBITPOS=${2:?--cbitpos needs a number}; shift ;;
        --qemu) QEMU=${2:?--qemu needs a path}; shift ;;
        --cpu) CPU=${2:?--cpu needs a model}; shift ;;
        --vtpm-state-socket) STATE_SOCKET=${2:?--vtpm-state-socket needs a path}; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) die "unknown option '$1' (try --help)" ;;
    esac
    shift
done

case "$SMP" in ''|*[!0-9]*|0) die "--smp '$SMP' is not a positive number" ;; esac
case "$CBITPOS" in ''|*[!0-9]*) die "--cbitpos '$CBITPOS' is not a number" ;; esac

cmd=(
    "$QEMU"
    -enable-kvm
    -cpu "$CPU"
    -machine "q35,confidential-guest-support=sev0,memory-backend=ram0,igvm-cfg=igvm0"
    -object "memory-backend-memfd,id=ram0,size=$MEMORY,share=true,prealloc=false"
    -object "sev-snp-guest,id=sev0,cbitpos=$CBITPOS,reduced-phys-bits=1"
    -object "igvm-cfg,id=igvm0,file=$IGVM"
    -m "$MEMORY"
    -smp "$SMP"
    -nographic
    -serial mon:stdio
    -device "virtio-scsi-pci,id=scsi0,disable-legacy=on,iommu_platform=true"
    -drive "if=none,id=disk0,format=qcow2,file=$DISK"
    -device "scsi-hd,drive=disk0,bootindex=1"
    -netdev "user,id=net0"
    -device "virtio-net-pci,netdev=net0,disable-legacy=on,iommu_platform=true,romfile="
)
if [ -n "$STATE_SOCKET" ]; then
    # COM2 unused, COM3 (0x3E8) to the store helper.
    cmd+=(-serial null -serial "unix:$STATE_SOCKET")
fi

if [ "$DRY_RUN" = 1 ]; then
    echo "${cmd[*]}"
    exit 0
fi

# Host checks: say what is missing instead of letting QEMU fail obscurely.
[ -f "$IGVM" ] || die "no IGVM file at $IGVM (build it: cargo xtask run)"
[ -f "$DISK" ] || die "no guest disk image at $DISK (--disk)"
[ -e /dev/sev ] || die "/dev/sev is missing: the host kernel has no SEV support loaded (kvm_amd, ccp)"
snp=$(cat /sys/module/kvm_amd/parameters/sev_snp 2>/dev/null || echo N)
[ "$snp" = Y ] || die "kvm_amd reports sev_snp=$snp: enable SNP in the BIOS and load kvm_amd with sev_snp=1"
version=$("$QEMU" --version | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
read -r major minor <<<"${version:-0 0}"
if [ "$major" -lt 10 ] || { [ "$major" -eq 10 ] && [ "$minor" -lt 1 ]; }; then
    die "$QEMU is version $major.$minor; IGVM launch needs QEMU 10.1 or later"
fi
"$QEMU" -object igvm-cfg,help >/dev/null 2>&1 \
    || die "$QEMU was built without IGVM support (configure --enable-igvm)"

exec "${cmd[@]}"
