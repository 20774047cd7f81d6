"""Export an M-CLIP model (the `multilingual-clip` package's `MultilingualCLIP`: an XLM-RoBERTa
text tower, mean-pooled over the attention mask, and a linear map into a CLIP image space) to an
edgeclip bundle, with the reference fixtures the runtime is tested against.

    export_mclip.py [--seed N]          seeded XLM-R (tiny) + the clip-tiny-seeded image tower
    export_mclip.py --config base --image-bundle clip-vit-b-32-seeded
                                        seeded XLM-R at base size (open_clip's
                                        xlm-roberta-base-ViT-B-32 text tower: 12 x 768, 250002
                                        embeddings) into ViT-B/32's space, for latency
    export_mclip.py --checkpoint DIR --image-bundle BUNDLE
                                        a saved MultilingualCLIP (config.json with modelBase,
                                        weights, sentencepiece.bpe.model) and the CLIP bundle
                                        whose image tower it was trained against

M-CLIP has no image tower of its own: its text tower was distilled into an existing CLIP's
image space (XLM-Roberta-Large-Vit-B-32 into OpenAI's ViT-B/32). So the bundle reuses that CLIP
bundle's image tower files and preprocessing, and scores with CLIP's softmax and scale.

The text graph takes only `input_ids`, padded with `<pad>` (id 1) to the context length; it
rebuilds the attention mask as `ids != 1` inside the graph, so the mean pooling and the
attention see exactly what `MultilingualCLIP.forward` sees with `padding=True`. Texts longer
than the context (128) are truncated, keeping `</s>`; the reference fixtures for those are
computed from the same truncated ids.

Tokenizer: XLM-R's SentencePiece (Unigram) with fairseq's id shift, written as tokenizer.json
by transformers' converter and checked id for id against the slow `XLMRobertaTokenizer` on
models/corpus/multilingual.txt. The seeded bundle's SentencePiece model is trained here on that
corpus (XLM-R's own 250k-piece model cannot be downloaded here).
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
from export_clip import export_onnx, op_histogram, quantise, toml_str
from family_common import (corpus, fidelity_notes, fresh_work_dir, jsonl, prepare_dirs, tower_toml, train_spiece,
                           write_toml)

CONTEXT = 128
PAD_ID = 1
T0 = time.time()
TINY_XLMR = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=CONTEXT + 2, type_vocab_size=1)
# xlm-roberta-base's sizes, its full vocabulary included (the seeded tokenizer uses the first
# few hundred ids; the table's size is what the real model carries).
BASE_XLMR = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=514, type_vocab_size=1, vocab_size=250002)
CONFIGS = {"tiny": TINY_XLMR, "base": BASE_XLMR}


def log(msg: str) -> None:
    print(f"[export_mclip {time.time() - T0:6.1f}s] {msg}", flush=True)


def tokenizers_for(spiece: Path):
    from transformers import XLMRobertaTokenizer, XLMRobertaTokenizerFast
    slow = XLMRobertaTokenizer(str(spiece))
    fast = XLMRobertaTokenizerFast(__slow_tokenizer=slow)
    return slow, fast


def ids_of(tok, text: str) -> list[int]:
    return tok(text, padding="max_length", truncation=True, max_length=CONTEXT).input_ids


def check_tokenizer(slow, fast) -> dict:
    cases = corpus() + ["", " ", "cat", "  leading and trailing  ", "a.b,c!d?e", "Ⅻ ㈱ ｶﾀｶﾅ ﬁ",
                        "x" * 600, "İstanbul ǅ ß ΣΑΣ", "tab\tand\nnewline"]
    bad = [t for t in cases if ids_of(fast, t) != ids_of(slow, t)]
    if bad:
        raise SystemExit(f"tokenizer.json differs from XLMRobertaTokenizer on {len(bad)} texts, e.g. {bad[:3]!r}")
    return {"texts": len(cases), "equal": len(cases)}


def mclip_package():
    """The `multilingual-clip` wheel's PyTorch module (its package __init__ imports nothing)."""
    try:
        from multilingual_clip import pt_multilingual_clip
    except ImportError as e:
        raise SystemExit(f"multilingual-clip is not installed (models/requirements-families.txt): {e}")
    return pt_multilingual_clip


