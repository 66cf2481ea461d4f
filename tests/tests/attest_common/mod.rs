//! Shared world for the attestation suites: the emulated machine with the SVSM serving
//! the attestation and vTPM protocols, a guest that calls them the way Linux does, and
//! the raw TPM 2.0 commands the guest sends to its vTPM (no TSS: every byte is built
//! here, so the suites see exactly what crosses the SVSM).
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

use svsm::psp::GuestMessenger;
use svsm::requests::attest::{AttestationService, StaticEvidence};
use svsm::requests::{vtpm as vtpm_protocol, CallRegisters, ProtocolService, Services};
use svsm_emulated::psp::{cert_table, test_chain, test_vcek, LaunchInfo as PspLaunch, TEST_VMPCK0};
use svsm_emulated::{EmulatedSystem, LaunchConfig, SharedSnp};
use svsm_protocol::attest::{AttestRequest, GuestBuffer, ServiceSelector};
use svsm_protocol::call::{AttestCall, Call, VtpmCall};
use svsm_protocol::manifest::Guid;
use svsm_protocol::vtpm::{parse_response, SendCommandRequest};
use svsm_protocol::SvsmResultCode;
use svsm_tests::driver::GuestDriver;
use svsm_tests::fixtures::LINUX_RANGE;
use vtpm::tpm::{self as tpm_wire, CommandBuilder};
use vtpm::{EkTemplate, OsEntropy, Vtpm};

/// libtpms is one engine per process: worlds take turns.
pub static ENGINE: Mutex<()> = Mutex::new(());

/// Guest pages the suites use (validated by the Linux-style PVALIDATE in [`World::new`]).
pub const NONCE_PAGE: u64 = 0x21_0000;
/// Where the guest receives the report.
pub const REPORT_PAGE: u64 = 0x22_0000;
/// Where the guest receives the manifest.
pub const MANIFEST_PAGE: u64 = 0x23_0000;
/// Where the guest receives certificates.
pub const CERT_PAGE: u64 = 0x24_0000;
/// The vTPM command/response buffer.
pub const TPM_PAGE: u64 = 0x25_0000;

/// The launch measurement the emulated machine reports.
pub const MEASUREMENT: [u8; 48] = [0x6D; 48];

/// The machine, the SVSM with attestation and vTPM, and the guest.
pub struct World {
    pub system: EmulatedSystem,
    pub ek_public: Vec<u8>,
    // Dropped last: the vTPM inside `system` powers its engine off first.
    _engine: MutexGuard<'static, ()>,
}

impl World {
    /// Launches the machine with the vTPM started and the attestation service attesting
    /// its EK; validates guest RAM the Linux way.
    pub fn new() -> Self {
        let engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
        let vtpm = vtpm::start(Box::new(OsEntropy)).expect("the vTPM starts");
        let ek_public = vtpm.ek_public().to_vec();
        assert_eq!(ek_public, vtpm.endorsement_key(EkTemplate::RsaL1));
        // The host's certificate table for the emulated chip: the test chain.
        let chain = test_chain(test_vcek().verifying_key()).expect("the test chain builds");
        let attestation = AttestationService::new(
            GuestMessenger::new(TEST_VMPCK0, 0),
            vec![Box::new(StaticEvidence::vtpm(&ek_public))],
        )
        .with_certificates(cert_table(&chain).expect("the certificate table builds"));
        let attestation: Box<dyn ProtocolService<SharedSnp>> = Box::new(attestation);
        let services = Services::new()
            .with_attestation(attestation)
            .with_vtpm(vtpm_protocol::service::<SharedSnp, _>(vtpm));
        let system = EmulatedSystem::launch(LaunchConfig::default(), services)
            .expect("the machine launches");
        system.machine().psp().set_launch(PspLaunch {
            measurement: MEASUREMENT,
            ..PspLaunch::default()
        });
        {
            let guest = GuestDriver::new(&system);
            let bsp = system.info().bsp();
            guest
                .pvalidate_linux(bsp, LINUX_RANGE.0, LINUX_RANGE.1, true)
                .expect("the guest validates its RAM");
        }
        World {
            system,
            ek_public,
            _engine: engine,
        }
    }

