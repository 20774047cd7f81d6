#!/usr/bin/env python3
"""Generates `tables.rs`: the data the Rust port of CLIP's text cleanup needs
from the Python reference, taken from the reference itself so the two cannot
drift apart by transcription.

Run with the reference environment (Python 3.11, ftfy 6.3.1, regex):
    python3 -m venv /tmp/tokref && /tmp/tokref/bin/pip install ftfy==6.3.1 regex
    /tmp/tokref/bin/python src/tokenizer/gen_tables.py > src/tokenizer/tables.rs
    cargo fmt

What comes from where:
  * html.entities.html5 and html's invalid-charref tables: Python's
    `html.unescape`, which CLIP's basic_clean applies twice.
  * ftfy.chardata / ftfy.badness: entity table, width map, charmap codecs and
    the mojibake-detection regexes of ftfy.fix_text, translated from Python
    `re` syntax to Rust `regex` syntax (\\s and \\w expanded to Python's own
    definitions, which differ from Rust's).
  * `regex` module classes used by CLIP's pre-tokenisation pattern with
    IGNORECASE, evaluated code point by code point.
"""
import html.entities
import html as _html
import re
import re._constants as C
import re._parser as P
import sys
import unicodedata

import ftfy
import ftfy.bad_codecs  # noqa: F401  (registers the sloppy-* codecs)
import ftfy.badness
import ftfy.chardata as cd
import regex

MAX = 0x110000


def rs_str(s):
    out = []
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        else:
            out.append("\\u{%x}" % o)
    return '"' + "".join(out) + '"'


def rs_char(ch):
    return "'\\u{%x}'" % ord(ch)


def ranges_of(pred):
    out = []
    start = None
    for cp in range(MAX):
        ok = (not 0xD800 <= cp <= 0xDFFF) and pred(cp)
        if 0xD800 <= cp <= 0xDFFF:
            # surrogates cannot occur in Rust strings: let ranges span them
            ok = start is not None
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, MAX - 1))
    # trim ranges that only consist of surrogates / end inside them
    return [(a, b) for a, b in out]


def emit_ranges(name, doc, rngs):
    print(f"/// {doc}")
    print(f"pub(super) static {name}: &[(u32, u32)] = &[")
    line = []
    for a, b in rngs:
        line.append(f"(0x{a:X}, 0x{b:X}),")
        if len(line) == 6:
            print("    " + " ".join(line))
            line = []
    if line:
        print("    " + " ".join(line))
    print("];")
    print()


# ---------------------------------------------------------------- re -> Rust
PY_RE_SPACE = [cp for cp in range(MAX) if not 0xD800 <= cp <= 0xDFFF and re.match(r"\s", chr(cp))]
PY_RE_WORD = ranges_of(lambda cp: re.match(r"\w", chr(cp)) is not None)


def cls_item_ranges(items):
    """Return the list of Rust class fragments for the items of an IN node."""
    frags = []
    for op, av in items:
        if op is C.LITERAL:
            frags.append("\\x{%X}" % av)
        elif op is C.RANGE:
            frags.append("\\x{%X}-\\x{%X}" % av)
        elif op is C.CATEGORY:
            if av is C.CATEGORY_SPACE:
                frags.extend("\\x{%X}" % cp for cp in PY_RE_SPACE)
            elif av is C.CATEGORY_WORD:
                frags.extend("\\x{%X}-\\x{%X}" % r for r in PY_RE_WORD)
            elif av is C.CATEGORY_DIGIT:
                frags.append("\\p{Nd}")
            else:
                raise ValueError(av)
        else:
            raise ValueError((op, av))
    return frags


def to_rust(sub, byte_mode=False):
    out = []
    for op, av in sub:
        if op is C.LITERAL:
            out.append(("\\x%02X" % av) if byte_mode else ("\\x{%X}" % av))
        elif op is C.IN:
            neg = av and av[0][0] is C.NEGATE
            items = av[1:] if neg else av
            if byte_mode:
                frags = []
                for iop, iav in items:
                    if iop is C.LITERAL:
                        frags.append("\\x%02X" % iav)
                    elif iop is C.RANGE:
                        frags.append("\\x%02X-\\x%02X" % iav)
                    else:
                        raise ValueError(iop)
            else:
                frags = cls_item_ranges(items)
            out.append("[" + ("^" if neg else "") + "".join(frags) + "]")
        elif op is C.BRANCH:
            out.append("(?:" + "|".join(to_rust(s, byte_mode) for s in av[1]) + ")")
        elif op is C.SUBPATTERN:
            out.append("(?:" + to_rust(av[3], byte_mode) + ")")
        elif op is C.MAX_REPEAT:
            lo, hi, s = av
            hi_s = "" if hi is C.MAXREPEAT else str(hi)
            out.append("(?:" + to_rust(s, byte_mode) + ")" + "{%d,%s}" % (lo, hi_s))
        elif op is C.ANY:
            out.append(".")
        elif op is C.AT:
            if av is C.AT_BEGINNING:
                out.append("^")
            else:
                raise ValueError(av)
        else:
            raise ValueError((op, av))
    return "".join(out)


