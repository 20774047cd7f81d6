"""Export a CoCa model (open_clip's `CoCa`) to an edgeclip bundle: its contrastive image and text
embeddings only, with the reference fixtures the runtime is tested against.

    export_coca.py [--config tiny|base] [--seed N]     seeded weights (default: tiny, seed 0)
    export_coca.py --checkpoint FILE [--model NAME]    open_clip weights for NAME (default coca_ViT-B-32)

base is open_clip's `coca_ViT-B-32` config at its real sizes; tiny is that config shrunk (width
64, 2 layers, 2 heads in every tower, a 2-layer multimodal decoder), built through the same
open_clip classes. Seeded models get open_clip's own initialisation.

What the bundle holds and why:
  * image: `model.encode_image` = ViT -> attentional pooler (256 queries) -> ln_post -> the first
    query's output (the contrastive token) -> projection. The other 255 queries feed the
    captioning decoder, which is not exported (captioning is out of scope here).
  * text: `model.encode_text` = CLIP's text transformer over 76 BPE ids with a learned CLS
    embedding appended inside (77 positions), pooled at that CLS token. Its attention mask is
    built from the ids (`ids != 0` marks real tokens; open_clip's legacy CoCa layout, which the
    released weights were trained with, puts the always-visible entry first and shifts the pad
    mask by one), traced into the graph from `input_ids`, so the runtime feeds ids only.
  * tokenizer: CLIP's BPE with context 76 (`open_clip.get_tokenizer('coca_ViT-B-32')`), checked
    equal to OpenAI's clip.tokenize(text, 76) on models/corpus/multilingual.txt and edge cases:
    runtime kind `clip-bpe`, context_length 76.
  * preprocessing: open_clip's pretrained config for CoCa (OpenAI's mean/std, bicubic,
    shortest side + centre crop at 224).
  * scoring: softmax over labels with exp(logit_scale).

Outputs: $EDGECLIP_HOME/<name>/ and $EDGECLIP_HOME/fixtures/<name>/ (images.jsonl, texts.jsonl
with the ids, scores.jsonl, meta.json).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import openclip_common as O
from family_common import prepare_dirs

TAG = "export_coca"
BASE = "coca_ViT-B-32"


def shrink(cfg: dict) -> dict:
    """coca_ViT-B-32 at width 64, 2 layers, 2 heads per tower: the same classes and graph."""
    cfg["embed_dim"] = 64
    cfg["vision_cfg"].update(width=64, layers=2, head_width=32, attn_pooler_heads=2)
    cfg["text_cfg"].update(width=64, heads=2, layers=2)
    cfg["multimodal_cfg"].update(width=64, heads=2, layers=2, attn_pooler_heads=2)
    return cfg


def build_model(args):
    import open_clip
    import torch
    from open_clip.coca_model import CoCa
    if args.checkpoint:
        model = open_clip.create_model(args.model, pretrained=str(args.checkpoint))
        return model.eval(), open_clip.get_model_config(args.model)
    cfg = O.model_config(BASE)
    if args.config == "tiny":
        cfg = shrink(cfg)
    cfg.pop("custom_text", None)
    torch.manual_seed(args.seed)
    return CoCa(**cfg).eval(), cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="open_clip CoCa weights (.pt / .safetensors / .bin)")
    src.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", choices=("tiny", "base"), default=None)
    ap.add_argument("--model", default=BASE, help="open_clip model name for --checkpoint")
    ap.add_argument("--name", default=None)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.checkpoint and args.config:
        ap.error("--config chooses a seeded architecture; a --checkpoint brings its own")
    args.config = args.config or "tiny"
    pp_name = args.model if args.checkpoint else BASE

    import open_clip
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.name or (args.checkpoint.stem if args.checkpoint else f"coca-{args.config}-seeded")
    bundle, fixtures_dir = prepare_dirs(name)

    model, cfg = build_model(args)
    if type(model).__name__ != "CoCa":
        raise SystemExit(f"{args.model} is not a CoCa model")
    context = model.text.context_length
    assert context == cfg["text_cfg"]["context_length"] and model.text.cls_emb is not None
    image_size = cfg["vision_cfg"]["image_size"]
    O.log(TAG, f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters (all towers), "
               f"text context {context} + CLS, image {image_size} px")
    ids_of, tok = O.open_clip_tokenizer(pp_name, context)
    O.log(TAG, f"tokenizer: {tok}")
    pp = O.pretrained_preprocess(pp_name)
    spec = O.preprocess_spec(pp, image_size)
    spec["tag"] = pp["tag"]
    # Unnormalised, as every bundle's towers: the runtime normalises.
    visual, textual = O.towers(model, lambda m, x: m.encode_image(x, normalize=False),
                               lambda m, x: m.encode_text(x, normalize=False))
    sessions = O.export_bundle(TAG, bundle, visual, textual, image_size, ids_of, args.threads)
    transform = O.reference_transform(pp, image_size)
    O.log(TAG, "reference fixtures: open_clip's transform + torch fp32, onnxruntime int8")
    images, texts, fid = O.fixtures(TAG, visual, textual, transform, ids_of, sessions)
    dim = len(images[0]["fp32"])
    scale, scores = O.cifar10_scores(model, not args.checkpoint, images, textual, ids_of)
    vc, tc = cfg["vision_cfg"], cfg["text_cfg"]
    meta = {"name": name, "family": "coca", "model_config": cfg,
            "checkpoint": str(args.checkpoint) if args.checkpoint else None,
            "seed": None if args.checkpoint else args.seed, "config": None if args.checkpoint else args.config,
            "tokenizer": tok, "preprocess": pp, "fidelity": fid, "versions": O.versions()}
    description = (f"CoCa contrastive towers exported from {args.checkpoint.name} ({args.model}); captioning not exported"
                   if args.checkpoint else
                   f"CoCa architecture (open_clip {BASE}{' shrunk' if args.config == 'tiny' else ''}: image ViT width "
                   f"{vc['width']}, {vc['layers']} layers, patch {vc['patch_size']} at {image_size} px, attentional "
                   f"pooler; text width {tc['width']}, {tc['layers']} layers, CLS-pooled) with seeded random weights "
                   f"(seed {args.seed}): contrastive embeddings only, captioning (the multimodal decoder) not "
                   "exported; proves the runtime, labels at random")
    O.write_outputs(TAG, bundle, fixtures_dir, name=name, family="coca",
                    architecture=f"CoCa ViT-{'tiny' if args.config == 'tiny' and not args.checkpoint else 'B'}"
                                 f"/{vc['patch_size']}" if not args.checkpoint else f"CoCa {args.model}",
                    description=description, dim=dim, logit_scale=scale, pp=spec, context=context, fid=fid,
                    images=images, texts=texts, scores=scores, meta=meta,
                    header_notes='pooling = "cls"             # text: the CLS embedding appended inside the graph; '
                                 'image: the attentional pooler\'s first query; informational\n')
    return 0


if __name__ == "__main__":
    sys.exit(main())