    pub fn guest(&self) -> GuestDriver<'_> {
        GuestDriver::new(&self.system)
    }

    pub fn bsp(&self) -> u32 {
        self.system.info().bsp()
    }

    /// The guest's boot calling area (its buffer at +8 holds request blocks, as Linux
    /// puts them).
    pub fn ca(&self) -> u64 {
        self.system.info().config.boot_ca
    }

    pub fn write(&self, gpa: u64, data: &[u8]) {
        self.system
            .machine()
            .guest_write(gpa, data)
            .expect("guest write");
    }

    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.system
            .machine()
            .guest_read(gpa, &mut buf)
            .expect("guest read");
        buf
    }

    /// Writes a request block into the calling area buffer and makes the call; returns
    /// the final registers (RAX = result code).
    pub fn attest_call(&self, request: &AttestRequest, block_gpa: u64) -> CallRegisters {
        let mut block = [0u8; 0x58];
        let n = request.encode(&mut block).expect("request encodes");
        self.write(block_gpa, &block[..n]);
        let call = if request.service.is_some() {
            AttestCall::AttestSingleService
        } else {
            AttestCall::AttestServices
        };
        self.raw_attest_call(call, block_gpa)
    }

    /// The call alone, with RCX = `block_gpa`.
    pub fn raw_attest_call(&self, call: AttestCall, block_gpa: u64) -> CallRegisters {
        let regs = CallRegisters {
            rax: Call::Attestation(call).to_rax(),
            rcx: block_gpa,
            ..CallRegisters::default()
        };
        self.guest()
            .call(self.bsp(), &regs)
            .expect("the call is serviced")
    }

    /// A call of the attestation protocol by number (valid or not), with RCX = `rcx`.
    pub fn raw_attest_call_id(&self, call_id: u32, rcx: u64) -> CallRegisters {
        let regs = CallRegisters {
            rax: (1u64 << 32) | u64::from(call_id),
            rcx,
            ..CallRegisters::default()
        };
        self.guest()
            .call(self.bsp(), &regs)
            .expect("the call is serviced")
    }

    /// A request with the standard buffers of the given sizes.
    pub fn request(nonce_len: u32, report_size: u32, manifest_size: u32) -> AttestRequest {
        AttestRequest {
            report: GuestBuffer {
                gpa: REPORT_PAGE,
                size: report_size,
            },
            nonce: GuestBuffer {
                gpa: NONCE_PAGE,
                size: nonce_len,
            },
            manifest: GuestBuffer {
                gpa: MANIFEST_PAGE,
                size: manifest_size,
            },
            certificates: GuestBuffer {
                gpa: CERT_PAGE,
                size: 0,
            },
            service: None,
        }
    }

    /// ATTEST_SERVICES the way Linux does it: start with buffers it guesses, and when the
    /// SVSM answers INVALID_PARAMETER with the sizes in RCX/RDX/R8, enlarge and retry (at
    /// most 3 times). Returns (report, manifest).
    pub fn attest(&self, nonce: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (report, manifest, _) = self.attest_with(nonce, 0);
        (report, manifest)
    }

    /// As [`Self::attest`], also asking for certificates with a buffer of `cert_size`
    /// bytes to start with (0: none). Returns (report, manifest, certificates).
    pub fn attest_with(&self, nonce: &[u8], cert_size: u32) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        self.write(NONCE_PAGE, nonce);
        let (mut report_size, mut manifest_size, mut cert_size) = (0x100u32, 0x10u32, cert_size);
        for _ in 0..3 {
            let mut req = Self::request(nonce.len() as u32, report_size, manifest_size);
            req.certificates.size = cert_size;
            let out = self.attest_call(&req, self.ca() + 8);
            match SvsmResultCode::from_raw(out.rax) {
                SvsmResultCode::SUCCESS => {
                    return (
                        self.read(REPORT_PAGE, out.r8 as usize),
                        self.read(MANIFEST_PAGE, out.rcx as usize),
                        self.read(CERT_PAGE, out.rdx as usize),
                    );
                }
                SvsmResultCode::INVALID_PARAMETER => {
                    report_size = out.r8 as u32;
                    manifest_size = out.rcx as u32;
                    cert_size = out.rdx as u32;
                }
                code => panic!("ATTEST_SERVICES failed: {code:?}"),
            }
        }
        panic!("ATTEST_SERVICES kept asking for larger buffers");
    }

    /// ATTEST_SINGLE_SERVICE for `guid` with big enough buffers.
    pub fn attest_single(&self, nonce: &[u8], guid: Guid, version: u32) -> CallRegisters {
        self.write(NONCE_PAGE, nonce);
        let mut req = Self::request(nonce.len() as u32, 0x1000, 0x1000);
        req.service = Some(ServiceSelector {
            guid,
            manifest_version: version,
        });
        self.attest_call(&req, self.ca() + 8)
    }

    /// One TPM command through SVSM_VTPM_CMD; returns the TPM response. TPM_RC_RETRY
    /// (the TPM did not start the command) is answered by sending it again, as TSS
    /// libraries do.
    pub fn tpm(&self, command: &[u8]) -> Vec<u8> {
        for _ in 0..8 {
            let r = self.tpm_once(command);
            if rc(&r) != RC_RETRY {
                return r;
            }
        }
        panic!("the TPM kept answering TPM_RC_RETRY");
    }

    fn tpm_once(&self, command: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let n = SendCommandRequest {
            locality: 0,
            command,
        }
        .encode(&mut buf)
        .expect("command encodes");
        self.write(TPM_PAGE, &buf[..n]);
        let regs = CallRegisters {
            rax: Call::Vtpm(VtpmCall::Cmd).to_rax(),
            rcx: TPM_PAGE,
            ..CallRegisters::default()
        };
        let out = self.guest().call(self.bsp(), &regs).expect("serviced");
        assert_eq!(SvsmResultCode::from_raw(out.rax), SvsmResultCode::SUCCESS);
        let resp = self.read(TPM_PAGE, 4096);
        parse_response(&resp).expect("a response").to_vec()
    }

    /// Runs a TPM command that must succeed.
    pub fn tpm_ok(&self, what: &str, command: &[u8]) -> Vec<u8> {
        let r = self.tpm(command);
        assert_eq!(rc(&r), 0, "{what}: TPM_RC {:#x}", rc(&r));
        r
    }
}

