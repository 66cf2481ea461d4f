#!/bin/sh
# Keylime tenant `ek_check_script` for the SVSM's vTPM: accepts an agent's EK only when
# the SVSM's endorsement evidence vouches for it, checked by `svsm-verify ek`:
# AMD ARK -> ASK -> VCEK -> SNP report (launch measurement, VMPL0, policy, TCB) ->
# per-boot endorsement CA -> EK certificate -> the EK the agent registered.
#
# Keylime sets (keylime/tenant.py, check_ek):
#   AGENT_UUID  the agent
#   EK_CERT     the EK certificate the agent registered, base64 DER (from NV 0x01C00002
#               or 0x01C0000A)
#   EK_TPM      the EK as a TPM2B_PUBLIC, base64
# The rest of the evidence never reaches Keylime, so it comes from the guest's NV, saved
# per agent (for example by the provisioning step that installs the agent:
#   for i in 0x01C00002 0x01C0000A 0x01C00100 0x01C00101; do tpm2_nvread $i -o $i.der; done
#   tpm2_nvread 0x01C00110 -o 0x01C00110.bin):
#   SVSM_EVIDENCE_DIR/<AGENT_UUID>/0x01C00002.der 0x01C0000A.der 0x01C00100.der
#                                  0x01C00110.bin [0x01C00101.der]
# Configuration (environment of keylime_tenant):
#   SVSM_EVIDENCE_DIR   where the per-agent NV dumps are
#   SVSM_ASK, SVSM_ARK  AMD's ASK and ARK for the product (the ARK is the trust anchor)
#   SVSM_VCEK           the VCEK certificate, if NV 0x01C00101 is absent (AMD's KDS)
#   SVSM_MEASUREMENT    the expected launch measurement (svsm-igvm measure), 96 hex digits
#   SVSM_MIN_TCB        optional minimum TCB, e.g. bl=3,tee=0,snp=8,ucode=115
#   SVSM_VERIFY         the svsm-verify binary (default: svsm-verify on PATH)
# Exit status 0 accepts the EK; anything else refuses it, with the reason on stdout.
set -eu

fail() {
    echo "ek_check_svsm: $*"
    exit 1
}

: "${AGENT_UUID:?AGENT_UUID is not set}"
: "${SVSM_EVIDENCE_DIR:?SVSM_EVIDENCE_DIR is not set}"
: "${SVSM_ASK:?SVSM_ASK is not set}"
: "${SVSM_ARK:?SVSM_ARK is not set}"
: "${SVSM_MEASUREMENT:?SVSM_MEASUREMENT is not set (the launch measurement is required)}"
verify=${SVSM_VERIFY:-svsm-verify}
dir="$SVSM_EVIDENCE_DIR/$AGENT_UUID"
[ -d "$dir" ] || fail "no SVSM evidence for agent $AGENT_UUID in $SVSM_EVIDENCE_DIR"
[ -n "${EK_CERT:-}" ] || fail "the agent registered no EK certificate"
[ -n "${EK_TPM:-}" ] || fail "the agent registered no EK"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%s' "$EK_CERT" | base64 -d > "$tmp/ek-cert.der" 2>/dev/null \
    || fail "EK_CERT is not base64"
printf '%s' "$EK_TPM" | base64 -d > "$tmp/ek.tpm" 2>/dev/null || fail "EK_TPM is not base64"

# The registered certificate must be one of the two the SVSM wrote.
if cmp -s "$tmp/ek-cert.der" "$dir/0x01C00002.der"; then
    ek_flag=--ek-rsa-public
elif cmp -s "$tmp/ek-cert.der" "$dir/0x01C0000A.der"; then
    ek_flag=--ek-ecc-public
else
    fail "the registered EK certificate is not one the SVSM wrote for this agent"
fi

vcek=${SVSM_VCEK:-$dir/0x01C00101.der}
[ -f "$vcek" ] || fail "no VCEK certificate (NV 0x01C00101 absent and SVSM_VCEK unset)"

set -- ek \
    --rsa-ek-cert "$dir/0x01C00002.der" \
    --ecc-ek-cert "$dir/0x01C0000A.der" \
    --ca-cert "$dir/0x01C00100.der" \
    --report "$dir/0x01C00110.bin" \
    --vcek "$vcek" --ask "$SVSM_ASK" --ark "$SVSM_ARK" \
    --measurement "$SVSM_MEASUREMENT" \
    "$ek_flag" "$tmp/ek.tpm"
if [ -n "${SVSM_MIN_TCB:-}" ]; then
    set -- "$@" --min-tcb "$SVSM_MIN_TCB"
fi
"$verify" "$@" 2>&1 || fail "svsm-verify refused the evidence"
