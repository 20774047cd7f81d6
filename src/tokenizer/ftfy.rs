//! A port of `ftfy.fix_text` (ftfy 6.3.1, default configuration), the first
//! step of CLIP's `basic_clean`.
//!
//! CLIP was trained on text that went through this function, and the
//! reference ids are produced with it, so this port follows ftfy's code path
//! step by step — including mojibake repair (`fix_encoding`), its badness
//! heuristic and its charmap codecs — rather than approximating it. The data
//! (entity names, codec tables, heuristic regexes) is generated from the
//! Python package into `tables.rs`, see `gen_tables.py`.
//!
//! Known differences from Python, all outside what valid UTF-8 input can hit
//! or needing pathological input:
//! * `fix_surrogates` is a no-op: a Rust `&str` cannot hold UTF-16 surrogates.
//! * The fixed-point loops are capped (ftfy loops until nothing changes); the
//!   cap is far above what any real text needs and only bounds hostile input.
//! * NFC comes from `unicode-normalization`, whose Unicode version may be
//!   newer than the generating Python's (only characters assigned after
//!   Unicode 14 can be affected).

use std::collections::HashMap;

use regex::bytes::Regex as BytesRegex;
use regex::Regex;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::html::{html5_entity, in_ranges, HtmlUnescaper};
use super::tables::{
    ALTERED_UTF8_RE, BADNESS_RE, CHARMAPS, CONTROL_CHARS, FTFY_UPPER_ENTITIES, LIGATURES,
    LOSSY_UTF8_RE, UTF8_CONTINUATION_STRICT, UTF8_DETECTOR_BODY, WIDTH_MAP, WINDOWS_1252_STRICT,
};
use super::TokenizerError;

/// Upper bound on ftfy's "repeat until nothing changes" loops. Real text
/// settles in two or three rounds; the cap only keeps hostile input bounded.
const MAX_ROUNDS: usize = 64;

/// One of ftfy's single-byte codecs, with its encoder (the inverse of the
/// decoding table) built once.
struct Charmap {
    name: &'static str,
    sloppy: bool,
    /// Non-ASCII characters (and the character for byte 0x1A) to their byte.
    encode: HashMap<char, u8>,
}

impl Charmap {
    /// `text.encode(codec)` when `possible_encoding(text, codec)` holds.
    fn encode(&self, text: &str) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            if c.is_ascii() && c != '\u{1a}' {
                out.push(c as u8);
            } else {
                out.push(*self.encode.get(&c)?);
            }
        }
        Some(out)
    }
}

/// Compiled state for [`Ftfy::fix_text`]; built once per tokenizer.
pub(super) struct Ftfy {
    html: HtmlUnescaper,
    /// ftfy `HTML_ENTITY_RE`.
    entity: Regex,
    /// ftfy `ANSI_RE`.
    ansi: Regex,
    /// ftfy `BADNESS_RE`.
    badness: Regex,
    /// ftfy `UTF8_DETECTOR_RE` minus its lookbehind, anchored at the start.
    detector: Regex,
    altered_utf8: BytesRegex,
    lossy_utf8: BytesRegex,
    charmaps: Vec<Charmap>,
    /// Sloppy windows-1252 decoding of C1 controls (U+0080..=U+009F).
    c1_map: [char; 32],
}

fn compile(what: &str, pattern: &str) -> Result<Regex, TokenizerError> {
    Regex::new(pattern).map_err(|e| TokenizerError::Internal(format!("ftfy {what} regex: {e}")))
}

fn compile_bytes(what: &str, pattern: &str) -> Result<BytesRegex, TokenizerError> {
    BytesRegex::new(pattern)
        .map_err(|e| TokenizerError::Internal(format!("ftfy {what} regex: {e}")))
}

