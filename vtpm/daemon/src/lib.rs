//! Serves the guest view of the vTPM to host TPM clients.
