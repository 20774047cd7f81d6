//! Python's `html.unescape`, which CLIP's `basic_clean` applies twice.
//!
//! Ported rule for rule (including its quirks: entities without `;`, the
//! longest-prefix rule for unknown names, browser remapping of numeric
//! references) because every difference changes token ids. The `html-escape`
//! crate follows the HTML spec's decoder, which differs from Python's in those
//! corners.

use std::borrow::Cow;

use regex::{Captures, Regex};

use super::tables::{HTML5_ENTITIES, INVALID_CHARREFS, INVALID_CODEPOINTS};
use super::TokenizerError;

/// Compiled form of Python's `html._charref` pattern.
pub(super) struct HtmlUnescaper {
    charref: Regex,
}

impl HtmlUnescaper {
    /// Compiles the pattern; it is a constant, so failure means a bug here.
    pub(super) fn new() -> Result<Self, TokenizerError> {
        // Python: r'&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)'.
        // Leftmost-first alternation in `regex` picks the same match as
        // Python's backtracking here (no alternative is a prefix trap).
        let charref = Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\x0c <&#;]{1,32};?)")
            .map_err(|e| TokenizerError::Internal(format!("html charref regex: {e}")))?;
        Ok(Self { charref })
    }

    /// `html.unescape(s)`.
    pub(super) fn unescape<'a>(&self, s: &'a str) -> Cow<'a, str> {
        if !s.contains('&') {
            return Cow::Borrowed(s);
        }
        self.charref
            .replace_all(s, |caps: &Captures<'_>| replace_charref(&caps[1]))
    }
}

/// Looks a name (as written after `&`, possibly ending in `;`) up in
/// `html.entities.html5`.
pub(super) fn html5_entity(name: &str) -> Option<&'static str> {
    HTML5_ENTITIES
        .binary_search_by(|(k, _)| k.as_bytes().cmp(name.as_bytes()))
        .ok()
        .map(|i| HTML5_ENTITIES[i].1)
}

/// Parses ASCII digits like Python's `int(digits, radix)` would, saturating
/// instead of growing: any value above `u64::MAX` is far outside Unicode and
/// is treated the same way as Python treats its exact big integer.
fn parse_saturating(digits: &str, radix: u32) -> u64 {
    let mut value: u64 = 0;
    for c in digits.chars() {
        let Some(d) = c.to_digit(radix) else {
            return u64::MAX;
        };
        value = value
            .saturating_mul(u64::from(radix))
            .saturating_add(u64::from(d));
    }
    value
}

/// Python's `html._replace_charref` for the text after `&`.
fn replace_charref(s: &str) -> String {
    if let Some(num_part) = s.strip_prefix('#') {
        let (digits, radix) = match num_part.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16),
            None => (num_part, 10),
        };
        let num = parse_saturating(digits.trim_end_matches(';'), radix);
        if let Ok(i) = INVALID_CHARREFS.binary_search_by(|(k, _)| u64::from(*k).cmp(&num)) {
            return INVALID_CHARREFS[i].1.to_string();
        }
        if (0xD800..=0xDFFF).contains(&num) || num > 0x10FFFF {
            return "\u{FFFD}".to_string();
        }
        if in_ranges(INVALID_CODEPOINTS, num) {
            return String::new();
        }
        return u32::try_from(num)
            .ok()
            .and_then(char::from_u32)
            .map(String::from)
            .unwrap_or_else(|| "\u{FFFD}".to_string());
    }
    if let Some(v) = html5_entity(s) {
        return v.to_string();
    }
    // "find the longest matching name (as defined by the standard)":
    // prefixes of len(s)-1 down to 2 characters.
    let boundaries: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
    for x in (2..boundaries.len()).rev() {
        let (prefix, rest) = s.split_at(boundaries[x]);
        if let Some(v) = html5_entity(prefix) {
            return format!("{v}{rest}");
        }
    }
    format!("&{s}")
}

/// Whether `v` lies in one of the sorted, disjoint inclusive `ranges`.
pub(super) fn in_ranges(ranges: &[(u32, u32)], v: u64) -> bool {
    let Ok(v) = u32::try_from(v) else {
        return false;
    };
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < v {
                std::cmp::Ordering::Less
            } else if lo > v {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(s: &str) -> String {
        HtmlUnescaper::new()
            .map(|h| h.unescape(s).into_owned())
            .unwrap_or_default()
    }

    #[test]
    fn python_html_unescape_cases() {
        // Expected values are Python 3.11's html.unescape outputs.
        assert_eq!(un("&amp;"), "&");
        assert_eq!(un("&amp"), "&");
        assert_eq!(un("&ampx"), "&x");
        assert_eq!(un("&notit;"), "\u{ac}it;");
        assert_eq!(un("&notin;"), "\u{2209}");
        assert_eq!(un("&#65"), "A");
        assert_eq!(un("&#x41;&#X42;"), "AB");
        assert_eq!(un("&#0;"), "\u{FFFD}");
        assert_eq!(un("&#128;"), "\u{20AC}");
        assert_eq!(un("&#1;"), "");
        assert_eq!(un("&#xD800;"), "\u{FFFD}");
        assert_eq!(un("&#99999999999999999999;"), "\u{FFFD}");
        assert_eq!(un("&unknown;"), "&unknown;");
        assert_eq!(un("&;"), "&;");
        assert_eq!(un("&#;"), "&#;");
    }
}
