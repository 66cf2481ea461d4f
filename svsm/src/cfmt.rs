//! C `printf` formatting for the engine's C runtime (`snprintf`, `asprintf`).
//!
//! libtpms 0.10 formats its profile descriptions and command lists with `asprintf` and
//! `snprintf` (`{"Name":"%s","StateFormatLevel":%d,...}`, `%s0x%x-0x%x`), and stores the
//! result with the TPM's state, so the kernel must format them exactly as glibc does.
//! Supported: the flags `-`, `0`, `+`, space and `#`, field width and precision (also as
//! `*`), the length modifiers `hh`, `h`, `l`, `ll`, `j`, `z` and `t`, and the
//! conversions `d i u x X o c s p %`. Everything else is refused, `%n` above all (it
//! writes through an argument) and the floating-point conversions (no float crosses into
//! the kernel): the caller then fails the call the way the C library fails.
//!
//! The arguments come through [`CArgs`]: the kernel reads them from a System V `va_list`,
//! the tests from a list.

use alloc::vec::Vec;

/// Where the formatter takes its arguments from.
pub trait CArgs {
    /// The next argument of the INTEGER class (an integer or a pointer), as 64 bits.
    fn next_word(&mut self) -> u64;
    /// Appends the NUL-terminated string at `address` to `out`, at most `limit` bytes.
    /// A null address appends `(null)`, as glibc does.
    fn append_string(&self, address: u64, limit: usize, out: &mut Vec<u8>);
}

/// Why a format was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// A conversion this formatter does not implement (or refuses, like `%n`).
    Unsupported(u8),
    /// The format ends inside a conversion.
    Truncated,
}

#[derive(Default, Clone, Copy)]
struct Spec {
    left: bool,
    zero: bool,
    plus: bool,
    space: bool,
    alternate: bool,
    width: usize,
    precision: Option<usize>,
    /// Argument size in bytes (1, 2, 4 or 8).
    size: u8,
}

/// Formats `format` with `args`, appending the result to `out` (no NUL).
pub fn format(format: &[u8], args: &mut impl CArgs, out: &mut Vec<u8>) -> Result<(), FormatError> {
    let mut i = 0;
    while i < format.len() {
        let c = format[i];
        i += 1;
        if c != b'%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec {
            size: 4,
            ..Spec::default()
        };
        // Flags.
        while let Some(&f) = format.get(i) {
            match f {
                b'-' => spec.left = true,
                b'0' => spec.zero = true,
                b'+' => spec.plus = true,
                b' ' => spec.space = true,
                b'#' => spec.alternate = true,
                _ => break,
            }
            i += 1;
        }
        // Width.
        if format.get(i) == Some(&b'*') {
            i += 1;
            let w = args.next_word() as u32 as i32;
            if w < 0 {
                spec.left = true;
            }
            spec.width = w.unsigned_abs() as usize;
        } else {
            spec.width = number(format, &mut i);
        }
        // Precision.
        if format.get(i) == Some(&b'.') {
            i += 1;
            if format.get(i) == Some(&b'*') {
                i += 1;
                let p = args.next_word() as u32 as i32;
                // A negative precision is taken as if it were omitted.
                spec.precision = usize::try_from(p).ok();
            } else {
                spec.precision = Some(number(format, &mut i));
            }
        }
        // Length.
        loop {
            match format.get(i) {
                Some(b'h') => spec.size = if spec.size == 2 { 1 } else { 2 },
                Some(b'l' | b'j' | b'z' | b't') => spec.size = 8,
                _ => break,
            }
            i += 1;
        }
        let Some(&conversion) = format.get(i) else {
            return Err(FormatError::Truncated);
        };
        i += 1;
        match conversion {
            b'%' => out.push(b'%'),
            b'd' | b'i' => {
                let v = signed(args.next_word(), spec.size);
                let sign = if v < 0 {
                    Some(b'-')
                } else if spec.plus {
                    Some(b'+')
                } else if spec.space {
                    Some(b' ')
                } else {
                    None
                };
                integer(out, &spec, sign, &[], v.unsigned_abs(), 10, false);
            }
            b'u' | b'x' | b'X' | b'o' => {
                let v = unsigned(args.next_word(), spec.size);
                let (base, upper) = match conversion {
                    b'u' => (10, false),
                    b'x' => (16, false),
                    b'X' => (16, true),
                    _ => (8, false),
                };
                let prefix: &[u8] = match conversion {
                    b'x' if spec.alternate && v != 0 => b"0x",
                    b'X' if spec.alternate && v != 0 => b"0X",
                    _ => b"",
                };
                let mut spec = spec;
                if conversion == b'o' && spec.alternate {
                    // "#o": the first digit is a zero.
                    let digits = digits_of(v, 8);
                    spec.precision = Some(spec.precision.unwrap_or(0).max(digits + 1));
                }
                integer(out, &spec, None, prefix, v, base, upper);
            }
            b'p' => {
                let v = args.next_word();
                if v == 0 {
                    pad(out, &spec, b"(nil)");
                } else {
                    let spec = Spec {
                        precision: None,
                        zero: false,
                        ..spec
                    };
                    integer(out, &spec, None, b"0x", v, 16, false);
                }
            }
            // "%lc" and "%ls" take wide characters: none here.
            b'c' | b's' if spec.size == 8 => return Err(FormatError::Unsupported(conversion)),
            b'c' => {
                let v = args.next_word() as u8;
                pad(out, &spec, &[v]);
            }
            b's' => {
                let address = args.next_word();
                let mut s = Vec::new();
                args.append_string(address, spec.precision.unwrap_or(usize::MAX), &mut s);
                if address == 0 && spec.precision.is_some_and(|p| p < 6) {
                    // glibc prints nothing rather than a cut "(null)".
                    s.clear();
                }
                pad(out, &spec, &s);
            }
            other => return Err(FormatError::Unsupported(other)),
        }
    }
    Ok(())
}

