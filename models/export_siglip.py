"""Export a SigLIP model (transformers `SiglipModel`) to an edgeclip bundle, with the reference
fixtures the runtime is tested against.

    export_siglip.py [--config tiny|base] [--seed N]      seeded weights (default: tiny, seed 0)
    export_siglip.py --checkpoint DIR                     a Hugging Face SigLIP directory

What makes SigLIP different from CLIP, and what the bundle records for the runtime:
  * scoring: trained with a sigmoid loss, so each label is scored alone as
    sigmoid(scale * cos + bias) with the learned scale and bias (manifest `scoring = "sigmoid"`,
    `logit_scale`, `logit_bias`);
  * preprocessing: both sides resized straight to the input size (no crop), the image
    processor's resampling, mean = std = 0.5;
  * text: a SentencePiece (Unigram) tokenizer that lowercases, drops ASCII punctuation, appends
    `</s>` and pads with `</s>` to 64 tokens; the text tower takes no attention mask and pools
    the last position. The tokenizer is written as `tokenizer.json` (the `tokenizers` crate
    reads it) and checked id for id against transformers' slow, sentencepiece-backed
    `SiglipTokenizer` on models/corpus/multilingual.txt.

No SigLIP checkpoint or `spiece.model` can be downloaded here, so the seeded bundle gets a
SentencePiece model trained here on models/corpus/multilingual.txt (Russian, Portuguese,
Chinese, Arabic, emoji, long texts, ...). With `--checkpoint`, the checkpoint's own
`spiece.model` is used.

Outputs: $EDGECLIP_HOME/<name>/ (manifest.toml, visual/textual .onnx + .int8.onnx,
tokenizer.json, spiece.model) and $EDGECLIP_HOME/fixtures/<name>/ (tokens.jsonl, images.jsonl,
texts.jsonl, scores.jsonl, meta.json).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import string
import sys
import time
from pathlib import Path

import numpy as np

import edgeclip_common as C
from export_clip import toml_str
from family_common import (corpus, export_towers, fidelity_notes, jsonl, prepare_dirs, tower_toml,
                           train_spiece, write_toml)

CONTEXT = 64
T0 = time.time()

SEEDED = {
    # The real siglip-base-patch16-224 sizes (vocabulary: our trained tokenizer's).
    "base": dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                             num_attention_heads=12, patch_size=16, image_size=224),
                 text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, max_position_embeddings=CONTEXT)),
    # The same graph shrunk: width 64, 2 layers, for fast tests (and qemu).
    "tiny": dict(vision=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                             num_attention_heads=2, patch_size=16, image_size=224),
                 text=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=2, max_position_embeddings=CONTEXT)),
}


def log(msg: str) -> None:
    print(f"[export_siglip {time.time() - T0:6.1f}s] {msg}", flush=True)


def fast_tokenizer(slow):
    """tokenizer.json equal to `SiglipTokenizer`: its text canonicalisation (lowercase, ASCII
    punctuation removed, white-space runs to one space, stripped) as normalizers ahead of the
    SentencePiece model's own (NFKC) normalisation, U+2581 read as a space as the slow
    tokenizer does, and `</s>` appended."""
    from tokenizers import Regex, normalizers, processors
    from transformers.convert_slow_tokenizer import SpmConverter

    class SiglipConverter(SpmConverter):
        handle_byte_fallback = False

        def normalizer(self, proto):
            seq = [normalizers.Replace("\u2581", " "), normalizers.Lowercase(),
                   normalizers.Replace(Regex("[" + re.escape(string.punctuation) + "]"), ""),
                   normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
            charsmap = proto.normalizer_spec.precompiled_charsmap
            if charsmap:
                seq.append(normalizers.Precompiled(charsmap))
            return normalizers.Sequence(seq)

        def post_processor(self):
            eos = self.original_tokenizer.eos_token
            return processors.TemplateProcessing(
                single=f"$A {eos}", special_tokens=[(eos, self.original_tokenizer.eos_token_id)])

    return SiglipConverter(slow).converted()


def slow_ids(slow, text: str) -> list[int]:
    """What SigLIP's text tower is fed: padding="max_length" to 64 (with </s>), truncated."""
    return slow(text, padding="max_length", truncation=True, max_length=CONTEXT).input_ids