/// A TPM response code.
pub fn rc(response: &[u8]) -> u32 {
    u32::from_be_bytes(response[6..10].try_into().unwrap())
}

/// A TPM2B at `at`: (bytes, offset after it).
pub fn tpm2b(r: &[u8], at: usize) -> (Vec<u8>, usize) {
    let n = u16::from_be_bytes([r[at], r[at + 1]]) as usize;
    (r[at + 2..at + 2 + n].to_vec(), at + 2 + n)
}

pub const RH_NULL: u32 = 0x4000_0007;
pub const RC_RETRY: u32 = 0x922;
pub const CC_START_AUTH_SESSION: u32 = 0x176;
pub const CC_POLICY_SECRET: u32 = 0x151;
pub const CC_ACTIVATE_CREDENTIAL: u32 = 0x147;
pub const CC_QUOTE: u32 = 0x158;
pub const CC_PCR_EXTEND: u32 = 0x182;
pub const CC_FLUSH_CONTEXT: u32 = 0x165;
pub const ALG_SHA256: u16 = 0x000B;
pub const ALG_NULL: u16 = 0x0010;

/// An attestation key template: RSA-2048, SHA-256 name, restricted signing with
/// RSASSA-SHA256, fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth. A primary
/// key follows from the hierarchy's seed and the template, so `unique` tells keys apart.
pub fn ak_template(restricted: bool, unique: &[u8]) -> Vec<u8> {
    let mut attributes: u32 = 0x2 | 0x10 | 0x20 | 0x40 | 0x4_0000;
    if restricted {
        attributes |= 0x1_0000;
    }
    let mut t = Vec::new();
    t.extend_from_slice(&0x0001u16.to_be_bytes()); // RSA
    t.extend_from_slice(&ALG_SHA256.to_be_bytes());
    t.extend_from_slice(&attributes.to_be_bytes());
    t.extend_from_slice(&0u16.to_be_bytes()); // no policy
    t.extend_from_slice(&ALG_NULL.to_be_bytes()); // no symmetric
    t.extend_from_slice(&0x0014u16.to_be_bytes()); // RSASSA
    t.extend_from_slice(&ALG_SHA256.to_be_bytes());
    t.extend_from_slice(&2048u16.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes()); // exponent 65537
    t.extend_from_slice(&(unique.len() as u16).to_be_bytes());
    t.extend_from_slice(unique);
    t
}