/// A decimal number at `format[*i..]` (0 if none), saturating.
fn number(format: &[u8], i: &mut usize) -> usize {
    let mut n: usize = 0;
    while let Some(d) = format.get(*i).filter(|c| c.is_ascii_digit()) {
        n = n.saturating_mul(10).saturating_add(usize::from(d - b'0'));
        *i += 1;
    }
    n
}

fn signed(word: u64, size: u8) -> i64 {
    match size {
        1 => i64::from(word as u8 as i8),
        2 => i64::from(word as u16 as i16),
        4 => i64::from(word as u32 as i32),
        _ => word as i64,
    }
}

fn unsigned(word: u64, size: u8) -> u64 {
    match size {
        1 => u64::from(word as u8),
        2 => u64::from(word as u16),
        4 => u64::from(word as u32),
        _ => word,
    }
}

fn digits_of(mut v: u64, base: u64) -> usize {
    let mut n = 1;
    while v >= base {
        v /= base;
        n += 1;
    }
    n
}

/// An integer conversion: sign or prefix, zero padding to the precision, then the field.
fn integer(
    out: &mut Vec<u8>,
    spec: &Spec,
    sign: Option<u8>,
    prefix: &[u8],
    value: u64,
    base: u64,
    upper: bool,
) {
    let alphabet: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut digits = [0u8; 24];
    let mut n = 0;
    let mut v = value;
    // An explicit precision of 0 prints nothing for the value 0.
    if !(value == 0 && spec.precision == Some(0)) {
        loop {
            digits[n] = alphabet[(v % base) as usize];
            n += 1;
            v /= base;
            if v == 0 {
                break;
            }
        }
    }
    let precision_zeros = spec.precision.map_or(0, |p| p.saturating_sub(n));
    let head = usize::from(sign.is_some()) + prefix.len();
    let body = head + precision_zeros + n;
    let fill = spec.width.saturating_sub(body);
    // "0" pads with zeros after the sign, unless left-justified or a precision is given.
    let zero_fill = spec.zero && !spec.left && spec.precision.is_none();
    if !spec.left && !zero_fill {
        out.resize(out.len() + fill, b' ');
    }
    out.extend(sign);
    out.extend_from_slice(prefix);
    if zero_fill {
        out.resize(out.len() + fill, b'0');
    }
    out.resize(out.len() + precision_zeros, b'0');
    out.extend(digits[..n].iter().rev());
    if spec.left {
        out.resize(out.len() + fill, b' ');
    }
}