def check_tokenizer(slow, fast) -> dict:
    """Fast vs slow on the corpus and edge cases; returns the counts. Known difference: the
    literal strings `<unk>` and `</s>` inside a text (special tokens to both, but the slow
    tokenizer also drops the space after them); no label contains them."""
    cases = corpus() + ["", " ", "cat", "  leading and trailing  ", "\u2581underlined\u2581",
                        "a.b,c!d?e", "Ⅻ ㈱ ｶﾀｶﾅ ﬁ", "x" * 300, "İstanbul ǅ ß ΣΑΣ", "tab\tand\nnewline"]
    fast.enable_truncation(CONTEXT)
    fast.enable_padding(length=CONTEXT, pad_id=slow.pad_token_id, pad_token=slow.pad_token)
    bad = [t for t in cases if fast.encode(t).ids != slow_ids(slow, t)]
    if bad:
        raise SystemExit(f"tokenizer.json differs from SiglipTokenizer on {len(bad)} texts, e.g. {bad[:3]!r}")
    fast.no_truncation()
    fast.no_padding()
    return {"texts": len(cases), "equal": len(cases)}


def build_model(args, vocab_size: int):
    import torch
    from transformers import SiglipConfig, SiglipModel
    if args.checkpoint:
        return SiglipModel.from_pretrained(args.checkpoint).eval()
    sizes = SEEDED[args.config]
    config = SiglipConfig(text_config=dict(vocab_size=vocab_size, **sizes["text"]),
                          vision_config=dict(**sizes["vision"]))
    torch.manual_seed(args.seed)
    # transformers' own SigLIP initialisation, including logit_scale = log(10), bias = -10.
    return SiglipModel(config).eval()


def wrappers(model):
    import torch

    class Visual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m.get_image_features(pixel_values=pixel_values)

    class Textual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            # SigLIP was trained without an attention mask on </s>-padded text, pooling the
            # last position: exactly what the runtime feeds.
            return self.m.get_text_features(input_ids=input_ids)

    return Visual(model).eval(), Textual(model).eval()


def image_processor(args):
    from transformers import SiglipImageProcessor
    if args.checkpoint:
        return SiglipImageProcessor.from_pretrained(args.checkpoint)
    size = SEEDED[args.config]["vision"]["image_size"]
    return SiglipImageProcessor(size={"height": size, "width": size})


def preprocess_spec(proc) -> dict:
    from PIL import Image
    resample = {Image.BICUBIC: "bicubic", Image.BILINEAR: "bilinear"}.get(proc.resample)
    if resample is None:
        raise SystemExit(f"image processor resample {proc.resample}: the runtime has bicubic and bilinear")
    if not (proc.do_resize and proc.do_rescale and proc.do_normalize):
        raise SystemExit("expected resize + rescale + normalize")
    h, w = proc.size["height"], proc.size["width"]
    assert h == w, proc.size
    return {"image_size": h, "resize": "squash", "resize_to": h, "interpolation": resample,
            "mean": [float(x) for x in proc.image_mean], "std": [float(x) for x in proc.image_std]}


def fixture_images() -> list[str]:
    """Every photo in photos/ and the first Caltech-101 test image of 16 classes: all sizes,
    JPEG and PNG, greyscale included."""
    sel = [p for p in C.select_images(per_caltech_class=1, per_cifar_class=0)
           if p.startswith("photos/")]
    sel += [p for p in C.select_images(per_caltech_class=1, per_cifar_class=0)
            if p.startswith("caltech101/")][:16]
    return sel