/// An ECC P-256 attestation key template: restricted signing with ECDSA-SHA256, the
/// same attributes as [`ak_template`].
pub fn ecc_ak_template() -> Vec<u8> {
    let attributes: u32 = 0x2 | 0x10 | 0x20 | 0x40 | 0x1_0000 | 0x4_0000;
    let mut t = Vec::new();
    t.extend_from_slice(&0x0023u16.to_be_bytes()); // ECC
    t.extend_from_slice(&ALG_SHA256.to_be_bytes());
    t.extend_from_slice(&attributes.to_be_bytes());
    t.extend_from_slice(&0u16.to_be_bytes()); // no policy
    t.extend_from_slice(&ALG_NULL.to_be_bytes()); // no symmetric
    t.extend_from_slice(&0x0018u16.to_be_bytes()); // ECDSA
    t.extend_from_slice(&ALG_SHA256.to_be_bytes());
    t.extend_from_slice(&0x0003u16.to_be_bytes()); // NIST P-256
    t.extend_from_slice(&ALG_NULL.to_be_bytes()); // no KDF
    t.extend_from_slice(&0u16.to_be_bytes()); // empty x
    t.extend_from_slice(&0u16.to_be_bytes()); // empty y
    t
}

/// A key the guest created: transient handle and TPMT_PUBLIC.
pub struct Key {
    pub handle: u32,
    pub public: Vec<u8>,
}

impl World {
    /// TPM2_CreatePrimary in the endorsement hierarchy.
    pub fn create_primary(&self, template: &[u8]) -> Key {
        let r = self.tpm_ok(
            "CreatePrimary",
            &tpm_wire::create_primary(tpm_wire::RH_ENDORSEMENT, template),
        );
        let created = tpm_wire::parse_create_primary(&r).expect("CreatePrimary response");
        Key {
            handle: created.handle,
            public: created.public,
        }
    }

    /// The EK, made again from template L-1 (same seed, same key).
    pub fn create_ek(&self) -> Key {
        self.create_primary(&EkTemplate::RsaL1.public_template())
    }

    pub fn flush(&self, handle: u32) {
        self.tpm_ok(
            "FlushContext",
            &CommandBuilder::new(tpm_wire::ST_NO_SESSIONS, CC_FLUSH_CONTEXT)
                .u32(handle)
                .build(),
        );
    }