impl Ftfy {
    /// Compiles the regexes and codec tables (constants: failure is a bug).
    pub(super) fn new() -> Result<Self, TokenizerError> {
        let charmaps = CHARMAPS
            .iter()
            .map(|(name, sloppy, high, sub)| {
                let mut encode: HashMap<char, u8> = high
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| (c, 0x80u8.wrapping_add(i as u8)))
                    .collect();
                encode.insert(*sub, 0x1A);
                Charmap {
                    name,
                    sloppy: *sloppy,
                    encode,
                }
            })
            .collect::<Vec<_>>();
        let sloppy_1252 = charmaps
            .iter()
            .position(|c| c.name == "sloppy-windows-1252")
            .ok_or_else(|| TokenizerError::Internal("no sloppy-windows-1252 table".into()))?;
        let mut c1_map = ['\0'; 32];
        for (i, slot) in c1_map.iter_mut().enumerate() {
            *slot = CHARMAPS[sloppy_1252].2[i];
        }
        Ok(Self {
            html: HtmlUnescaper::new()?,
            entity: compile("entity", "&#?[0-9A-Za-z]{1,24};")?,
            // Python's `\d` on str is Unicode Nd, as is Rust's.
            ansi: compile("ansi", r"\x1b\[(?:\d|;)*[a-zA-Z]")?,
            badness: compile("badness", BADNESS_RE)?,
            detector: compile("utf8 detector", UTF8_DETECTOR_BODY)?,
            altered_utf8: compile_bytes("altered utf8", ALTERED_UTF8_RE)?,
            lossy_utf8: compile_bytes("lossy utf8", LOSSY_UTF8_RE)?,
            charmaps,
            c1_map,
        })
    }

    /// Access to the shared `html.unescape` port.
    pub(super) fn html(&self) -> &HtmlUnescaper {
        &self.html
    }

    /// `ftfy.fix_text(text)` with the default configuration.
    pub(super) fn fix_text(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        // unescape_html="auto": off for a segment containing '<' — and, as
        // ftfy rebinds its config in the loop, for every later segment too.
        let mut unescape = true;
        for segment in text.split_inclusive('\n') {
            if unescape && segment.contains('<') {
                unescape = false;
            }
            out.push_str(&self.fix_segment(segment, unescape));
        }
        out
    }

    /// `ftfy.fix_and_explain(segment)`: all fixers, repeated to a fixed point.
    fn fix_segment(&self, segment: &str, unescape: bool) -> String {
        // Fast path for plain ASCII (most label text): every fixer needs
        // '&', ESC, '\r', another control character or a non-ASCII
        // character to change anything.
        if segment.bytes().all(|b| {
            (b' '..=b'~').contains(&b) && b != b'&' || matches!(b, b'\t' | b'\n' | b'\x0c')
        }) {
            return segment.to_string();
        }
        let mut text = segment.to_string();
        for _ in 0..MAX_ROUNDS {
            let orig = text.clone();
            if unescape {
                text = self.unescape_html(&text);
            }
            text = self.fix_encoding(&text);
            text = self.fix_c1_controls(&text);
            text = translate(&text, |c| lookup_char_table(LIGATURES, c));
            text = translate(&text, fix_width_char);
            text = translate(&text, uncurl_char);
            text = fix_line_breaks(&text);
            // fix_surrogates: nothing to do on a Rust string.
            text = self.ansi.replace_all(&text, "").into_owned();
            text = remove_control_chars(&text);
            if is_nfc_quick(text.chars()) != IsNormalized::Yes {
                text = text.nfc().collect();
            }
            if text == orig {
                break;
            }
        }
        text
    }

    /// ftfy `unescape_html`: entities that end in `;`, plus all-caps names.
    fn unescape_html(&self, text: &str) -> String {
        if !text.contains('&') {
            return text.to_string();
        }
        self.entity
            .replace_all(text, |caps: &regex::Captures<'_>| {
                let whole = &caps[0];
                let name = &whole[1..];
                if let Some(v) = html5_entity(name).or_else(|| upper_entity(name)) {
                    return v.to_string();
                }
                if whole.starts_with("&#") {
                    let decoded = self.html.unescape(whole);
                    // "If html.unescape only decoded part of the string,
                    // that's not what we want."
                    if decoded.contains(';') {
                        return whole.to_string();
                    }
                    return decoded.into_owned();
                }
                whole.to_string()
            })
            .into_owned()
    }

    /// `ftfy.fix_encoding`: mojibake repair, repeated until stable.
    pub(super) fn fix_encoding(&self, text: &str) -> String {
        let mut text = text.to_string();
        for _ in 0..MAX_ROUNDS {
            let fixed = self.fix_encoding_one_step(&text);
            if fixed == text {
                break;
            }
            text = fixed;
        }
        text
    }

    /// ftfy `_fix_encoding_one_step_and_explain`, without the explanation.
    fn fix_encoding_one_step(&self, text: &str) -> String {
        if text.is_empty() || text.is_ascii() || !self.is_bad(text) {
            return text.to_string();
        }
        let mut possible_latin1 = false;
        for charmap in &self.charmaps {
            let Some(mut bytes) = charmap.encode(text) else {
                continue;
            };
            if charmap.name == "latin-1" {
                possible_latin1 = true;
            }
            if charmap.name != "macroman" && self.altered_utf8.is_match(&bytes) {
                bytes = self.restore_byte_a0(&bytes);
            }
            if charmap.sloppy {
                bytes = self
                    .lossy_utf8
                    .replace_all(&bytes, "\u{FFFD}".as_bytes())
                    .into_owned();
            }
            let decoded = if bytes.contains(&0xED) || bytes.contains(&0xC0) {
                decode_utf8_variants(&bytes)
            } else {
                String::from_utf8(bytes).ok()
            };
            if let Some(fixed) = decoded {
                return fixed;
            }
        }
        if self.detector_matches(text).next().is_some() {
            let fixed = self.decode_inconsistent_utf8(text);
            if fixed != text {
                return fixed;
            }
        }
        if possible_latin1 {
            // ftfy first checks `"windows-1252" in possible_1byte_encodings`,
            // which never holds (its list has the *sloppy* codec), so this
            // is the branch it takes: re-read Latin-1 as strict windows-1252.
            if let Some(fixed) = latin1_as_windows_1252(text) {
                if fixed != text {
                    return fixed;
                }
            }
        }
        if text.chars().any(is_c1) {
            return self.fix_c1_controls(text);
        }
        text.to_string()
    }

    /// ftfy `is_bad`: does the text contain a likely mojibake sequence?
    fn is_bad(&self, text: &str) -> bool {
        self.badness.is_match(text)
    }

    /// Matches of ftfy's `UTF8_DETECTOR_RE` as byte ranges, non-overlapping,
    /// left to right, honouring its negative lookbehind (the character
    /// before a match must not be a strict UTF-8 continuation lookalike).
    fn detector_matches<'a>(&'a self, text: &'a str) -> impl Iterator<Item = (usize, usize)> + 'a {
        let mut pos = 0;
        let mut prev: Option<char> = None;
        std::iter::from_fn(move || {
            while pos < text.len() {
                let rest = &text[pos..];
                let c = rest.chars().next()?;
                // Every first-of-sequence character is non-ASCII (checked by
                // the generator), so ASCII positions cannot start a match.
                let behind_ok = prev
                    .is_none_or(|p| !in_ranges(UTF8_CONTINUATION_STRICT, u64::from(u32::from(p))));
                if !c.is_ascii() && behind_ok {
                    if let Some(m) = self.detector.find(rest) {
                        let start = pos;
                        let end = pos + m.end();
                        prev = text[..end].chars().next_back();
                        pos = end;
                        return Some((start, end));
                    }
                }
                prev = Some(c);
                pos += c.len_utf8();
            }
            None
        })
    }

    /// ftfy `decode_inconsistent_utf8`: fix mojibake embedded in other text.
    fn decode_inconsistent_utf8(&self, text: &str) -> String {
        let total_chars = text.chars().count();
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        let matches: Vec<(usize, usize)> = self.detector_matches(text).collect();
        for (start, end) in matches {
            out.push_str(&text[last..start]);
            let sub = &text[start..end];
            // "Require the match to be shorter, so that this doesn't recurse
            // infinitely."
            if sub.chars().count() < total_chars && self.is_bad(sub) {
                out.push_str(&self.fix_encoding(sub));
            } else {
                out.push_str(sub);
            }
            last = end;
        }
        out.push_str(&text[last..]);
        out
    }

    /// ftfy `restore_byte_a0`: put back 0xA0 bytes that became spaces.
    fn restore_byte_a0(&self, bytes: &[u8]) -> Vec<u8> {
        // A_GRAVE_WORD_RE = b"\xc3 (?! |quele|quela|quilo|s )" -> b"\xc3\xa0 "
        // (`regex` has no lookahead, so the exceptions are checked by hand).
        let mut step1 = Vec::with_capacity(bytes.len() + 4);
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == 0xC3 && bytes.get(i + 1) == Some(&b' ') {
                let after = &bytes[i + 2..];
                let excepted = [&b" "[..], b"quele", b"quela", b"quilo", b"s "]
                    .iter()
                    .any(|p| after.starts_with(p));
                if !excepted {
                    step1.extend_from_slice(b"\xC3\xA0 ");
                    i += 2;
                    continue;
                }
            }
            step1.push(bytes[i]);
            i += 1;
        }
        self.altered_utf8
            .replace_all(&step1, |caps: &regex::bytes::Captures<'_>| {
                caps[0]
                    .iter()
                    .map(|&b| if b == b' ' { 0xA0 } else { b })
                    .collect::<Vec<u8>>()
            })
            .into_owned()
    }

    /// ftfy `fix_c1_controls`: C1 controls read as sloppy windows-1252.
    fn fix_c1_controls(&self, text: &str) -> String {
        translate(text, |c| {
            if is_c1(c) {
                Some(Replacement::Char(
                    self.c1_map[(u32::from(c) - 0x80) as usize],
                ))
            } else {
                None
            }
        })
    }
}