/// A text field padded with spaces to the width.
fn pad(out: &mut Vec<u8>, spec: &Spec, text: &[u8]) {
    let fill = spec.width.saturating_sub(text.len());
    if !spec.left {
        out.resize(out.len() + fill, b' ');
    }
    out.extend_from_slice(text);
    if spec.left {
        out.resize(out.len() + fill, b' ');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    /// Arguments as a list; a string argument is an index into `strings` plus one
    /// (0 is the null pointer).
    struct List<'a> {
        words: &'a [u64],
        strings: &'a [&'a str],
        at: usize,
    }

    impl CArgs for List<'_> {
        fn next_word(&mut self) -> u64 {
            let w = self.words[self.at];
            self.at += 1;
            w
        }
        fn append_string(&self, address: u64, limit: usize, out: &mut Vec<u8>) {
            let s = match address {
                0 => "(null)",
                n => self.strings[n as usize - 1],
            };
            out.extend(s.bytes().take(limit));
        }
    }

    fn f(fmt: &str, words: &[u64], strings: &[&str]) -> String {
        let mut out = Vec::new();
        let mut args = List {
            words,
            strings,
            at: 0,
        };
        format(fmt.as_bytes(), &mut args, &mut out).expect("formats");
        assert_eq!(args.at, words.len(), "every argument consumed");
        String::from_utf8(out).unwrap()
    }

    /// Expected strings are what glibc's printf prints for the same format and arguments.
    #[test]
    fn formats_as_glibc_does() {
        assert_eq!(
            f(
                r#"{"Name":"%s","StateFormatLevel":%d"#,
                &[1, 7],
                &["default-v1"]
            ),
            r#"{"Name":"default-v1","StateFormatLevel":7"#
        );
        assert_eq!(f("%s0x%x-0x%x", &[1, 0x11f, 0x122], &[","]), ",0x11f-0x122");
        assert_eq!(f("%.*s", &[3, 1], &["abcdef"]), "abc");
        assert_eq!(
            f("[%5d|%-5d|%05d]", &[42, 42, (-42i32) as u32 as u64], &[]),
            "[   42|42   |-0042]"
        );
        assert_eq!(
            f("%+d % d %d", &[5, 5, u64::from(u32::MAX)], &[]),
            "+5  5 -1"
        );
        assert_eq!(
            f("%lu %ld %zu", &[u64::MAX, u64::MAX, 12], &[]),
            "18446744073709551615 -1 12"
        );
        assert_eq!(
            f("%hhu %hd %u", &[0x1ff, 0x18000, 1 << 32], &[]),
            "255 -32768 0"
        );
        assert_eq!(
            f("%#x %#X %#o %x %08X", &[255, 255, 8, 0, 0xbeef], &[]),
            "0xff 0XFF 010 0 0000BEEF"
        );
        assert_eq!(f("%.3d %.0d|%5.3x", &[7, 0, 0xa], &[]), "007 |  00a");
        assert_eq!(f("%p %p", &[0x1000, 0], &[]), "0x1000 (nil)");
        assert_eq!(
            f("%c%c 100%%", &[u64::from(b'o'), u64::from(b'k')], &[]),
            "ok 100%"
        );
        assert_eq!(
            f("%-8s|%8s|%s", &[1, 1, 0], &["ab"]),
            "ab      |      ab|(null)"
        );
        assert_eq!(
            f("%*d|%-*d", &[4, 1, (-4i32) as u32 as u64, 2], &[]),
            "   1|2   "
        );
        assert_eq!(
            f("%.2s|%.*s", &[0, (-1i32) as u32 as u64, 1], &["xyz"]),
            "|xyz"
        );
    }

    #[test]
    fn refuses_what_it_does_not_implement() {
        for (fmt, conversion) in [("%n", b'n'), ("%f", b'f'), ("%e", b'e'), ("x %ls", b's')] {
            let mut out = Vec::new();
            let mut args = List {
                words: &[0, 0],
                strings: &[],
                at: 0,
            };
            let r = format(fmt.as_bytes(), &mut args, &mut out);
            assert_eq!(r, Err(FormatError::Unsupported(conversion)), "{fmt}");
        }
        let mut args = List {
            words: &[],
            strings: &[],
            at: 0,
        };
        assert_eq!(
            format(b"abc %-08", &mut args, &mut Vec::new()),
            Err(FormatError::Truncated)
        );
    }
}
