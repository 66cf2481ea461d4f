#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora from the project's real artifacts.

Run from the repository root: python3 fuzz/seeds/make_seeds.py. The seeds land in
fuzz/corpus/<target>/; `cargo xtask fuzz` and `cargo xtask test` replay them.
"""
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "igvm", "verifier", "tests", "data")
OUT = os.path.join(ROOT, "fuzz", "corpus")


def read(*path):
    with open(os.path.join(*path), "rb") as f:
        return f.read()


def parts(mode, *items):
    out = bytes([mode])
    for item in items:
        out += struct.pack("<H", len(item)) + item
    return out


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    report = read(DATA, "report.bin")
    vcek = read(DATA, "vcek.der")
    ask = read(DATA, "ask.pem")
    ark = read(DATA, "ark.pem")
    ak_pub = read(DATA, "tpm2-tools", "ak.pub")
    quote = read(DATA, "tpm2-tools", "quote.msg")
    sig = read(DATA, "tpm2-tools", "quote.sig")
    ak_public = ak_pub[2:]  # TPM2B_PUBLIC -> TPMT_PUBLIC
    put("verifier", "milan-report", parts(0, report))
    put("verifier", "milan-chain", parts(1, vcek, ask, ark))
    put("verifier", "tpm2tools-ak-public", parts(3, ak_public))
    put("verifier", "tpm2tools-quote-signature", parts(4, sig, ak_public, quote))
    put("verifier", "tpm2tools-quote", parts(5, quote))
    put("verifier", "milan-report-binding", parts(8, report, bytes(64), b""))
    put("verifier", "challenge-text", parts(7, b"ek_name=000b00\nak_name=000b00\nsecret=00\n"))
    # The Linux-guest level's real event logs; a policy learned from one with the PCRs
    # the guest read (svsm-verify policy learn, then the sha256 PCRs as index || value).
    for name in ["bookworm", "forky"]:
        log = read(DATA, "eventlog-ovmf-%s.bin" % name)
        put("verifier", "eventlog-" + name, parts(10, log))
    log = read(DATA, "eventlog-ovmf-forky.bin")
    policy = read(DATA, "eventlog-ovmf-forky.policy.toml")
    quoted = b""
    with open(os.path.join(DATA, "eventlog-ovmf-forky.txt")) as f:
        for line in f:
            if line.startswith("pcr "):
                index, value = line[4:].strip().split("=")
                if int(index) != 8:
                    quoted += bytes([int(index)]) + bytes.fromhex(value)
    put("verifier", "boot-policy-forky", parts(11, policy, log, quoted))
    # Protocol parsers: a PVALIDATE list, a report, a TPM command, a GHCB MSR value.
    put("protocol", "pvalidate-list", bytes([0]) + struct.pack("<HHI", 2, 0, 0)
        + struct.pack("<QQ", 0x200000 | 4, 0x201000 | 4))
    put("protocol", "milan-report", bytes([8]) + report)
    put("protocol", "tpm-send-command", bytes([5]) + struct.pack("<IBI", 8, 0, 12)
        + bytes([0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x7B, 0, 8]))
    put("protocol", "ghcb-msr", bytes([6]) + struct.pack("<QQ", 0x14, 0x15))
    # The service's API: a whole attestation request made of real artifacts (the Milan
    # report and VCEK in place of the NV evidence, tpm2-tools' AK and quote, the forky
    # event log and the PCRs its guest read), and a challenge request.
    import base64
    import json
    b64 = lambda b: base64.b64encode(b).decode()
    pcrs = []
    for line in open(os.path.join(DATA, "eventlog-ovmf-forky.txt")):
        if line.startswith("pcr "):
            index, value = line[4:].strip().split("=")
            pcrs.append({"bank": "sha256", "index": int(index), "value": value})
    request = {
        "session": "00112233445566778899aabbccddeeff",
        "nv": {"rsa_ek_cert": b64(vcek), "ecc_ek_cert": b64(vcek), "ca_cert": b64(vcek),
               "report": b64(report), "vcek_cert": b64(vcek)},
        "ek_public": b64(ak_pub),
        "ak_public": b64(ak_pub),
        "quote": b64(quote),
        "quote_signature": b64(sig),
        "pcrs": pcrs,
        "event_log": b64(read(DATA, "eventlog-ovmf-forky.bin")),
    }
    put("service_api", "attest-request.json", json.dumps(request, indent=1).encode())
    put("service_api", "challenge-request.json", b'{"guest": "fuzz"}')
    # The vTPM targets: recorded sessions (vtpm-daemon --trace), each whole: a tpm2-tools
    # session on the host and a Linux guest's boot (OVMF's measured boot, Linux's TPM
    # probe, the guest's tpm2-tools); fuzz/seeds/traces/README.md says how they were made.
    for name in sorted(os.listdir(os.path.join(ROOT, "fuzz", "seeds", "traces"))):
        if name.endswith(".trace"):
            trace = read(ROOT, "fuzz", "seeds", "traces", name)
            for target in ("vtpm_engine", "vtpm_transport"):
                put(target, name, trace)
    # svsm-igvm: the project's OVMF images and IGVM files, when built.
    for name, mode in [("target/firmware/forky/OVMF.fd", 1), ("target/svsm.igvm", 2),
                       ("target/svsm-ovmf.igvm", 2)]:
        path = os.path.join(ROOT, name)
        if os.path.exists(path) and os.path.getsize(path) <= 4 << 20:
            put("igvm_inputs", os.path.basename(name), bytes([mode]) + read(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
