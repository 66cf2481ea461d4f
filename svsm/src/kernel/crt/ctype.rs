//! glibc's `<ctype.h>` tables (`__ctype_b_loc`, `__ctype_tolower_loc`), "C" locale.
//!
//! Each table covers indices -128..=255 and callers index from the 129th entry. The class
//! bits are glibc's, byte-swapped for little-endian as its `_ISbit` macro does.

use core::ffi::c_int;

const UPPER: u16 = 0x0100;
const LOWER: u16 = 0x0200;
const ALPHA: u16 = 0x0400;
const DIGIT: u16 = 0x0800;
const XDIGIT: u16 = 0x1000;
const SPACE: u16 = 0x2000;
const PRINT: u16 = 0x4000;
const GRAPH: u16 = 0x8000;
const BLANK: u16 = 0x0001;
const CNTRL: u16 = 0x0002;
const PUNCT: u16 = 0x0004;
const ALNUM: u16 = 0x0008;

const fn classify(c: u8) -> u16 {
    let mut bits = 0;
    if c.is_ascii_uppercase() {
        bits |= UPPER | ALPHA | ALNUM;
    }
    if c.is_ascii_lowercase() {
        bits |= LOWER | ALPHA | ALNUM;
    }
    if c.is_ascii_digit() {
        bits |= DIGIT | ALNUM;
    }
    if c.is_ascii_hexdigit() {
        bits |= XDIGIT;
    }
    if matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        bits |= SPACE;
    }
    if c == b' ' || c == b'\t' {
        bits |= BLANK;
    }
    if c < 0x20 || c == 0x7f {
        bits |= CNTRL;
    }
    if c >= 0x20 && c < 0x7f {
        bits |= PRINT;
    }
    if c > 0x20 && c < 0x7f {
        bits |= GRAPH;
    }
    if c.is_ascii_punctuation() {
        bits |= PUNCT;
    }
    bits
}

const fn class_table() -> [u16; 384] {
    let mut table = [0; 384];
    let mut i = 0;
    while i < 256 {
        table[128 + i] = classify(i as u8);
        i += 1;
    }
    table
}

const fn case_table(lower: bool) -> [i32; 384] {
    let mut table = [0; 384];
    let mut i = 0;
    while i < 384 {
        let c = i as i32 - 128;
        table[i] = if c >= 0 && c < 128 {
            let b = c as u8;
            (if lower {
                b.to_ascii_lowercase()
            } else {
                b.to_ascii_uppercase()
            }) as i32
        } else {
            c
        };
        i += 1;
    }
    table
}

static CLASSES: [u16; 384] = class_table();
static TO_LOWER: [i32; 384] = case_table(true);
static TO_UPPER: [i32; 384] = case_table(false);

/// Pointers to the tables' zero entries, as `__ctype_*_loc` return them.
struct Locations {
    classes: *const u16,
    lower: *const i32,
    upper: *const i32,
}

// SAFETY: the pointers point at immutable statics.
unsafe impl Sync for Locations {}

static LOCATIONS: Locations = Locations {
    classes: CLASSES.as_ptr().wrapping_add(128),
    lower: TO_LOWER.as_ptr().wrapping_add(128),
    upper: TO_UPPER.as_ptr().wrapping_add(128),
};

#[unsafe(no_mangle)]
extern "C" fn __ctype_b_loc() -> *const *const u16 {
    &LOCATIONS.classes
}

#[unsafe(no_mangle)]
extern "C" fn __ctype_tolower_loc() -> *const *const c_int {
    &LOCATIONS.lower
}

#[unsafe(no_mangle)]
extern "C" fn __ctype_toupper_loc() -> *const *const c_int {
    &LOCATIONS.upper
}