fn is_c1(c: char) -> bool {
    ('\u{80}'..='\u{9f}').contains(&c)
}

/// ftfy's extra all-caps entity names (`&EACUTE;`).
fn upper_entity(name: &str) -> Option<&'static str> {
    FTFY_UPPER_ENTITIES
        .binary_search_by(|(k, _)| k.as_bytes().cmp(name.as_bytes()))
        .ok()
        .map(|i| FTFY_UPPER_ENTITIES[i].1)
}

/// What a character-wise fixer turns one character into.
enum Replacement {
    Char(char),
    Str(&'static str),
}

/// `str.translate`: applies `f` to every character, copying only when
/// something changes (most label text needs no fixing).
fn translate(text: &str, f: impl Fn(char) -> Option<Replacement>) -> String {
    let mut out: Option<String> = None;
    for (i, c) in text.char_indices() {
        match f(c) {
            Some(rep) => {
                let buf = out.get_or_insert_with(|| {
                    let mut s = String::with_capacity(text.len() + 8);
                    s.push_str(&text[..i]);
                    s
                });
                match rep {
                    Replacement::Char(r) => buf.push(r),
                    Replacement::Str(r) => buf.push_str(r),
                }
            }
            None => {
                if let Some(buf) = out.as_mut() {
                    buf.push(c);
                }
            }
        }
    }
    out.unwrap_or_else(|| text.to_string())
}

fn lookup_char_table(table: &'static [(char, &'static str)], c: char) -> Option<Replacement> {
    table
        .binary_search_by(|(k, _)| k.cmp(&c))
        .ok()
        .map(|i| Replacement::Str(table[i].1))
}

