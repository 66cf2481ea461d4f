//! POSIX extended regular expressions for the engine's C runtime (`regcomp`/`regexec`).
//!
//! libtpms 0.10 checks and takes apart profile descriptions (JSON) with `regcomp(...,
//! REG_EXTENDED)` and `regexec`, at manufacture and whenever it loads a state. The
//! matching is done by `regex-automata`, over bytes (no Unicode, `.` matches any byte
//! including a newline, as POSIX's does without `REG_NEWLINE`). Its syntax covers what
//! the engine writes: anchors, `.`, bracket expressions with `[:space:]`-style classes,
//! groups, alternation and the `* + ?` repetitions.
//!
//! One difference from POSIX: where an expression can match in several ways, POSIX takes
//! the longest match and then the longest submatches from left to right, `regex-automata`
//! the first match in its preference order (greedy repetitions first). For a pattern
//! anchored at both ends the whole match is the same; its groups can differ only when a
//! group's extent is ambiguous. The engine's patterns are checked against glibc's
//! `regexec` in the tests below.

use alloc::vec::Vec;

use regex_automata::meta::Regex;
use regex_automata::util::syntax;

/// `regcomp` flags (glibc's values).
pub const REG_EXTENDED: i32 = 1;
/// Case-insensitive matching.
pub const REG_ICASE: i32 = 2;
/// `.` and bracket expressions do not match a newline; anchors match at line ends.
pub const REG_NEWLINE: i32 = 4;
/// Report only success or failure.
pub const REG_NOSUB: i32 = 8;

/// Where glibc's x86-64 `regex_t` (64 bytes) keeps `re_nsub`, the number of groups
/// callers may read; the C runtime keeps its pointer to the compiled expression at offset
/// 0 (glibc's `buffer`).
pub const RE_NSUB_OFFSET: usize = 48;
/// The size of glibc's x86-64 `regex_t`.
pub const REGEX_T_SIZE: usize = 64;

/// Why an expression was refused (the `regcomp` error it maps to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegexError {
    /// Basic (non-extended) syntax or a flag this implementation lacks: `REG_BADPAT`.
    Unsupported,
    /// The pattern does not parse: `REG_BADPAT`.
    BadPattern,
}

/// A compiled expression.
#[derive(Debug)]
pub struct PosixRegex {
    regex: Regex,
    nosub: bool,
}

impl PosixRegex {
    /// Compiles `pattern` with `regcomp` flags `cflags`.
    pub fn new(pattern: &[u8], cflags: i32) -> Result<Self, RegexError> {
        if cflags & REG_EXTENDED == 0 || cflags & !(REG_EXTENDED | REG_ICASE | REG_NOSUB) != 0 {
            return Err(RegexError::Unsupported);
        }
        let pattern = core::str::from_utf8(pattern).map_err(|_| RegexError::BadPattern)?;
        let regex = Regex::builder()
            .syntax(
                syntax::Config::new()
                    .unicode(false)
                    .utf8(false)
                    .dot_matches_new_line(true)
                    .case_insensitive(cflags & REG_ICASE != 0),
            )
            .build(pattern)
            .map_err(|_| RegexError::BadPattern)?;
        Ok(Self {
            regex,
            nosub: cflags & REG_NOSUB != 0,
        })
    }

    /// The number of parenthesized groups (`re_nsub`).
    pub fn groups(&self) -> usize {
        self.regex.captures_len().saturating_sub(1)
    }

