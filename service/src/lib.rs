//! The verification service: a guest's SVSM vTPM evidence and measured boot checked
//! against the operator's policy, then a secret released so that only that vTPM can
//! unwrap it.
//!
//! - [`server`]: the HTTPS API of `svsm_protocol::service_api` (POST /v1/challenge,
//!   POST /v1/attest) on rustls, with bounded bodies and timeouts;
//! - [`attest`]: the verification pipeline and the release, link by link;
//! - [`policy`]: the operator's policy file;
//! - [`db`]: sessions, guest records and the audit log in SQLite or PostgreSQL.
#![warn(missing_docs)]

pub mod attest;
pub mod boot;
pub mod db;
pub mod policy;
pub mod server;