def write_manifest(bundle: Path, name: str, description: str, architecture: str, dim: int,
                   scale: float, bias: float, pp: dict, fid: dict, multilingual: bool) -> None:
    text = f'''format = 1
name = {toml_str(name)}
architecture = {toml_str(architecture)}
description = {toml_str(description)}
family = "siglip"
multilingual = {"true" if multilingual else "false"}
embedding_dim = {dim}
scoring = "sigmoid"          # each label alone: sigmoid(logit_scale * cos + logit_bias)
logit_scale = {scale:.6f}    # exp(model.logit_scale)
logit_bias = {bias:.6f}      # model.logit_bias
pooling = "last"             # text pooling inside the graph (last position); informational

[preprocess]
image_size = {pp["image_size"]}
resize = "squash"            # both sides straight to image_size, no crop
resize_to = {pp["resize_to"]}
interpolation = "{pp["interpolation"]}"
mean = {json.dumps(pp["mean"])}
std = {json.dumps(pp["std"])}

[tokenizer]
kind = "hf-json"
file = "tokenizer.json"      # SentencePiece Unigram (spiece.model) as tokenizers reads it
context_length = {CONTEXT}
pad_id = 1                   # SigLIP pads with </s>

'''
    text += "\n" + tower_toml(bundle, "visual", fidelity_notes(fid, "visual", f"the {fid['images']} fixture photos"))
    text += "\n" + tower_toml(bundle, "textual", fidelity_notes(fid, "textual", f"the {fid['texts']} corpus texts"))
    write_toml(bundle / "manifest.toml", text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="Hugging Face SigLIP directory (config.json, weights, spiece.model)")
    src.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", choices=sorted(SEEDED), default=None)
    ap.add_argument("--vocab", type=int, default=800, help="SentencePiece vocabulary trained for seeded bundles")
    ap.add_argument("--name", default=None)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.checkpoint and args.config:
        ap.error("--config chooses a seeded architecture; a --checkpoint brings its own")
    args.config = args.config or "tiny"

    import torch
    from transformers import SiglipTokenizer
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.name or (args.checkpoint.name if args.checkpoint else f"siglip-{args.config}-seeded")
    bundle, fixtures = prepare_dirs(name)

    if args.checkpoint:
        shutil.copyfile(args.checkpoint / "spiece.model", bundle / "spiece.model")
    else:
        log(f"training a SentencePiece Unigram tokenizer ({args.vocab} pieces) on the corpus")
        # SigLIP's special pieces: <pad> 0, </s> 1, <unk> 2, no <s>.
        train_spiece(bundle, args.vocab, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    slow = SiglipTokenizer(str(bundle / "spiece.model"), model_max_length=CONTEXT)
    fast = fast_tokenizer(slow)
    tok = check_tokenizer(slow, fast)
    fast.save(str(bundle / "tokenizer.json"))
    log(f"tokenizer.json: {len(slow)} pieces, equal to SiglipTokenizer on {tok['equal']} texts")

    model = build_model(args, len(slow))
    vc = model.config.vision_config
    log(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    visual, textual = wrappers(model)
    proc = image_processor(args)
    pp = preprocess_spec(proc)
    px = torch.randn(1, 3, pp["image_size"], pp["image_size"], generator=torch.Generator().manual_seed(1234))
    ids = torch.tensor([slow_ids(slow, "a photo of a cat.")])
    with torch.no_grad():
        dim = visual(px).shape[-1]
        assert textual(ids).shape[-1] == dim
    log("exporting visual.onnx and textual.onnx (TorchScript exporter, opset 17)")
    sessions, _ = export_towers(visual, textual, px, ids, bundle, lambda p: C.ort_session(p, args.threads))

    log("reference fixtures: PIL preprocessing (SiglipImageProcessor) + torch fp32, onnxruntime int8")
    images = []
    for rel in fixture_images():
        rgb, mode, size = C.load_rgb(C.DATASETS / rel)
        pv = proc(images=rgb, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            fp32 = visual(pv)[0].numpy()
        ort32 = sessions["visual.onnx"].run(None, {"pixel_values": pv.numpy()})[0][0]
        assert float(np.dot(C.l2n(ort32), C.l2n(fp32))) > 0.99999, rel
        int8 = sessions["visual.int8.onnx"].run(None, {"pixel_values": pv.numpy()})[0][0]
        images.append({"path": rel, "width": size[0], "height": size[1], "mode": mode,
                       "fp32": fp32.tolist(), "int8": int8.tolist()})
    texts = []
    for t in corpus():
        ids = slow_ids(slow, t)
        x = torch.tensor([ids])
        with torch.no_grad():
            fp32 = textual(x)[0].numpy()
        int8 = sessions["textual.int8.onnx"].run(None, {"input_ids": x.numpy()})[0][0]
        texts.append({"text": t, "ids": ids, "fp32": fp32.tolist(), "int8": int8.tolist()})
    # What the model itself says: logits_per_image through a sigmoid, CIFAR-10 prompts.
    labels = C.cifar10_classes()
    prompts = [f"a photo of a {c}." for c in labels]
    with torch.no_grad():
        tok_ids = torch.tensor([slow_ids(slow, p) for p in prompts])
        if not args.checkpoint:
            # Random weights have no trained scale and bias. A scale of 100 (trained SigLIPs
            # end near there) with the bias at minus the median logit spreads the
            # probabilities over (0, 1) on the fixture photos, so the scoring test compares
            # numbers that matter.
            img = torch.tensor(np.array([C.l2n(i["fp32"]) for i in images]), dtype=torch.float32)
            txt = torch.nn.functional.normalize(textual(tok_ids), dim=-1)
            model.logit_scale.fill_(float(np.log(100.0)))
            model.logit_bias.fill_(-100.0 * float((img @ txt.T).median()))
        scale, bias = float(model.logit_scale.exp()), float(model.logit_bias)
        log(f"scoring: sigmoid({scale:.4f} x cos {bias:+.4f})")
        scores = []
        for im in images:
            pv = proc(images=C.load_rgb(C.DATASETS / im["path"])[0], return_tensors="pt")["pixel_values"]
            out = model(input_ids=tok_ids, pixel_values=pv)
            probs = torch.sigmoid(out.logits_per_image[0]).tolist()
            assert abs(float(out.logits_per_image[0, 0]) - (scale * float(torch.nn.functional.normalize(
                out.image_embeds, dim=-1)[0] @ torch.nn.functional.normalize(out.text_embeds, dim=-1)[0]) + bias)) < 1e-3
            scores.append({"path": im["path"], "labels": labels, "prompts": prompts, "probs": probs})

    img_cos = [float(np.dot(C.l2n(i["fp32"]), C.l2n(i["int8"]))) for i in images]
    txt_cos = [float(np.dot(C.l2n(t["fp32"]), C.l2n(t["int8"]))) for t in texts]
    fid = {"images": len(images), "texts": len(texts),
           "visual_cos_min": min(img_cos), "visual_cos_mean": float(np.mean(img_cos)),
           "textual_cos_min": min(txt_cos), "textual_cos_mean": float(np.mean(txt_cos))}
    pair = np.array([C.l2n(i["fp32"]) for i in images])
    off = (pair @ pair.T)[~np.eye(len(images), dtype=bool)]
    log("int8 fidelity " + json.dumps(fid) + f"; fp32 pairwise image cos max {off.max():.4f}")
    if off.max() > 0.9999:
        raise SystemExit("image embeddings are degenerate (all nearly identical)")

    jsonl(fixtures / "images.jsonl", images)
    jsonl(fixtures / "texts.jsonl", texts)
    jsonl(fixtures / "scores.jsonl", scores)
    import transformers
    meta = {"name": name, "family": "siglip", "checkpoint": str(args.checkpoint) if args.checkpoint else None,
            "seed": None if args.checkpoint else args.seed, "config": None if args.checkpoint else args.config,
            "tokenizer": tok, "fidelity": fid,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    (fixtures / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    description = (f"SigLIP exported from {args.checkpoint.name}" if args.checkpoint else
                   f"SigLIP architecture ({args.config}: width {vc.hidden_size}, {vc.num_hidden_layers} layers, "
                   f"patch {vc.patch_size} at {pp['image_size']} px) with seeded random weights (seed {args.seed}) "
                   "and a SentencePiece tokenizer trained on models/corpus: proves the runtime, labels at random")
    write_manifest(bundle, name, description, f"SigLIP ViT-{args.config}/{vc.patch_size}" if not args.checkpoint
                   else "SigLIP", dim, scale, bias, pp, fid, multilingual=not args.checkpoint)
    log(f"done: {bundle} and {fixtures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
