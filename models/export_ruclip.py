"""Export a ruCLIP model (the `ruclip` package's `CLIP` and `RuCLIPProcessor`) to an edgeclip
bundle, with the reference fixtures the runtime is tested against.

    export_ruclip.py [--config tiny|base] [--seed N]     seeded weights (default: tiny, seed 0)
    export_ruclip.py --checkpoint DIR                    a ruclip folder (bpe.model, config.json,
                                                         pytorch_model.bin)

What makes ruCLIP different from CLIP, and what the bundle records for the runtime:
  * text: a YouTokenToMe BPE (`bpe.model`) on Python-lowercased text, `<BOS>` 2 + at most 75
    tokens + `<EOS>` 3, padded with 0 to 77; the text tower pools the `<EOS>` position (the
    graph finds it from input_ids alone: the first id equal to 3). The yttm model is converted
    to a Hugging Face `tokenizer.json` (see `yttm_to_tokenizer_json`) and checked id for id
    against `RuCLIPProcessor.encode_text`;
  * preprocessing: `RandomResizedCrop(size, scale=(1, 1), ratio=(1, 1))` + bilinear. For a
    photo whose sides differ by 2 px or more, torchvision's get_params never finds a fitting
    square (round(sqrt(w*h)) > the short side), so it falls back to the centred square of the
    short side, offsets `(long - short) // 2`, resized with PIL's bilinear: the runtime's
    `resize = "center-square"`. A square photo is taken whole. Sides differing by exactly
    1 px fit the random branch: the crop is the short side's square at offset
    randint(0, 2), i.e. 0 or 1 at random along the long side (center-square takes 0);
  * scoring: CLIP's softmax with exp(logit_scale).

No ruCLIP weights or bpe.model can be downloaded here, so the seeded bundle gets a YouTokenToMe
BPE trained here on models/corpus/russian.txt + multilingual.txt (lowercased, as the processor
lowercases) and the real architecture with seeded random weights.

Outputs: $EDGECLIP_HOME/<name>/ (manifest.toml, visual/textual .onnx + .int8.onnx,
tokenizer.json, bpe.model) and $EDGECLIP_HOME/fixtures/<name>/ (images.jsonl, texts.jsonl,
scores.jsonl, meta.json).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import edgeclip_common as C
from export_clip import toml_str
from export_siglip import fixture_images
from family_common import (corpus, export_towers, fidelity_notes, fresh_work_dir, jsonl, prepare_dirs, tower_toml,
                           write_toml)

CONTEXT = 77
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIALS = {PAD_ID: "<PAD>", UNK_ID: "<UNK>", BOS_ID: "<BOS>", EOS_ID: "<EOS>"}
T0 = time.time()

SEEDED = {
    # ruclip-vit-base-patch32-224's config.json.
    "base": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                 vision_patch_size=32, context_length=CONTEXT, vocab_size=49408,
                 transformer_width=512, transformer_heads=8, transformer_layers=12),
    # The same graph shrunk for fast tests (vision heads = width // 64, as CLIP computes them);
    # the vocabulary is the trained tokenizer's.
    "tiny": dict(embed_dim=64, image_resolution=224, vision_layers=2, vision_width=128,
                 vision_patch_size=32, context_length=CONTEXT, vocab_size=None,
                 transformer_width=64, transformer_heads=2, transformer_layers=2),
}

# YouTokenToMe's word separators (bpe.cpp `is_space`: C `isspace` below 256, which in the C
# and UTF-8 locales is these six, plus U+2581 itself). Not Unicode white space: U+00A0 or
# U+3000 are ordinary characters of a word to yttm.
YTTM_SPACE = "\t\n\x0b\x0c\r \u2581"
# Python's str.lower maps a capital sigma to final ς when it follows a cased letter (skipping
# case-ignorable characters) and no cased letter follows (skipping those again); the
# tokenizers crate lowercases character by character (always σ). These Replace normalizers
# apply the final-sigma rule first. Its look-behind is variable-length, which fancy-regex
# (the runtime's regex engine) cannot do, so one normaliser per count of case-ignorable
# characters in between, up to SIGMA_GAP.
SIGMA_GAP = 7
_CASED = r"[\p{Cased}&&\P{Case_Ignorable}]"


def log(msg: str) -> None:
    print(f"[export_ruclip {time.time() - T0:6.1f}s] {msg}", flush=True)


def ruclip_modules():
    """ruclip's model.py and processor.py, loaded by path: the package's __init__ imports
    `cached_download`, which huggingface_hub no longer has."""
    spec = importlib.util.find_spec("ruclip")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("ruclip is not installed (models/requirements-families.txt)")
    root = Path(spec.submodule_search_locations[0])
    mods = []
    for name in ("model", "processor"):
        s = importlib.util.spec_from_file_location(f"ruclip_{name}", root / f"{name}.py")
        m = importlib.util.module_from_spec(s)
        s.loader.exec_module(m)
        mods.append(m)
    return mods


def russian_corpus() -> list[str]:
    text = (C.MODELS_DIR / "corpus" / "russian.txt").read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line and not line.startswith("#")]


def train_yttm(dst: Path, vocab_size: int, work: Path) -> None:
    import youtokentome as yttm
    data = work / "yttm-corpus.txt"
    # Lowercased: RuCLIPProcessor lowercases every text before yttm sees it.
    data.write_text("\n".join(t.lower() for t in russian_corpus() + corpus()) + "\n", encoding="utf-8")
    yttm.BPE.train(data=str(data), model=str(dst), vocab_size=vocab_size, n_threads=1,
                   pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID)


def yttm_to_tokenizer_json(bpe_model: Path) -> dict:
    """tokenizer.json equal to YouTokenToMe's encoding after Python's lowercasing.

    yttm's model file: `n m`, n lines `codepoint id` (its characters, `▁` among them), m merge
    rules `x y z` (ids x and y merge into z, in priority order) and `unk pad bos eos`. Its
    encoder strips trailing separators, splits on runs of them, starts each word with `▁`,
    turns each run of characters outside its alphabet into one <UNK>, and applies the rules
    lowest rule first, leftmost first among equals — what a `tokenizers` BPE model does with
    the rules as merges in order, `fuse_unk` and no dropout. A BPE model maps strings to ids,
    so this holds only while no two ids spell the same string (checked)."""
    lines = bpe_model.read_text(encoding="utf-8").split("\n")
    n, m = map(int, lines[0].split())
    spell: dict[int, str] = {}
    for line in lines[1:1 + n]:
        cp, i = map(int, line.split())
        spell[i] = chr(cp)
    merges = []
    for line in lines[1 + n:1 + n + m]:
        x, y, z = map(int, line.split())
        spell[z] = spell[x] + spell[y]
        merges.append([spell[x], spell[y]])
    unk, pad, bos, eos = map(int, lines[1 + n + m].split())
    if (pad, unk, bos, eos) != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        raise SystemExit(f"{bpe_model}: special ids pad {pad} unk {unk} bos {bos} eos {eos}; "
                         "RuCLIPProcessor hard-codes 0, 1, 2, 3")
    spell.update(SPECIALS)
    if sorted(spell) != list(range(len(spell))):
        raise SystemExit(f"{bpe_model}: ids are not 0..{len(spell) - 1}")
    vocab: dict[str, int] = {}
    for i in sorted(spell):
        if spell[i] in vocab:
            raise SystemExit(f"{bpe_model}: ids {vocab[spell[i]]} and {i} both spell {spell[i]!r}; "
                             "a tokenizer.json BPE cannot tell them apart, so ids would differ")
        vocab[spell[i]] = i
    ahead = r"(?!\p{Case_Ignorable}*" + _CASED + ")"
    sigma = [{"type": "Replace", "content": "\u03c2",
              "pattern": {"Regex": "(?<=" + _CASED + r"\p{Case_Ignorable}" * k + ")\u03a3" + ahead}}
             for k in range(SIGMA_GAP + 1)]
    special = lambda name: {"SpecialToken": {"id": name, "type_id": 0}}  # noqa: E731
    seq = lambda name: {"Sequence": {"id": name, "type_id": 0}}  # noqa: E731
    return {
        "version": "1.0", "truncation": None, "padding": None,
        # No added tokens: the specials are only ever produced by the template, never
        # matched in a text (RuCLIPProcessor would lowercase and spell out "<UNK>").
        "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": sigma + [{"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "[" + YTTM_SPACE + "]+"}, "behavior": "Removed",
             "invert": False},
            {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": False}]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("<BOS>"), seq("A"), special("<EOS>")],
            "pair": [special("<BOS>"), seq("A"), seq("B"), special("<EOS>")],
            "special_tokens": {t: {"id": t, "ids": [i], "tokens": [t]}
                               for i, t in ((BOS_ID, "<BOS>"), (EOS_ID, "<EOS>"))}},
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<UNK>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": merges},
    }


def edge_cases() -> list[str]:
    sigma_gap = "Α" + "'" * SIGMA_GAP + "Σ"
    return ["", " ", "   ", "кот", "  кот   и  пёс  ", " ведущий пробел", "хвостовой пробел ",
            "таб\tи\nперевод\x0bстроки\x0c\rконец", "неразрывный\u00a0пробел", "широкий\u3000пробел",
            "a\u0085b", "a\x1cb", "кот\u2581пёс", "\u2581кот\u2581", "ЁЖИК ЁЛКА Ёж ёж ЕЁ",
            "ΣΑΣ ΟΔΟΣ ΣΟΦΙΑ Σ ΑΣ. ΑΣ'Σ", "ΑΣ\u0301", "Α\u0301Σ", "Α'Σ", "ΑΣ'Α", "Α''Σ", sigma_gap,
            "İstanbul ǅ ß ẞ", "KELVIN \u212a", "Ⅻ ㈱ ｶﾀｶﾅ ﬁ", "☃☃ a☃b ☃ ☃x☃", "<PAD> <UNK> <BOS> <EOS> <unk>",
            "日本語のテキスト、中文文本。", "🙂" * 10, "кот " * 100, "x" * 600, "слово" * 60]


def check_tokenizer(proc, fast, texts: list[str]) -> dict:
    bad = [t for t in texts if fast.encode(t).ids != proc.encode_text(t).tolist()]
    if bad:
        raise SystemExit(f"tokenizer.json differs from RuCLIPProcessor on {len(bad)} texts, e.g. {bad[:3]!r}")
    return {"texts": len(texts), "equal": len(texts)}


def build_model(args, cfg: dict, CLIP):
    import torch
    if args.checkpoint:
        return CLIP.from_pretrained(str(args.checkpoint)).eval()
    torch.manual_seed(args.seed)
    # ruclip's own initialisation (CLIP's rule for the text tower; logit_scale = log(1 / 0.07)).
    model = CLIP(**cfg, eos_id=EOS_ID).eval()
    seeded_visual_blocks(model.visual.transformer, args.seed)
    # Random weights have no trained scale; CLIP-style training clamps it at 100 and trained
    # models end there. At 1 / 0.07 the seeded model's softmax over 10 prompts stays below 0.24
    # on every fixture photo, too flat for the scoring test to tell a wrong scale; at 100 its
    # largest probability is 0.96.
    with torch.no_grad():
        model.logit_scale.fill_(float(np.log(100.0)))
    return model


def seeded_visual_blocks(t, seed: int, qk_gain: float = 2.0, residual_gain: float = 2.0) -> None:
    """ruclip's `initialize_parameters` draws only the text blocks; the image blocks keep
    PyTorch's defaults, with which every photo embeds alike (40 fixture photos: image-image
    cos mean 0.944, so a wrong crop would still pass cos 0.9999). Redrawn with OpenAI CLIP's
    rule and export_clip.py's gains (q/k and residual outputs x2, clip-tiny-seeded's):
    measured on the same photos, mean 0.579 (CLIP's rule alone: 0.885)."""
    import torch
    g = torch.Generator().manual_seed(seed + 1)
    w, layers = t.width, t.layers
    proj_std = w ** -0.5 * (2 * layers) ** -0.5
    with torch.no_grad():
        for b in t.resblocks:
            b.attn.in_proj_weight.copy_(torch.randn(3 * w, w, generator=g) * w ** -0.5)
            b.attn.in_proj_weight[:2 * w] *= qk_gain
            b.attn.out_proj.weight.copy_(torch.randn(w, w, generator=g) * proj_std * residual_gain)
            b.mlp.c_fc.weight.copy_(torch.randn(4 * w, w, generator=g) * (2 * w) ** -0.5)
            b.mlp.c_proj.weight.copy_(torch.randn(w, 4 * w, generator=g) * proj_std * residual_gain)


def wrappers(model):
    import torch

    class Visual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m.encode_image(pixel_values)

    class Textual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            # CLIP.encode_text, except the pooling: it indexes with torch.where(ids == eos),
            # which exports as NonZero with a data-dependent shape. Its own precondition is
            # one <EOS> per row (more would give it more rows than texts), and then the sum
            # over positions masked by ids == eos picks the same vector. (argmax + gather
            # was tried first: tract 0.23.9 refuses ArgMax of the cast mask, "expected I64
            # got TDim".)
            m = self.m
            x = m.token_embedding(input_ids) + m.positional_embedding
            x = m.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
            x = m.ln_final(x)
            at_eos = (input_ids == m.eos_id).to(x.dtype)[:, :, None]
            return (x * at_eos).sum(dim=1) @ m.text_projection

    return Visual(model).eval(), Textual(model).eval()


def center_square(rgb, size: int):
    """What the runtime's "center-square" does, for the check that the processor's random crop
    took its fallback: the centred square, floored offsets, PIL bilinear to `size`."""
    from PIL import Image
    w, h = rgb.size
    s = min(w, h)
    x, y = (w - s) // 2, (h - s) // 2
    return rgb.crop((x, y, x + s, y + s)).resize((size, size), Image.BILINEAR)


def near_square_offsets(transform, size: int, seed: int) -> dict:
    """Which offset the processor's crop takes on a 301 x 300 gradient, 40 seeded draws:
    documents the 1-px case where it is random."""
    import torch
    from PIL import Image
    a = np.zeros((300, 301, 3), dtype=np.uint8)
    a[..., 0] = (np.arange(301) * 255 // 300)[None, :]
    img = Image.fromarray(a)
    to_tensor, normalise = transform.transforms[-2:]
    ref = {o: normalise(to_tensor(img.crop((o, 0, o + 300, 300)).resize((size, size), Image.BILINEAR)))
           for o in (0, 1)}
    torch.manual_seed(seed)
    seen = {0: 0, 1: 0, "other": 0}
    for _ in range(40):
        out = transform(img)
        hit = [o for o, r in ref.items() if torch.equal(out, r)]
        seen[hit[0] if hit else "other"] += 1
    return {str(k): v for k, v in seen.items()}


def write_manifest(bundle: Path, name: str, description: str, architecture: str, dim: int,
                   scale: float, pp: dict, fid: dict) -> None:
    text = f'''format = 1
name = {toml_str(name)}
architecture = {toml_str(architecture)}
description = {toml_str(description)}
family = "ruclip"
multilingual = false         # Russian
embedding_dim = {dim}
scoring = "softmax"
logit_scale = {scale:.6f}    # exp(model.logit_scale)
pooling = "eos"              # text: the <EOS> (id 3) position, found inside the graph; informational

[preprocess]
image_size = {pp["image_size"]}
resize = "center-square"     # RandomResizedCrop(scale=1, ratio=1)'s fallback: centred square, then resize
resize_to = {pp["image_size"]}
interpolation = "bilinear"
mean = {json.dumps(pp["mean"])}
std = {json.dumps(pp["std"])}

[tokenizer]
kind = "hf-json"
file = "tokenizer.json"      # YouTokenToMe BPE (bpe.model) converted; <BOS> 2 ... <EOS> 3
context_length = {CONTEXT}
pad_id = {PAD_ID}

'''
    text += "\n" + tower_toml(bundle, "visual", fidelity_notes(fid, "visual", f"the {fid['images']} fixture photos"))
    text += "\n" + tower_toml(bundle, "textual", fidelity_notes(fid, "textual", f"the {fid['texts']} corpus texts"))
    write_toml(bundle / "manifest.toml", text)


# CIFAR-10 in Russian, for the model's own softmax over prompts.
RU_CIFAR = {"airplane": "самолёта", "automobile": "автомобиля", "bird": "птицы", "cat": "кошки",
            "deer": "оленя", "dog": "собаки", "frog": "лягушки", "horse": "лошади", "ship": "корабля",
            "truck": "грузовика"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="ruclip folder (bpe.model, config.json, pytorch_model.bin)")
    src.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", choices=sorted(SEEDED), default=None)
    ap.add_argument("--vocab", type=int, default=3000,
                    help="YouTokenToMe vocabulary trained for seeded bundles (the corpus allows ~3250)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.checkpoint and args.config:
        ap.error("--config chooses a seeded architecture; a --checkpoint brings its own")
    args.config = args.config or "tiny"

    import torch
    from tokenizers import Tokenizer
    if args.threads:
        torch.set_num_threads(args.threads)
    model_mod, proc_mod = ruclip_modules()
    name = args.name or (args.checkpoint.name if args.checkpoint else f"ruclip-{args.config}-seeded")
    bundle, fixtures = prepare_dirs(name)
    work = fresh_work_dir(bundle)

    bpe = bundle / "bpe.model"
    if args.checkpoint:
        shutil.copyfile(args.checkpoint / "bpe.model", bpe)
        proc = proc_mod.RuCLIPProcessor.from_pretrained(str(args.checkpoint))
        cfg = json.loads((args.checkpoint / "config.json").read_text())
    else:
        log(f"training a YouTokenToMe BPE ({args.vocab} ids) on models/corpus (russian + multilingual)")
        train_yttm(bpe, args.vocab, work)
        cfg = dict(SEEDED[args.config])
        proc = proc_mod.RuCLIPProcessor(str(bpe), image_size=cfg["image_resolution"], text_seq_length=CONTEXT)
    if proc.text_seq_length != CONTEXT:
        raise SystemExit(f"context length {proc.text_seq_length}: the exporter assumes {CONTEXT}")
    (bundle / "tokenizer.json").write_text(json.dumps(yttm_to_tokenizer_json(bpe), ensure_ascii=False),
                                           encoding="utf-8")
    fast = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    # What the runtime configures (src/tokenizer/hf.rs): truncation and padding to the context.
    fast.enable_truncation(CONTEXT)
    fast.enable_padding(length=CONTEXT, pad_id=PAD_ID, pad_token=SPECIALS[PAD_ID])
    text_cases = russian_corpus() + corpus() + edge_cases()
    tok = check_tokenizer(proc, fast, text_cases)
    n_ids = proc.tokenizer.vocab_size()
    log(f"tokenizer.json: {n_ids} ids, equal to RuCLIPProcessor on {tok['equal']} texts")

    if not args.checkpoint and cfg["vocab_size"] is None:
        cfg["vocab_size"] = n_ids
    model = build_model(args, cfg, model_mod.CLIP)
    if n_ids > model.vocab_size:
        raise SystemExit(f"tokenizer has {n_ids} ids, the model {model.vocab_size} embeddings")
    log(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    visual, textual = wrappers(model)
    size = proc.image_size
    px = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1234))
    ids = proc.encode_text("это фото кошки.")[None]
    with torch.no_grad():
        dim = visual(px).shape[-1]
        assert torch.allclose(textual(ids), model.encode_text(ids), atol=1e-5)
    log("exporting visual.onnx and textual.onnx (TorchScript exporter, opset 17)")
    sessions, _ = export_towers(visual, textual, px, ids, bundle, lambda p: C.ort_session(p, args.threads))

    log("reference fixtures: RuCLIPProcessor (seeded torch RNG) + ruclip CLIP fp32, onnxruntime int8")
    transform = proc.image_transform
    # RandomResizedCrop draws from torch's global RNG even when it falls back to the centre.
    torch.manual_seed(args.seed + 1000)
    images, pixel_values, fallback = [], {}, 0
    for rel in fixture_images():
        rgb, mode, (w, h) = C.load_rgb(C.DATASETS / rel)
        pv = transform(rgb)[None]
        pixel_values[rel] = pv
        # The runtime's center-square on the same photo gives the same tensor, bit for bit,
        # unless the sides differ by exactly 1 px (the random branch).
        to_tensor, normalise = transform.transforms[-2:]
        same = bool(torch.equal(pv[0], normalise(to_tensor(center_square(rgb, size)))))
        fallback += same
        if not same and abs(w - h) != 1:
            raise SystemExit(f"{rel}: RuCLIPProcessor's crop is not the centred square")
        with torch.no_grad():
            fp32 = model.encode_image(pv)[0].numpy()
        ort32 = sessions["visual.onnx"].run(None, {"pixel_values": pv.numpy()})[0][0]
        assert float(np.dot(C.l2n(ort32), C.l2n(fp32))) > 0.99999, rel
        int8 = sessions["visual.int8.onnx"].run(None, {"pixel_values": pv.numpy()})[0][0]
        images.append({"path": rel, "width": w, "height": h, "mode": mode, "center_square": same,
                       "fp32": fp32.tolist(), "int8": int8.tolist()})
    texts = []
    for t in text_cases:
        x = proc.encode_text(t)[None]
        with torch.no_grad():
            fp32 = model.encode_text(x)[0].numpy()   # the package's own pooling
        ort32 = sessions["textual.onnx"].run(None, {"input_ids": x.numpy()})[0][0]
        assert float(np.dot(C.l2n(ort32), C.l2n(fp32))) > 0.99999, t
        int8 = sessions["textual.int8.onnx"].run(None, {"input_ids": x.numpy()})[0][0]
        texts.append({"text": t, "ids": x[0].tolist(), "fp32": fp32.tolist(), "int8": int8.tolist()})

    # What the model itself says: CLIP.forward's logits_per_image through a softmax.
    labels = C.cifar10_classes()
    prompts = [f"это фото {RU_CIFAR[c]}." for c in labels]
    scale = float(model.logit_scale.detach().exp())
    scores = []
    with torch.no_grad():
        tok_ids = torch.stack([proc.encode_text(p) for p in prompts])
        for im in images:
            logits, _ = model(tok_ids, pixel_values[im["path"]])
            scores.append({"path": im["path"], "labels": labels, "prompts": prompts,
                           "probs": torch.softmax(logits[0], dim=-1).tolist()})

    img_cos = [float(np.dot(C.l2n(i["fp32"]), C.l2n(i["int8"]))) for i in images]
    txt_cos = [float(np.dot(C.l2n(t["fp32"]), C.l2n(t["int8"]))) for t in texts]
    fid = {"images": len(images), "texts": len(texts),
           "visual_cos_min": min(img_cos), "visual_cos_mean": float(np.mean(img_cos)),
           "textual_cos_min": min(txt_cos), "textual_cos_mean": float(np.mean(txt_cos))}
    pair = np.array([C.l2n(i["fp32"]) for i in images])
    off = (pair @ pair.T)[~np.eye(len(images), dtype=bool)]
    log("int8 fidelity " + json.dumps(fid) + f"; fp32 pairwise image cos max {off.max():.4f}; "
        f"mean {off.mean():.4f}; {fallback}/{len(images)} photos equal to center-square bit for bit")
    if off.max() > 0.999 or off.mean() > 0.9:
        raise SystemExit("image embeddings are degenerate (all nearly identical)")

    near = near_square_offsets(transform, size, args.seed)
    log(f"301 x 300 image, 40 seeded draws: crop offsets {near}")
    jsonl(fixtures / "images.jsonl", images)
    jsonl(fixtures / "texts.jsonl", texts)
    jsonl(fixtures / "scores.jsonl", scores)
    import tokenizers
    import torchvision
    import youtokentome
    meta = {"name": name, "family": "ruclip", "checkpoint": str(args.checkpoint) if args.checkpoint else None,
            "seed": None if args.checkpoint else args.seed, "config": None if args.checkpoint else args.config,
            "tokenizer": tok, "yttm_ids": n_ids, "fidelity": fid,
            "center_square_equal": fallback, "near_square_301x300_offsets": near,
            "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                         "tokenizers": tokenizers.__version__,
                         "youtokentome": getattr(youtokentome, "__version__", "1.0.6")}}
    (fixtures / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    description = (f"ruCLIP (Russian) exported from {args.checkpoint.name}" if args.checkpoint else
                   f"ruCLIP architecture (Russian texts; {args.config}: vision width {cfg['vision_width']}, "
                   f"{cfg['vision_layers']} layers, patch {cfg['vision_patch_size']} at {size} px; text width "
                   f"{cfg['transformer_width']}, {cfg['transformer_layers']} layers) with seeded random weights "
                   f"(seed {args.seed}) and a YouTokenToMe BPE trained on models/corpus: proves the runtime, "
                   "labels at random")
    architecture = (f"ruCLIP ViT-{args.config}/{cfg['vision_patch_size']}" if not args.checkpoint else
                    f"ruCLIP ViT/{cfg['vision_patch_size']}")
    write_manifest(bundle, name, description, architecture, dim, scale,
                   {"image_size": size, "mean": [float(x) for x in proc.mean], "std": [float(x) for x in proc.std]},
                   fid)
    shutil.rmtree(work)
    log(f"done: {bundle} and {fixtures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