/// ftfy `fix_character_width` for one character.
fn fix_width_char(c: char) -> Option<Replacement> {
    if c == '\u{3000}' || ('\u{ff01}'..='\u{ffef}').contains(&c) {
        lookup_char_table(WIDTH_MAP, c)
    } else {
        None
    }
}

/// ftfy `uncurl_quotes` for one character.
fn uncurl_char(c: char) -> Option<Replacement> {
    match c {
        '\u{201c}'..='\u{201f}' => Some(Replacement::Char('"')),
        '\u{02bc}' | '\u{2018}'..='\u{201b}' => Some(Replacement::Char('\'')),
        _ => None,
    }
}

/// ftfy `fix_line_breaks`.
fn fix_line_breaks(text: &str) -> String {
    if !text.contains(['\r', '\u{2028}', '\u{2029}', '\u{85}']) {
        return text.to_string();
    }
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// ftfy `remove_control_chars`.
fn remove_control_chars(text: &str) -> String {
    text.chars()
        .filter(|&c| !in_ranges(CONTROL_CHARS, u64::from(u32::from(c))))
        .collect()
}

/// `text.encode("latin-1").decode("windows-1252")`, `None` when a byte is
/// undefined in strict windows-1252 (or a character is not Latin-1).
fn latin1_as_windows_1252(text: &str) -> Option<String> {
    text.chars()
        .map(|c| match u32::from(c) {
            v @ 0..=0x7F => char::from_u32(v),
            v @ 0x80..=0xFF => WINDOWS_1252_STRICT[(v - 0x80) as usize],
            _ => None,
        })
        .collect()
}

/// Decodes bytes with ftfy's `utf-8-variants` codec (strict errors): UTF-8
/// plus CESU-8 surrogate pairs and Java's two-byte NUL (`C0 80`).
fn decode_utf8_variants(b: &[u8]) -> Option<String> {
    let n = b.len();
    // Python's `$` (no MULTILINE) matches at the end and before a final '\n'.
    let at_end = |k: usize| k == n || (k + 1 == n && b[n - 1] == b'\n');
    // One `([lo-hi]|$)` group at `k`: consumes a byte in range, or matches
    // empty at the end; returns the next position.
    let group = |k: usize, lo: u8, hi: u8| -> Option<usize> {
        if k < n && (lo..=hi).contains(&b[k]) {
            Some(k + 1)
        } else if at_end(k) {
            Some(k)
        } else {
            None
        }
    };
    let null_at = |k: usize| b[k] == 0xC0 && (group(k + 1, 0x80, 0x80).is_some());
    let cesu_at = |k: usize| -> bool {
        if b[k] != 0xED {
            return false;
        }
        let steps = [
            (0xA0, 0xAF),
            (0x80, 0xBF),
            (0xED, 0xED),
            (0xB0, 0xBF),
            (0x80, 0xBF),
        ];
        let mut p = k + 1;
        for (lo, hi) in steps {
            match group(p, lo, hi) {
                Some(next) => p = next,
                None => return false,
            }
        }
        true
    };
    let surrogate_at = |k: usize| {
        b[k] == 0xED
            && group(k + 1, 0xA0, 0xBF)
                .and_then(|p| group(p, 0x80, 0xBF))
                .is_some()
    };

    let mut out = String::with_capacity(n);
    let mut pos = 0;
    while pos < n {
        let special = (pos..n).find(|&k| null_at(k) || cesu_at(k) || surrogate_at(k));
        match special {
            None => {
                out.push_str(std::str::from_utf8(&b[pos..]).ok()?);
                pos = n;
            }
            Some(k) if k > pos => {
                out.push_str(std::str::from_utf8(&b[pos..k]).ok()?);
                pos = k;
            }
            Some(_) if b[pos] == 0xC0 => {
                if n - pos > 1 {
                    out.push('\0');
                    pos += 2;
                } else {
                    return None;
                }
            }
            Some(_) => {
                // Starts with 0xED: a CESU-8 pair, or an error under strict
                // decoding (Python's UTF-8 decoder rejects lone surrogates).
                if n - pos < 6 || !cesu_at(pos) {
                    return None;
                }
                let s = &b[pos..pos + 6];
                let cp = ((u32::from(s[1]) & 0x0F) << 16)
                    + ((u32::from(s[2]) & 0x3F) << 10)
                    + ((u32::from(s[4]) & 0x0F) << 6)
                    + (u32::from(s[5]) & 0x3F)
                    + 0x10000;
                out.push(char::from_u32(cp)?);
                pos += 6;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(s: &str) -> String {
        Ftfy::new().map(|f| f.fix_text(s)).unwrap_or_default()
    }

    #[test]
    fn ftfy_docstring_examples() {
        // From ftfy's own docstrings.
        assert_eq!(fix("âœ” No problems"), "✔ No problems");
        assert_eq!(fix("&macr;\\_(ã\u{83}\u{84})_/&macr;"), "¯\\_(ツ)_/¯");
        assert_eq!(
            fix("Broken text&hellip; it&#x2019;s ﬂubberiﬁc!"),
            "Broken text… it's flubberific!"
        );
        assert_eq!(fix("ＬＯＵＤ　ＮＯＩＳＥＳ"), "LOUD NOISES");
        assert_eq!(fix("schÃ¶n"), "schön");
        assert_eq!(fix("voilÃ le travail"), "voilà le travail");
        assert_eq!(fix("P&EACUTE;REZ"), "PÉREZ");
        assert_eq!(fix("&lt;tag&gt;"), "<tag>");
    }

    #[test]
    fn utf8_variants() {
        assert_eq!(decode_utf8_variants(b"a\xc0\x80b").as_deref(), Some("a\0b"));
        // U+1F600 as CESU-8.
        assert_eq!(
            decode_utf8_variants(b"\xed\xa0\xbd\xed\xb8\x80").as_deref(),
            Some("\u{1F600}")
        );
        assert_eq!(decode_utf8_variants(b"\xed\xa0\x80"), None);
    }
}