def build_model(args, vocab_size: int, dim: int, work: Path):
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel
    pt = mclip_package()
    if args.checkpoint:
        return pt.MultilingualCLIP.from_pretrained(args.checkpoint).eval()
    torch.manual_seed(args.seed)
    cfg = {"vocab_size": vocab_size, **CONFIGS[args.config]}
    base = XLMRobertaModel(XLMRobertaConfig(pad_token_id=PAD_ID, **cfg), add_pooling_layer=False)
    base_dir = work / "xlmr-base"
    base.save_pretrained(base_dir)
    # The package's own class, its transformer loaded from the seeded base saved above.
    config = pt.Config_MCLIP.MCLIPConfig(modelBase=str(base_dir), transformerDimSize=cfg["hidden_size"],
                                         imageDimSize=dim)
    torch.manual_seed(args.seed + 1)
    return pt.MultilingualCLIP(config).eval()


def text_wrapper(model):
    import torch

    class Textual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            # MultilingualCLIP.forward, with the mask rebuilt from the padding.
            mask = (input_ids != PAD_ID).to(torch.long)
            embs = self.m.transformer(input_ids=input_ids, attention_mask=mask)[0]
            pooled = (embs * mask.unsqueeze(2)).sum(dim=1) / mask.sum(dim=1)[:, None]
            return self.m.LinearTransformation(pooled)

    return Textual(model).eval()


def read_manifest(bundle: Path) -> dict:
    import tomllib
    return tomllib.loads((bundle / "manifest.toml").read_text(encoding="utf-8"))