    /// Matches `haystack`; on a match, the whole match and up to `wanted - 1` groups as
    /// byte offsets (`None` for a group that took no part).
    pub fn exec(&self, haystack: &[u8], wanted: usize) -> Option<Vec<Option<(usize, usize)>>> {
        if self.nosub || wanted == 0 {
            return self.regex.is_match(haystack).then(Vec::new);
        }
        let mut caps = self.regex.create_captures();
        self.regex.captures(haystack, &mut caps);
        if !caps.is_match() {
            return None;
        }
        Some(
            (0..wanted)
                .map(|i| caps.get_group(i).map(|s| (s.start, s.end)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expressions libtpms 0.10 compiles (`strings libtpms.a`).
    const LIBTPMS_PATTERNS: &[&str] = &[
        r#"^\{.*[[:space:]]*"Name"[[:space:]]*:[[:space:]]*"([^"]+)".*\}$"#,
        r#"^\{.*[[:space:]]*"StateFormatLevel"[[:space:]]*:[[:space:]]*([0-9]+).*\}$"#,
        r#"^\{.*[[:space:]]*"Commands"[[:space:]]*:[[:space:]]*"([^"]+)".*\}$"#,
        r#"^\{.*[[:space:]]*"Algorithms"[[:space:]]*:[[:space:]]*"([^"]+)".*\}$"#,
        r#"^\{.*[[:space:]]*"Attributes"[[:space:]]*:[[:space:]]*"([^"]*)".*\}$"#,
        r#"^\{.*[[:space:]]*"Description"[[:space:]]*:[[:space:]]*"([^"]+)".*\}$"#,
        r#"^\{[[:space:]]*([[:space:]]*"[^"]+"[[:space:]]*:[[:space:]]*("[^"]*"|[[:digit:]]+)[[:space:]]*)?(,[[:space:]]*"[^"]+"[[:space:]]*:[[:space:]]*("[^"]*"|[[:digit:]]+)[[:space:]]*)*\}$"#,
    ];

    const SUBJECTS: &[&str] = &[
        r#"{"Name":"default-v1"}"#,
        r#"{"Name":"default-v1","StateFormatLevel":7,"Commands":"0x11f-0x122,0x124-0x12e","Algorithms":"rsa,rsa-min-size=1024,sha256","Description":"This profile enables all libtpms v0.10-supported commands and algorithms."}"#,
        r#"{ "Name" : "custom", "Attributes":"", "StateFormatLevel" : 2 }"#,
        r#"{"Name":"a","Name":"b"}"#,
        r#"{"Name":""}"#,
        r#"{"Name":"x""#,
        "{\"Name\":\n\"multi\nline\"}",
        "not json",
        "{}",
        r#"{"Commands":"0x11f"}"#,
    ];

    #[test]
    fn the_engine_patterns_compile_and_match() {
        let re = PosixRegex::new(LIBTPMS_PATTERNS[0].as_bytes(), REG_EXTENDED).unwrap();
        assert_eq!(re.groups(), 1);
        let s = SUBJECTS[1].as_bytes();
        let m = re.exec(s, 2).unwrap();
        assert_eq!(m[0], Some((0, s.len())));
        let (a, b) = m[1].unwrap();
        assert_eq!(&s[a..b], b"default-v1");
        assert!(re.exec(b"not json", 2).is_none());
        let validator = PosixRegex::new(LIBTPMS_PATTERNS[6].as_bytes(), REG_EXTENDED).unwrap();
        assert_eq!(validator.groups(), 4);
        assert!(validator.exec(SUBJECTS[2].as_bytes(), 0).is_some());
        assert!(validator.exec(br#"{"Name":x}"#, 0).is_none());
    }

    #[test]
    fn refuses_basic_syntax_and_unknown_flags_and_bad_patterns() {
        assert_eq!(
            PosixRegex::new(b"a", 0).err(),
            Some(RegexError::Unsupported)
        );
        assert_eq!(
            PosixRegex::new(b"a", REG_EXTENDED | REG_NEWLINE).err(),
            Some(RegexError::Unsupported)
        );
        assert_eq!(
            PosixRegex::new(b"(a", REG_EXTENDED).err(),
            Some(RegexError::BadPattern)
        );
        let nosub = PosixRegex::new(b"b+", REG_EXTENDED | REG_NOSUB).unwrap();
        assert_eq!(nosub.exec(b"abbc", 3), Some(Vec::new()));
        let icase = PosixRegex::new(b"^NAME$", REG_EXTENDED | REG_ICASE).unwrap();
        assert!(icase.exec(b"name", 1).is_some());
    }

    /// Every engine pattern on every subject: the same verdict and the same group offsets
    /// as glibc's `regexec`.
    #[cfg(target_os = "linux")]
    #[test]
    #[allow(unsafe_code)]
    fn agrees_with_glibc_on_the_engine_patterns() {
        use std::ffi::CString;
        for pattern in LIBTPMS_PATTERNS {
            let ours = PosixRegex::new(pattern.as_bytes(), REG_EXTENDED).unwrap();
            // SAFETY: regex_t is plain data that regcomp initializes.
            let mut glibc: libc::regex_t = unsafe { core::mem::zeroed() };
            let p = CString::new(*pattern).unwrap();
            // SAFETY: valid regex_t and NUL-terminated pattern.
            let rc = unsafe { libc::regcomp(&mut glibc, p.as_ptr(), REG_EXTENDED) };
            assert_eq!(rc, 0);
            assert_eq!(core::mem::size_of::<libc::regex_t>(), REGEX_T_SIZE);
            let at = core::ptr::addr_of!(glibc)
                .cast::<u8>()
                .wrapping_add(RE_NSUB_OFFSET);
            // SAFETY: reads a usize inside the 64-byte regex_t regcomp initialized.
            let re_nsub = unsafe { at.cast::<usize>().read_unaligned() };
            assert_eq!(re_nsub, ours.groups(), "{pattern}");
            for subject in SUBJECTS {
                let s = CString::new(*subject).unwrap();
                let mut m = [libc::regmatch_t {
                    rm_so: -1,
                    rm_eo: -1,
                }; 6];
                // SAFETY: compiled regex, NUL-terminated subject, 6 match slots.
                let rc = unsafe { libc::regexec(&glibc, s.as_ptr(), 6, m.as_mut_ptr(), 0) };
                let theirs: Option<Vec<Option<(usize, usize)>>> = (rc == 0).then(|| {
                    m.iter()
                        .map(|r| (r.rm_so >= 0).then_some((r.rm_so as usize, r.rm_eo as usize)))
                        .collect()
                });
                assert_eq!(
                    ours.exec(subject.as_bytes(), 6),
                    theirs,
                    "{pattern} on {subject}"
                );
            }
            // SAFETY: compiled above, freed once.
            unsafe { libc::regfree(&mut glibc) };
        }
    }
}
