//! Host conformance and end-to-end suites; a guest-side SVSM driver.