    /// A policy session satisfying the EK's policy A: PolicySecret(TPM_RH_ENDORSEMENT).
    pub fn ek_policy_session(&self) -> u32 {
        let r = self.tpm_ok(
            "StartAuthSession",
            &CommandBuilder::new(tpm_wire::ST_NO_SESSIONS, CC_START_AUTH_SESSION)
                .u32(RH_NULL) // tpmKey
                .u32(RH_NULL) // bind
                .sized(&[0x11; 16]) // nonceCaller
                .u16(0) // encryptedSalt
                .bytes(&[0x01]) // TPM_SE_POLICY
                .u16(ALG_NULL) // symmetric
                .u16(ALG_SHA256) // authHash
                .build(),
        );
        let session = u32::from_be_bytes(r[10..14].try_into().unwrap());
        self.tpm_ok(
            "PolicySecret",
            &CommandBuilder::new(tpm_wire::ST_SESSIONS, CC_POLICY_SECRET)
                .u32(tpm_wire::RH_ENDORSEMENT)
                .u32(session)
                .password_auth()
                .u16(0) // nonceTPM
                .u16(0) // cpHashA
                .u16(0) // policyRef
                .u32(0) // expiration
                .build(),
        );
        session
    }

    /// TPM2_ActivateCredential(AK, EK): the secret, or the TPM's response code.
    pub fn activate_credential(
        &self,
        ak: u32,
        ek: u32,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, u32> {
        let session = self.ek_policy_session();
        // Two authorizations: a password for the AK (ADMIN role, adminWithPolicy
        // clear), the policy session for the EK.
        let mut auth = Vec::new();
        auth.extend_from_slice(&tpm_wire::RS_PW.to_be_bytes());
        auth.extend_from_slice(&[0, 0, 0, 0, 0]);
        auth.extend_from_slice(&session.to_be_bytes());
        auth.extend_from_slice(&[0, 0, 0, 0, 0]);
        let r = self.tpm(
            &CommandBuilder::new(tpm_wire::ST_SESSIONS, CC_ACTIVATE_CREDENTIAL)
                .u32(ak)
                .u32(ek)
                .u32(auth.len() as u32)
                .bytes(&auth)
                .bytes(id_object)
                .bytes(encrypted_secret)
                .build(),
        );
        if rc(&r) != 0 {
            self.flush(session);
            return Err(rc(&r));
        }
        // header, parameterSize, certInfo.
        Ok(tpm2b(&r, 14).0)
    }

    /// TPM2_Quote with the AK over SHA-256 `pcrs`, qualified by `nonce`: (TPMS_ATTEST,
    /// TPMT_SIGNATURE).
    pub fn quote(&self, ak: u32, nonce: &[u8], pcrs: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut bitmap = [0u8; 3];
        for &p in pcrs {
            bitmap[usize::from(p / 8)] |= 1 << (p % 8);
        }
        let r = self.tpm_ok(
            "Quote",
            &CommandBuilder::new(tpm_wire::ST_SESSIONS, CC_QUOTE)
                .u32(ak)
                .password_auth()
                .sized(nonce)
                .u16(ALG_NULL) // the key's scheme
                .u32(1)
                .u16(ALG_SHA256)
                .bytes(&[3])
                .bytes(&bitmap)
                .build(),
        );
        // header, parameterSize, quoted, signature, then the response auth area.
        let params_end = 14 + u32::from_be_bytes(r[10..14].try_into().unwrap()) as usize;
        let (attest, end) = tpm2b(&r, 14);
        (attest, r[end..params_end].to_vec())
    }

    /// TPM2_PCR_Extend of a SHA-256 bank PCR.
    pub fn pcr_extend(&self, pcr: u32, digest: &[u8; 32]) {
        self.tpm_ok(
            "PCR_Extend",
            &CommandBuilder::new(tpm_wire::ST_SESSIONS, CC_PCR_EXTEND)
                .u32(pcr)
                .password_auth()
                .u32(1)
                .u16(ALG_SHA256)
                .bytes(digest)
                .build(),
        );
    }
}