def main():
    p = print
    p("// @generated by src/tokenizer/gen_tables.py from Python %s, ftfy %s, regex %s;"
      % (sys.version.split()[0], ftfy.__version__, regex.__version__))
    p("// Unicode data of the generating Python: %s. Do not edit by hand." % unicodedata.unidata_version)
    p("//! Data tables for the CLIP text cleanup, generated from the Python reference.")
    p()

    # ---- html.unescape
    ents = sorted(html.entities.html5.items(), key=lambda kv: kv[0].encode())
    p("/// `html.entities.html5` (names without the leading `&`), sorted by name bytes.")
    p("pub(super) static HTML5_ENTITIES: &[(&str, &str)] = &[")
    for k, v in ents:
        p(f"    ({rs_str(k)}, {rs_str(v)}),")
    p("];")
    p()
    inv = sorted(_html._invalid_charrefs.items())
    p("/// `html._invalid_charrefs`: numeric references that browsers remap.")
    p("pub(super) static INVALID_CHARREFS: &[(u32, &str)] = &[")
    for k, v in inv:
        p(f"    (0x{k:X}, {rs_str(v)}),")
    p("];")
    p()
    icp = sorted(_html._invalid_codepoints)
    rngs = []
    for cp in icp:
        if rngs and rngs[-1][1] == cp - 1:
            rngs[-1] = (rngs[-1][0], cp)
        else:
            rngs.append((cp, cp))
    emit_ranges("INVALID_CODEPOINTS", "`html._invalid_codepoints`: numeric references that decode to nothing.", rngs)

    # ---- ftfy entities: uppercase extras (the rest are html5 names with ';')
    upper = sorted(((k[1:], v) for k, v in cd.HTML_ENTITIES.items()
                    if k[1:] not in html.entities.html5), key=lambda kv: kv[0].encode())
    for k, v in cd.HTML_ENTITIES.items():
        assert k.startswith("&") and k.endswith(";")
        if k[1:] in html.entities.html5:
            assert html.entities.html5[k[1:]] == v
    p("/// ftfy's all-caps entity names (e.g. `EACUTE;`) beyond `html5`, sorted by name bytes.")
    p("pub(super) static FTFY_UPPER_ENTITIES: &[(&str, &str)] = &[")
    for k, v in upper:
        p(f"    ({rs_str(k)}, {rs_str(v)}),")
    p("];")
    p()

    # ---- width map
    p("/// ftfy `WIDTH_MAP`: halfwidth/fullwidth forms to their standard forms.")
    p("pub(super) static WIDTH_MAP: &[(char, &str)] = &[")
    for k, v in sorted(cd.WIDTH_MAP.items()):
        p(f"    ({rs_char(chr(k))}, {rs_str(v)}),")
    p("];")
    p()
    p("/// ftfy `LIGATURES`.")
    p("pub(super) static LIGATURES: &[(char, &str)] = &[")
    for k, v in sorted(cd.LIGATURES.items()):
        p(f"    ({rs_char(chr(k))}, {rs_str(v)}),")
    p("];")
    p()
    cc = sorted(cd.CONTROL_CHARS)
    rngs = []
    for cp in cc:
        if rngs and rngs[-1][1] == cp - 1:
            rngs[-1] = (rngs[-1][0], cp)
        else:
            rngs.append((cp, cp))
    emit_ranges("CONTROL_CHARS", "ftfy `CONTROL_CHARS`: removed by `remove_control_chars`.", rngs)

    # ---- charmap codecs
    p("/// ftfy `CHARMAP_ENCODINGS`, in the order ftfy tries them: name, whether it")
    p("/// is a `sloppy-*` codec, the characters bytes 0x80..=0xFF decode to, and")
    p("/// the character byte 0x1A decodes to.")
    p("pub(super) static CHARMAPS: &[(&str, bool, [char; 128], char)] = &[")
    for enc in cd.CHARMAP_ENCODINGS:
        hi = bytes(range(0x80, 0x100)).decode(enc)
        sub = b"\x1a".decode(enc)
        assert len(hi) == 128 and len(sub) == 1
        # The Rust side encodes by inverting this table: check that it is
        # injective and agrees with Python's encoder on every allowed char.
        allowed = [chr(c) for c in range(0x80) if c != 0x1A] + list(hi) + [sub]
        assert len(set(allowed)) == len(allowed), enc
        for ch in allowed:
            b = ch.encode(enc)
            if ch == sub:
                assert b == b"\x1a", enc
            elif ord(ch) < 0x80:
                assert b == bytes([ord(ch)]), (enc, ch)
            else:
                assert b == bytes([0x80 + hi.index(ch)]), (enc, ch)
        assert cd.possible_encoding("".join(allowed), enc)
        p(f"    ({rs_str(enc)}, {str(enc.startswith('sloppy')).lower()}, [")
        p("        " + " ".join(rs_char(ch) + "," for ch in hi))
        p(f"    ], {rs_char(sub)}),")
    p("];")
    p()
    p("/// Strict `windows-1252` decoding of bytes 0x80..=0xFF (`None`: undefined byte).")
    p("pub(super) static WINDOWS_1252_STRICT: [Option<char>; 128] = [")
    row = []
    for b in range(0x80, 0x100):
        try:
            row.append(f"Some({rs_char(bytes([b]).decode('windows-1252'))}),")
        except UnicodeDecodeError:
            row.append("None,")
    p("    " + " ".join(row))
    p("];")
    p()

    # ---- ftfy regexes
    bad = P.parse(ftfy.badness.BADNESS_RE.pattern, ftfy.badness.BADNESS_RE.flags)
    p("/// ftfy `BADNESS_RE` (mojibake heuristic) in Rust `regex` syntax.")
    p(f"pub(super) static BADNESS_RE: &str = {rs_str(to_rust(bad))};")
    p()
    det = P.parse(cd.UTF8_DETECTOR_RE.pattern, cd.UTF8_DETECTOR_RE.flags)
    assert det[0][0] is C.ASSERT_NOT and det[0][1][0] == -1
    look = det[0][1][1]
    assert len(look) == 1 and look[0][0] is C.IN
    body = to_rust(list(det)[1:])
    p("/// ftfy `UTF8_DETECTOR_RE` without its leading negative lookbehind, anchored.")
    p(f"pub(super) static UTF8_DETECTOR_BODY: &str = {rs_str('^' + body)};")
    p()
    strict_re = re.compile("[" + cd.UTF8_CLUES["utf8_continuation_strict"] + "]")
    strict = ranges_of(lambda cp: strict_re.match(chr(cp)) is not None)
    # The Rust side only tries the detector at non-ASCII characters.
    for key in ("utf8_first_of_2", "utf8_first_of_3", "utf8_first_of_4"):
        first_re = re.compile("[" + cd.UTF8_CLUES[key] + "]")
        assert not any(first_re.match(chr(c)) for c in range(0x80)), key
    emit_ranges("UTF8_CONTINUATION_STRICT",
                "Characters the `UTF8_DETECTOR_RE` lookbehind rejects before a match.", strict)
    for name, rx in [("ALTERED_UTF8_RE", cd.ALTERED_UTF8_RE), ("LOSSY_UTF8_RE", cd.LOSSY_UTF8_RE)]:
        parsed = P.parse(rx.pattern, rx.flags)
        p(f"/// ftfy `{name}` (a bytes pattern) in Rust `regex::bytes` syntax.")
        p(f"pub(super) static {name}: &str = {rs_str('(?-u)' + to_rust(parsed, byte_mode=True))};")
        p()

    # ---- Python whitespace notions
    p("/// Characters for which Python's `str.isspace()` is true (`str.strip()`).")
    p("pub(super) static PY_ISSPACE: &[char] = &[")
    p("    " + " ".join(rs_char(chr(c)) + "," for c in range(MAX)
                        if not 0xD800 <= c <= 0xDFFF and chr(c).isspace()))
    p("];")
    p()
    p("/// Characters the `regex` module's `\\s` matches (CLIP's whitespace_clean).")
    p("pub(super) static REGEX_SPACE: &[char] = &[")
    p("    " + " ".join(rs_char(chr(c)) + "," for c in range(MAX)
                        if not 0xD800 <= c <= 0xDFFF and regex.match(r"\s", chr(c))))
    p("];")
    p()

    # ---- CLIP pre-tokenisation classes (regex module, IGNORECASE)
    I = regex.IGNORECASE
    rl = regex.compile(r"[\p{L}]", I)
    rn = regex.compile(r"[\p{N}]", I)
    rneg = regex.compile(r"[^\s\p{L}\p{N}]", I)
    emit_ranges("PAT_LETTER", "`[\\p{L}]` under IGNORECASE (regex module).",
                ranges_of(lambda cp: rl.match(chr(cp)) is not None))
    emit_ranges("PAT_NUMBER", "`[\\p{N}]` under IGNORECASE (regex module).",
                ranges_of(lambda cp: rn.match(chr(cp)) is not None))
    emit_ranges("PAT_OTHER", "`[^\\s\\p{L}\\p{N}]` under IGNORECASE (regex module).",
                ranges_of(lambda cp: rneg.match(chr(cp)) is not None))
    letters = sorted(set("startoftextendoftextsreveml"))
    p("/// For each ASCII letter of the pattern's literals (`<|startoftext|>`, `'re`, …),")
    p("/// the non-ASCII characters that also match it under IGNORECASE.")
    p("pub(super) static PAT_FOLDS: &[(char, &[char])] = &[")
    for L in letters:
        rx = regex.compile(regex.escape(L), I)
        extra = [chr(c) for c in range(0x80, MAX) if not 0xD800 <= c <= 0xDFFF and rx.match(chr(c))]
        p(f"    ({rs_char(L)}, &[{', '.join(rs_char(c) for c in extra)}]),")
    p("];")


if __name__ == "__main__":
    main()
