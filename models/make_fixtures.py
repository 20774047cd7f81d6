#!/usr/bin/env python3
"""Reference fixtures for edgeclip's Rust tests.

    python make_fixtures.py [--name clip-vit-b-32-seeded]

Reads the bundle ${EDGECLIP_HOME:-~/.cache/edgeclip}/<name>/ written by export_clip.py and the
datasets in ../shared/datasets (override with EDGECLIP_DATASETS), writes
${EDGECLIP_HOME:-~/.cache/edgeclip}/fixtures/<name>/:

    tokens.jsonl   {"text", "ids"[77]}: OpenAI clip.tokenize(text, 77, truncate=True)
    images.jsonl   {"path", "width", "height", "mode", "fp32"[E], "int8"[E]} (L2-normalised; E = the
                   manifest's embedding_dim: 512 for ViT-B/32, 64 for clip-tiny-seeded)
    pixels/        <i>.f32 (CHW float32 LE, 3*224*224) and <i>.rgb (HWC uint8 224*224*3 crop)
    pixels.jsonl   {"path", "file", "rgb", "mode", "exif_orientation"[, "fixture_file"]}
    exif/          chelsea.png re-stored with EXIF orientation 2/3/6/8 (PNG eXIf), listed in
                   pixels.jsonl with "fixture_file" (relative to the fixtures dir): decode THAT file;
                   its .f32/.rgb equal the upright photo's
    texts.jsonl    {"text", "ids"[77], "fp32"[E], "int8"[E]} (L2-normalised)
    meta.json      versions, seed, fidelity, tokenizer.json agreement
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np

import edgeclip_common as C

T0 = time.time()


def log(msg: str) -> None:
    print(f"[fixtures {time.time() - T0:6.1f}s] {msg}", flush=True)


CIFAR100 = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
    "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup "
    "dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower "
    "leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid "
    "otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road "
    "rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower "
    "sweet_pepper table tank telephone television tiger tractor train trout tulip turtle wardrobe whale "
    "willow_tree wolf woman worm"
).split()


def hard_cases() -> list[str]:
    t = C.read_templates()
    out = [
        # empty / whitespace
        "", " ", "   ", "\t", "\n", " \t\n ", "  a photo of a cat.  ", "\ta photo\tof a dog\n",
        "a  photo   of    a     bird", "line one\nline two\r\nline three", "\u00a0non-breaking\u00a0space\u00a0",
        "ideographic\u3000space", "zero\u200bwidth\u200bspace", "soft\u00adhyphen",
        # punctuation runs
        "!!!", "?!?!?!", "...", "…", "a photo of a cat!!!", "what?!", "--==--==--", "(((nested)))",
        "[brackets] {braces} <angles>", "#hashtag @mention $dollar %percent ^caret *star",
        "semi;colon:colon", "slash/back\\slash|pipe", "~tilde`backtick", "a-b_c.d,e", "''", '""', "'", '"',
        "'''quoted'''", "__init__", "C++ and C#", "don't stop...!", "end.", ".start", "a,b,c,d",
        # digits and numbers
        "0", "7", "42", "1234567890", "3.14159", "1,000,000", "1.000.000,50", "-273.15", "+1 (555) 012-3456",
        "2024-01-31", "12:34:56", "100%", "$9.99", "€10", "£5", "¥1000", "1st 2nd 3rd 4th", "v2.0.1",
        "x86_64", "1e-5", "0xDEADBEEF", "½ ¾ ⅓", "²³¹", "①②③", "٣٤٥", "१२३", "photo 9000 of 12 cats",
        "0" * 100, "1 2 3 4 5 6 7 8 9 10",
        # contractions
        "it's", "don't", "we're", "i've", "i'm", "you'll", "she'd", "IT'S", "DON'T", "WE'RE", "I'VE", "I'M",
        "YOU'LL", "SHE'D", "It'S", "the cat's toy", "cats' toys", "rock 'n' roll", "'tis", "o'clock",
        "y'all'd've", "it’s curly", "ma'am", "'s 't 're 've 'm 'll 'd",
        # HTML entities
        "fish &amp; chips", "&quot;quoted&quot;", "it&#39;s", "&lt;b&gt;bold&lt;/b&gt;", "a&nbsp;b",
        "double &amp;amp; escaped", "&amp;lt;tag&amp;gt;", "&copy; 2024", "&eacute;t&eacute;", "&#x1F600;",
        "&notanentity;", "AT&T", "a & b", "<b>bold</b>", "<p>paragraph</p>",
        # accents, NFC vs NFD
        "café", "naïve", "résumé", "crème brûlée", "Ångström", "São Paulo", "Zürich", "façade", "piñata",
        unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFD", "naïve"),
        unicodedata.normalize("NFD", "crème brûlée"), unicodedata.normalize("NFD", "Ångström"),
        "CAFÉ", "ÉCOLE", "ß", "STRASSE straße", "ǅ ǈ ǋ", "İstanbul", "ﬁsh ﬂower ﬀ ﬃ", "œuvre Æsop",
        # scripts
        "фотография кошки", "Фото Собаки", "ёлка", "φωτογραφία μιας γάτας", "ΣΊΣΥΦΟΣ", "ς σ Σ",
        "صورة قطة", "שלום", "一张猫的照片", "狗", "猫の写真", "カタカナ ひらがな", "ｶﾀｶﾅ", "고양이 사진",
        "한국어", "ภาษาไทย", "हिन्दी", "ქართული", "Հայերեն", "𝐛𝐨𝐥𝐝 𝑖𝑡𝑎𝑙𝑖𝑐", "Ｆｕｌｌｗｉｄｔｈ ＣＡＴ",
        "ｆｕｌｌ１２３", "mixed 中文 and English", "a photo of a 猫.",
        # emoji
        "😀", "a photo of a 🐱", "🐶🐱🐭", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷 🇯🇵 🇺🇸", "❤️", "❤", "✨ sparkle ✨",
        "🧑🏿‍🚀 astronaut", "🤷‍♀️", "keycap 1️⃣", "☕ coffee", "🚀🚀🚀🚀🚀",
        # quotes, dashes, ligatures
        "“curly double”", "‘curly single’", "„low“ «guillemets» ‹single›", "em—dash en–dash", "don’t",
        "it′s prime", "ellipsis…", "bullet • point", "·middle·dot·",
        # mixed case
        "A PHOTO OF A CAT.", "a PhOtO oF a CaT.", "iPhone", "McDonald's", "CamelCaseWord", "XMLHttpRequest",
        "NASA", "eBay", "Faces_easy", "car_side",
        # URLs and e-mails
        "https://example.com/path?q=cat&x=1#frag", "http://www.example.org", "www.openai.com",
        "ftp://files.example.net/a_b-c.tar.gz", "user@example.com", "first.last+tag@sub.example.co.uk",
        "mailto:someone@example.com", "C:\\Users\\name\\photo.jpg", "/usr/local/bin/edgeclip",
        "file_name_with_underscores.jpeg",
        # mojibake
        "cafÃ©", "naÃ¯ve", "donâ€™t", "â€œquotedâ€\x9d", "Ã¼ber", "Ð¿Ñ€Ð¸Ð²ÐµÑ‚", "æ—¥æœ¬èªž", "Ã¢â‚¬â„¢",
        # control characters
        "bell\x07char", "null\x00char", "esc\x1b[31mred\x1b[0m", "del\x7fchar", "\ufeffbom start",
        "rtl \u202eoverride", "combining a\u0301\u0302\u0303", "variation \ufe0f selector",
        # special tokens spelled out
        "<|startoftext|>", "<|endoftext|>", "a <|endoftext|> b", "<|STARTOFTEXT|>", "<|endoftext|><|endoftext|>",
    ]
    # very long texts (> 77 tokens): truncation must keep EOT last
    out.append(" ".join(tp.format("cat") for tp in t[:20]))
    out.append(" ".join(t).replace("{}", "dog"))
    out.append("a" * 500)
    out.append("supercalifragilisticexpialidocious " * 20)
    out.append(" ".join(str(i) for i in range(100)))
    out.append("🐱" * 80)
    out.append("猫" * 120)
    out.append("word " * 75)
    out.append("word " * 76)
    out.append("word " * 77)
    out.append(", ".join(CIFAR100))
    return out


def token_corpus() -> list[str]:
    t = C.read_templates()
    md = C.open_clip_metadata()
    names: list[str] = []
    names += [C.class_text(c) for c in C.cifar10_classes()]
    names += [C.class_text(c) for c in CIFAR100]
    names += [C.class_text(c) for c in C.caltech_classes()]
    names += list(md.IMAGENET_CLASSNAMES)[::3]  # 334 ImageNet names (open_clip's cleaned list)
    corpus: list[str] = []
    for i, n in enumerate(names):
        corpus.append(n)
        for j in range(3):
            corpus.append(t[(i * 3 + j * 29) % len(t)].format(n))
    corpus += hard_cases()
    seen, uniq = set(), []
    for s in corpus:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    return uniq


def hf_tokenizer_agreement(hf_dir: Path, corpus: list[str], ref: list[list[int]]) -> dict:
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    mism = []
    for text, ids in zip(corpus, ref):
        enc = tok.encode(text).ids
        if len(enc) > C.CONTEXT_LENGTH:
            enc = enc[:C.CONTEXT_LENGTH]
            enc[-1] = C.EOT_ID
        enc = enc + [0] * (C.CONTEXT_LENGTH - len(enc))
        if enc != ids:
            mism.append(text)
    return {"n": len(corpus), "match": len(corpus) - len(mism),
            "match_rate": (len(corpus) - len(mism)) / len(corpus), "mismatched_texts": mism}


def pick_pixel_images(images: list[str], info: dict) -> list[str]:
    """12 varied photos for exact-pixel fixtures."""
    want = [
        "photos/skimage-0.25.2-wheel/camera.png",         # greyscale PNG (L)
        "photos/skimage-0.25.2-wheel/horse.png",          # PNG with alpha (RGBA)
        "photos/skimage-0.25.2-wheel/retina.jpg",         # big (1411x1411)
        "photos/darknet-deb/kite.jpg",                    # big landscape 1352x900
        "photos/darknet-deb/scream.jpg",                  # portrait 352x448
        "photos/skimage-0.25.2-wheel/chelsea.png",        # RGB PNG landscape
        "photos/skimage-0.25.2-wheel/coins.png",          # greyscale, odd size 384x303
        "photos/darknet-deb/giraffe.jpg",                 # square 500x500
    ]
    want = [w for w in want if w in info]
    grey_caltech = [p for p in images if p.startswith("caltech101") and info[p]["mode"] != "RGB"]
    want += grey_caltech[:1]
    exif = [p for p in images if info[p].get("exif_orientation", 1) not in (None, 1)]
    want += exif[:1]
    cifar = [p for p in images if p.startswith("cifar10")]
    want += [cifar[0], cifar[len(cifar) // 2]]
    rgb_caltech = [p for p in images if p.startswith("caltech101") and info[p]["mode"] == "RGB"]
    for p in rgb_caltech:
        if len(want) >= 12:
            break
        if p not in want:
            want.append(p)
    return want[:12]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="clip-vit-b-32-seeded")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    home = C.edgeclip_home()
    bundle = home / args.name
    out = home / "fixtures" / args.name
    (out / "pixels").mkdir(parents=True, exist_ok=True)
    (out / ".stamp").unlink(missing_ok=True)
    if not C.DATASETS.is_dir():
        raise SystemExit(f"datasets not found at {C.DATASETS} (set EDGECLIP_DATASETS)")

    import ftfy
    import onnx
    import onnxruntime
    import PIL
    import tokenizers
    import torch
    import transformers

    # ---------------- tokens ----------------
    templates = C.read_templates()
    oc_templates = [f("{}") for f in C.open_clip_metadata().OPENAI_IMAGENET_TEMPLATES]
    assert templates == oc_templates and len(templates) == 80, "models/clip_templates.txt != OpenAI's 80 templates"
    corpus = token_corpus()
    log(f"tokenising {len(corpus)} strings with OpenAI simple_tokenizer (ftfy {ftfy.__version__})")
    ref = [C.clip_tokenize(s) for s in corpus]
    for ids in ref:
        # (texts spelling out "<|endoftext|>" make simple_tokenizer emit 49407 mid-sequence too)
        assert len(ids) == 77 and ids[0] == C.SOT_ID
        last = max(i for i, v in enumerate(ids) if v != 0)
        assert ids[last] == C.EOT_ID
    with open(out / "tokens.jsonl", "w", encoding="utf-8") as f:
        for s, ids in zip(corpus, ref):
            f.write(json.dumps({"text": s, "ids": ids}, ensure_ascii=False) + "\n")
    n_trunc = sum(1 for ids in ref if ids[-1] == C.EOT_ID)
    hf_dir = home / f"{args.name}-hf"
    tok_agree = hf_tokenizer_agreement(hf_dir, corpus, ref)
    log(f"tokens.jsonl: {len(corpus)} strings ({n_trunc} truncated); {hf_dir.name}/tokenizer.json agrees on "
        f"{tok_agree['match']}/{tok_agree['n']} ({100 * tok_agree['match_rate']:.2f} %)")
    for m in tok_agree["mismatched_texts"]:
        log(f"  tokenizer.json differs on: {m!r}")

    # ---------------- embeddings (cached by export_clip.py when the ONNX files match) ----------------
    from PIL import Image
    txt = {k: C.ort_session(bundle / C.ONNX_FILES[("textual", k)], args.threads) for k in ("fp32", "int8")}
    emb = C.load_embeddings(bundle)
    if emb is None:
        log("embedding the fixture set with onnxruntime (no valid embeddings.npz cache)")
        emb = C.embed_fixture_set(bundle, args.threads, log=log)
        C.save_embeddings(bundle, emb)
    else:
        log("using the bundle's embeddings.npz (same ONNX sha256, same image/prompt selection)")
    images, prompts = emb["images"], emb["prompts"]

    # ---------------- images ----------------
    info: dict[str, dict] = {}
    tensors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with open(out / "images.jsonl", "w") as f:
        for n, rel in enumerate(images):
            x, crop, mode, (w, h) = C.preprocess(C.DATASETS / rel)
            with Image.open(C.DATASETS / rel) as im:
                orient = im.getexif().get(0x0112)
            info[rel] = {"mode": mode, "exif_orientation": orient}
            tensors[rel] = (x, crop)
            rec = {"path": rel, "width": w, "height": h, "mode": mode,
                   "fp32": [float(v) for v in emb["img_fp32"][n]], "int8": [float(v) for v in emb["img_int8"][n]]}
            f.write(json.dumps(rec) + "\n")
    log(f"images.jsonl: {len(images)} images; modes "
        f"{dict(sorted({m: sum(1 for i in info.values() if i['mode'] == m) for m in {i['mode'] for i in info.values()}}.items()))}")
    # spot-check the cache against a fresh run
    vis = {k: C.ort_session(bundle / C.ONNX_FILES[("visual", k)], args.threads) for k in ("fp32", "int8")}
    for n in (0, len(images) // 2, len(images) - 1):
        for k, sess in vis.items():
            e = C.l2n(sess.run(None, {"pixel_values": tensors[images[n]][0]})[0][0])
            assert float(e @ emb[f"img_{k}"][n]) > 0.99999, f"cached {k} embedding of {images[n]} is stale"

    chosen = pick_pixel_images(images, info)
    with open(out / "pixels.jsonl", "w") as f:
        for i, rel in enumerate(chosen):
            x, crop = tensors[rel]
            x.astype("<f4").tofile(out / "pixels" / f"{i}.f32")
            crop.astype(np.uint8).tofile(out / "pixels" / f"{i}.rgb")
            f.write(json.dumps({"path": rel, "file": f"{i}.f32", "rgb": f"{i}.rgb",
                                "mode": info[rel]["mode"], "exif_orientation": info[rel]["exif_orientation"]}) + "\n")
    # No dataset photo carries a non-trivial EXIF orientation, so synthesise some (lossless PNG
    # with an eXIf chunk, written into the fixtures dir, never the repo): the stored pixels are the
    # upright photo transformed by the inverse of what ImageOps.exif_transpose applies, so after
    # honouring the tag the crop must equal the upright photo's crop exactly.
    src = "photos/skimage-0.25.2-wheel/chelsea.png"
    (out / "exif").mkdir(exist_ok=True)
    T = Image.Transpose
    inverse = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 6: T.ROTATE_90, 8: T.ROTATE_270}
    n_exif = 0
    if src in tensors:
        upright = C.load_rgb(C.DATASETS / src)[0]
        with open(out / "pixels.jsonl", "a") as f:
            for orient, tr in inverse.items():
                i = len(chosen) + n_exif
                fname = f"exif/chelsea-orientation-{orient}.png"
                stored = upright.transpose(tr)
                exif = Image.Exif()
                exif[0x0112] = orient
                stored.save(out / fname, exif=exif.tobytes())
                x, crop, mode, _ = C.preprocess(out / fname)
                assert np.array_equal(crop, tensors[src][1]), f"EXIF orientation {orient} not undone"
                x.astype("<f4").tofile(out / "pixels" / f"{i}.f32")
                crop.astype(np.uint8).tofile(out / "pixels" / f"{i}.rgb")
                f.write(json.dumps({"path": src, "fixture_file": fname, "file": f"{i}.f32", "rgb": f"{i}.rgb",
                                    "mode": mode, "exif_orientation": orient}) + "\n")
                n_exif += 1
    log(f"pixels/: {len(chosen)} dataset photos + {n_exif} synthetic EXIF-rotated PNGs (exif/)")

    # ---------------- texts ----------------
    with open(out / "texts.jsonl", "w", encoding="utf-8") as f:
        for n, p in enumerate(prompts):
            rec = {"text": p, "ids": C.clip_tokenize(p),
                   "fp32": [float(v) for v in emb["txt_fp32"][n]], "int8": [float(v) for v in emb["txt_int8"][n]]}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    log(f"texts.jsonl: {len(prompts)} prompts")

    # ---------------- causality / pooling checks ----------------
    causal = {}
    base = C.clip_tokenize("a photo of a cat.")
    eot = base.index(C.EOT_ID)
    ids_a = np.asarray([base], dtype=np.int64)
    ids_b = ids_a.copy()
    ids_b[0, eot + 1] = 1234          # a padding slot after EOT
    ids_c = ids_a.copy()
    ids_c[0, eot + 1:] = np.arange(eot + 1, 77) * 97 % 49405  # every padding slot, ids < EOT
    ids_d = ids_a.copy()
    ids_d[0, eot - 2] = 1234          # a real token before EOT: must change the embedding
    for k, s in txt.items():
        ea, eb, ec, ed = (C.l2n(s.run(None, {"input_ids": v})[0][0]) for v in (ids_a, ids_b, ids_c, ids_d))
        causal[k] = {"max_abs_diff_one_pad": float(np.abs(ea - eb).max()),
                     "max_abs_diff_all_pads": float(np.abs(ea - ec).max()),
                     "cos_all_pads": float(ea @ ec), "cos_token_before_eot_changed": float(ea @ ed)}
        log(f"causality {k}: {causal[k]}")
        assert causal[k]["cos_token_before_eot_changed"] < 0.9999, "changing a real token did not change the embedding"
    # fp32: the causal mask must make tokens after EOT invisible to the pooled EOT position.
    assert causal["fp32"]["max_abs_diff_one_pad"] < 1e-5 and causal["fp32"]["max_abs_diff_all_pads"] < 1e-5, \
        "text tower is not causal: padding after EOT changed the fp32 embedding"
    # int8: DynamicQuantizeLinear derives one activation scale per tensor from ALL 77 positions,
    # so padding content can nudge the int8 embedding slightly (it cannot be exactly invariant).
    assert causal["int8"]["cos_all_pads"] > 0.95

    # ---------------- fidelity / diversity ----------------
    fid = C.fidelity(emb)
    off_max, off_mean = fid["fp32_image_pairwise_cos_max"], fid["fp32_image_pairwise_cos_mean"]
    assert off_max < 0.999 and off_mean < 0.98, "degenerate image embeddings"
    manifest_fid = json.loads((bundle / "fidelity.json").read_text())
    for k in ("visual_cos_min", "visual_cos_mean", "textual_cos_min", "textual_cos_mean", "top1_agreement"):
        if abs(manifest_fid[k] - fid[k]) > 1e-4:
            log(f"warning: {k} = {fid[k]:.6f} here but {manifest_fid[k]:.6f} in the bundle's manifest")
    print("fidelity (int8 vs fp32):")
    print(f"  visual  cos min {fid['visual_cos_min']:.5f}  mean {fid['visual_cos_mean']:.5f}  ({len(images)} photos)")
    print(f"  textual cos min {fid['textual_cos_min']:.5f}  mean {fid['textual_cos_mean']:.5f}  ({len(prompts)} prompts)")
    print(f"  top-1 agreement (CIFAR-10 'a photo of a {{}}.', all-int8 vs all-fp32): {fid['top1_agreement']:.4f}")
    print(f"  fp32 image-image cos: mean {off_mean:.4f} min {fid['fp32_image_pairwise_cos_min']:.4f} max {off_max:.4f}")
    print(f"  fp32 text-text cos: mean {fid['fp32_text_pairwise_cos_mean']:.4f} max {fid['fp32_text_pairwise_cos_max']:.4f}")

    import tomllib
    manifest = tomllib.loads((bundle / "manifest.toml").read_text())
    meta = {
        "name": args.name,
        "export": json.loads((bundle / "export.json").read_text()) if (bundle / "export.json").exists() else None,
        "description": manifest.get("description"),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                     "pillow": PIL.__version__, "ftfy": ftfy.__version__},
        "sha256": {f"{t}.{v}": manifest[t][v]["sha256"] for t in ("visual", "textual") for v in ("fp32", "int8")},
        "fidelity": fid,
        "causality": causal,
        "tokenizer_json_agreement": tok_agree,
        "counts": {"tokens": len(corpus), "images": len(images), "pixels": len(chosen) + n_exif,
                   "texts": len(prompts)},
        "preprocess": "PIL: open, ImageOps.exif_transpose, convert('RGB'), resize shortest side to 224 "
                      "(Image.BICUBIC, long side int(224*long/short)), centre crop 224 at "
                      "top=int(round((h-224)/2)), left=int(round((w-224)/2)), f32 x/255, (x-mean)/std, CHW",
        "datasets": str(C.DATASETS),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log(f"done: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