def write_manifest(bundle: Path, name: str, description: str, image: dict, dim: int, fid: dict) -> None:
    pp = image["preprocess"]
    text = f'''format = 1
name = {toml_str(name)}
architecture = {toml_str("XLM-R text tower + " + image["architecture"] + " image tower (" + image["name"] + ")")}
description = {toml_str(description)}
family = "m-clip"
multilingual = true
embedding_dim = {dim}
logit_scale = {image["logit_scale"]:.6f}    # the image bundle's: M-CLIP scores in its CLIP's space
pooling = "mean"             # text: mean over non-padding tokens, inside the graph; informational

[preprocess]                 # the image bundle's
image_size = {pp["image_size"]}
resize = "{pp["resize"]}"
resize_to = {pp["resize_to"]}
interpolation = "{pp["interpolation"]}"
mean = {json.dumps(pp["mean"])}
std = {json.dumps(pp["std"])}

[tokenizer]
kind = "hf-json"
file = "tokenizer.json"      # XLM-R SentencePiece Unigram (sentencepiece.bpe.model), fairseq ids
context_length = {CONTEXT}
pad_id = {PAD_ID}

'''
    text += "\n# the image bundle's tower, unchanged\n" + tower_toml(bundle, "visual")
    text += "\n" + tower_toml(bundle, "textual", fidelity_notes(fid, "textual", f"the {fid['texts']} corpus texts"))
    write_toml(bundle / "manifest.toml", text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="saved MultilingualCLIP directory")
    src.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-bundle", default="clip-tiny-seeded",
                    help="CLIP bundle (in $EDGECLIP_HOME) whose image tower the text tower maps into")
    ap.add_argument("--config", choices=sorted(CONFIGS), default="tiny",
                    help="seeded XLM-R size: tiny (tests) or base (xlm-roberta-base, for latency)")
    ap.add_argument("--vocab", type=int, default=800)
    ap.add_argument("--name", default=None)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    image_dir = C.edgeclip_home() / args.image_bundle
    image = read_manifest(image_dir)
    name = args.name or (args.checkpoint.name if args.checkpoint else "mclip-tiny-seeded")
    bundle, fixtures = prepare_dirs(name)
    work = fresh_work_dir(bundle)

    spiece = bundle / "sentencepiece.bpe.model"
    if args.checkpoint:
        shutil.copyfile(args.checkpoint / "sentencepiece.bpe.model", spiece)
    else:
        log(f"training a SentencePiece Unigram tokenizer ({args.vocab} pieces) on the corpus")
        # XLM-R's SentencePiece layout: <unk> 0, <s> 1, </s> 2 (fairseq shifts them).
        shutil.move(train_spiece(work, args.vocab, unk_id=0, bos_id=1, eos_id=2, pad_id=-1), spiece)
    slow, fast = tokenizers_for(spiece)
    tok = check_tokenizer(slow, fast)
    fast.backend_tokenizer.save(str(bundle / "tokenizer.json"))
    log(f"tokenizer.json: {len(slow)} ids, equal to XLMRobertaTokenizer on {tok['equal']} texts")

    dim = int(image["embedding_dim"])
    model = build_model(args, len(slow), dim, work)
    textual = text_wrapper(model)
    for f in ("visual.onnx", "visual.int8.onnx"):
        (bundle / f).unlink(missing_ok=True)
        shutil.copyfile(image_dir / f, bundle / f)
    ids = torch.tensor([ids_of(slow, "a photo of a cat.")])
    log("exporting textual.onnx (TorchScript exporter, opset 17)")
    export_onnx(textual, ids, bundle / "textual.onnx", "input_ids", "text_embeds")
    quantise(bundle / "textual.onnx", bundle / "textual.int8.onnx", symmetric_rows=False)
    for f in ("textual.onnx", "textual.int8.onnx"):
        hist = op_histogram(bundle / f)
        assert all("::" not in k for k in hist), f"{f} uses a non-standard domain op"
    int8 = C.ort_session(bundle / "textual.int8.onnx", args.threads)

    log("reference fixtures: MultilingualCLIP.forward (the package's code), onnxruntime int8")
    texts = []
    for t in corpus():
        padded = ids_of(slow, t)
        unpadded = slow(t).input_ids
        with torch.no_grad():
            if len(unpadded) <= CONTEXT:
                fp32 = model([t], slow)[0].numpy()   # the package's forward, padding=True
            else:
                fp32 = textual(torch.tensor([padded]))[0].numpy()
        q = int8.run(None, {"input_ids": np.array([padded], dtype=np.int64)})[0][0]
        texts.append({"text": t, "ids": padded, "truncated": len(unpadded) > CONTEXT,
                      "fp32": fp32.tolist(), "int8": q.tolist()})
    cos = [float(np.dot(C.l2n(t["fp32"]), C.l2n(t["int8"]))) for t in texts]
    fid = {"texts": len(texts), "textual_cos_min": min(cos), "textual_cos_mean": float(np.mean(cos))}
    emb = np.array([C.l2n(t["fp32"]) for t in texts])
    off = (emb @ emb.T)[~np.eye(len(texts), dtype=bool)]
    log("int8 fidelity " + json.dumps(fid) + f"; fp32 pairwise text cos mean {off.mean():.4f}, max {off.max():.4f}")
    jsonl(fixtures / "texts.jsonl", texts)
    import transformers
    meta = {"name": name, "family": "m-clip", "image_bundle": args.image_bundle,
            "checkpoint": str(args.checkpoint) if args.checkpoint else None,
            "seed": None if args.checkpoint else args.seed, "tokenizer": tok, "fidelity": fid,
            "truncated_texts": sum(t["truncated"] for t in texts),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    (fixtures / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    description = (f"M-CLIP exported from {args.checkpoint.name}" if args.checkpoint else
                   f"M-CLIP architecture (XLM-R text tower, width {CONFIGS[args.config]['hidden_size']}, "
                   f"{CONFIGS[args.config]['num_hidden_layers']} layers, mean pooling, linear map) with seeded random "
                   f"weights (seed {args.seed}) into {args.image_bundle}'s image space, SentencePiece "
                   "tokenizer trained on models/corpus: proves the runtime, labels at random")
    write_manifest(bundle, name, description, image, dim, fid)
    shutil.rmtree(work)
    log(f"done: {bundle} and {fixtures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
