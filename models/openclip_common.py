"""What the open_clip-based family exporters (export_coca.py, export_mobileclip.py) share: the
model built through open_clip's own classes from a (possibly shrunk) model config, open_clip's
tokenizer checked against OpenAI's `clip.tokenize`, preprocessing read from open_clip's
pretrained config, the ONNX export + int8 quantisation, the reference fixtures and the manifest.

Both families are CLIP-like for the runtime: CLIP's BPE (`clip-bpe`), softmax scoring with
exp(logit_scale), an image tower and a text tower that each return one (unnormalised) embedding.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

import edgeclip_common as C
from export_clip import toml_str
from family_common import corpus, export_towers, fidelity_notes, jsonl, tower_toml, write_toml

T0 = time.time()


def log(tag: str, msg: str) -> None:
    print(f"[{tag} {time.time() - T0:6.1f}s] {msg}", flush=True)


def model_config(name: str) -> dict:
    """open_clip's model config (model_configs/<name>.json) as a dict."""
    import open_clip
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise SystemExit(f"open_clip {open_clip.__version__} has no model config {name!r}")
    return json.loads(json.dumps(cfg))  # a deep copy the caller may shrink


def pretrained_preprocess(name: str) -> dict:
    """Preprocessing from open_clip's pretrained configs for `name` (what its released weights
    were trained with), checked to agree across the tags; a seeded model built without weights
    gets open_clip's defaults instead, which are not what e.g. MobileCLIP uses (mean 0, std 1)."""
    import open_clip
    keys = ("mean", "std", "interpolation", "resize_mode")
    cfgs = {t: open_clip.get_pretrained_cfg(name, t) for t in open_clip.list_pretrained_tags_by_model(name)}
    if not cfgs:
        raise SystemExit(f"open_clip lists no pretrained tag for {name!r}: no reference preprocessing")
    got = {t: tuple((k, tuple(c[k]) if isinstance(c.get(k), (list, tuple)) else c.get(k)) for k in keys)
           for t, c in cfgs.items()}
    if len(set(got.values())) != 1:
        raise SystemExit(f"{name}: pretrained tags disagree on preprocessing: {got}")
    tag, cfg = next(iter(cfgs.items()))
    return {"tag": tag, "mean": [float(x) for x in cfg["mean"]], "std": [float(x) for x in cfg["std"]],
            "interpolation": cfg["interpolation"], "resize_mode": cfg["resize_mode"]}


def preprocess_spec(pp: dict, image_size: int) -> dict:
    """The manifest's [preprocess] for open_clip's eval transform, or an exit naming what the
    runtime lacks."""
    resize = {"shortest": "shortest-side", "squash": "squash"}.get(pp["resize_mode"])
    if resize is None or pp["interpolation"] not in ("bicubic", "bilinear"):
        raise SystemExit(f"preprocessing {pp}: the runtime has shortest-side/squash with bicubic/bilinear")
    return {"image_size": image_size, "resize": resize, "resize_to": image_size,
            "interpolation": pp["interpolation"], "mean": pp["mean"], "std": pp["std"]}


def reference_transform(pp: dict, image_size: int):
    """open_clip's own eval transform (torchvision on PIL images): the reference the runtime's
    preprocessing is measured against."""
    import open_clip
    return open_clip.image_transform(image_size, is_train=False, mean=tuple(pp["mean"]), std=tuple(pp["std"]),
                                     interpolation=pp["interpolation"], resize_mode=pp["resize_mode"])


def open_clip_tokenizer(name: str, context: int):
    """open_clip.get_tokenizer(name), checked to produce `context` ids and to equal OpenAI's
    clip.tokenize(text, context, truncate=True) (what edgeclip's `clip-bpe` reproduces) on the
    corpus and edge cases. Returns (ids_of(text) -> list[int], counts)."""
    import open_clip
    tok = open_clip.get_tokenizer(name)

    def ids_of(text: str) -> list[int]:
        ids = tok([text])[0].tolist()
        assert len(ids) == context, (name, len(ids), context)
        return ids

    cases = corpus() + ["", " ", "cat", "  leading and trailing  ", "a.b,c!d?e", "Ⅻ ㈱ ｶﾀｶﾅ ﬁ",
                        "x " * 200, "İstanbul ǅ ß ΣΑΣ", "tab\tand\nnewline", "&amp; &lt;html&gt;"]
    bad = [t for t in cases if ids_of(t) != C.clip_tokenize(t, context)]
    if bad:
        raise SystemExit(f"open_clip's tokenizer for {name} differs from clip.tokenize on {len(bad)} texts, "
                         f"e.g. {bad[:3]!r}")
    return ids_of, {"reference": f"open_clip.get_tokenizer({name!r})", "context_length": context,
                    "texts": len(cases), "equal_to_clip_tokenize": len(cases)}


def fixture_images() -> list[str]:
    """The 40 photos the other families' fixtures use: every photo in photos/ and the first
    Caltech-101 test image of 16 classes (all sizes, JPEG and PNG, greyscale included)."""
    from export_siglip import fixture_images as siglip_images
    return siglip_images()


def ort_session(path: Path, threads: int = 0):
    """onnxruntime with only its basic graph optimisations. Its extended level fuses
    MatMulInteger -> Cast -> Mul into MatMulIntegerToFloat, which mishandles the per-row
    activation scales of the symmetric int8 image graphs (export_clip.symmetric_row_activations):
    on coca-tiny-seeded's image tower, cos(int8, fp32) min 0.9316 with ORT_ENABLE_EXTENDED/ALL
    against 0.99988 with ORT_DISABLE_ALL/ENABLE_BASIC, and tract's int8 agrees with the latter
    (0.99984 to its fp32 on the worst photo). The reference must be the graph's arithmetic,
    not that fusion's."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def towers(model, visual_call, text_call):
    """torch modules with one input and one output around `visual_call(model, pixels)` and
    `text_call(model, ids)`."""
    import torch

    class Visual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return visual_call(self.m, pixel_values)

    class Textual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return text_call(self.m, input_ids)

    return Visual(model).eval(), Textual(model).eval()


def export_bundle(tag: str, bundle: Path, visual, textual, image_size: int, ids_of, threads: int) -> dict:
    """visual/textual .onnx (checked against torch on a sample) and .int8.onnx; returns
    onnxruntime sessions by file name."""
    import torch
    px = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(1234))
    ids = torch.tensor([ids_of("a photo of a cat.")])
    log(tag, "exporting visual.onnx and textual.onnx (TorchScript exporter, opset 17)")
    sessions, hists = export_towers(visual, textual, px, ids, bundle, lambda p: ort_session(p, threads))
    for f, hist in hists.items():
        log(tag, f"{f}: {(bundle / f).stat().st_size / 2**20:.1f} MiB, {sum(hist.values())} nodes")
    shutil.copyfile(C.bpe_path(), bundle / "bpe_simple_vocab_16e6.txt.gz")
    return sessions


def fixtures(tag: str, visual, textual, transform, ids_of, sessions, extra_image=None):
    """images (fp32 = torch on open_clip's transform of the photo, int8 = onnxruntime) and texts
    (the corpus: ids from open_clip's tokenizer, fp32 = torch, int8 = onnxruntime), with the
    onnxruntime fp32 graph checked against torch on every item. `extra_image(pixels, fp32)`
    may add fields per image. Returns (images, texts, fidelity)."""
    import torch
    images = []
    for rel in fixture_images():
        rgb, mode, size = C.load_rgb(C.DATASETS / rel)
        pv = transform(rgb).unsqueeze(0)
        with torch.no_grad():
            fp32 = visual(pv)[0].numpy()
        ort32 = sessions["visual.onnx"].run(None, {"pixel_values": pv.numpy()})[0][0]
        assert float(np.dot(C.l2n(ort32), C.l2n(fp32))) > 0.99999, rel
        int8 = sessions["visual.int8.onnx"].run(None, {"pixel_values": pv.numpy()})[0][0]
        row = {"path": rel, "width": size[0], "height": size[1], "mode": mode,
               "fp32": fp32.tolist(), "int8": int8.tolist()}
        if extra_image is not None:
            row.update(extra_image(pv, fp32))
        images.append(row)
    texts = []
    for t in corpus():
        ids = ids_of(t)
        x = torch.tensor([ids])
        with torch.no_grad():
            fp32 = textual(x)[0].numpy()
        ort32 = sessions["textual.onnx"].run(None, {"input_ids": x.numpy()})[0][0]
        assert float(np.dot(C.l2n(ort32), C.l2n(fp32))) > 0.99999, t
        int8 = sessions["textual.int8.onnx"].run(None, {"input_ids": x.numpy()})[0][0]
        texts.append({"text": t, "ids": ids, "fp32": fp32.tolist(), "int8": int8.tolist()})
    img_cos = [float(np.dot(C.l2n(i["fp32"]), C.l2n(i["int8"]))) for i in images]
    txt_cos = [float(np.dot(C.l2n(t["fp32"]), C.l2n(t["int8"]))) for t in texts]
    fid = {"images": len(images), "texts": len(texts),
           "visual_cos_min": min(img_cos), "visual_cos_mean": float(np.mean(img_cos)),
           "textual_cos_min": min(txt_cos), "textual_cos_mean": float(np.mean(txt_cos))}
    # How far apart the seeded model puts different inputs: a cos bound of 0.9999 means little
    # if every embedding is already that close to every other.
    for kind, rows in (("image", images), ("text", texts)):
        e = np.array([C.l2n(r["fp32"]) for r in rows])
        off = (e @ e.T)[~np.eye(len(rows), dtype=bool)]
        fid[f"fp32_{kind}_pairwise_cos_mean"] = float(off.mean())
        fid[f"fp32_{kind}_pairwise_cos_max"] = float(off.max())
    log(tag, "fidelity " + json.dumps(fid))
    if fid["fp32_image_pairwise_cos_max"] > 0.9999 or fid["fp32_text_pairwise_cos_max"] > 0.9999:
        raise SystemExit("embeddings are degenerate (nearly identical across inputs)")
    return images, texts, fid


def cifar10_scores(model, seeded: bool, images, textual, ids_of) -> tuple[float, list]:
    """The model's logit scale and its softmax over the CIFAR-10 prompts for each fixture photo.
    Seeded models get scale 100: random weights have no trained scale, and open_clip's initial
    1/0.07 leaves the softmax nearly flat on seeded embeddings (the scoring fixture would compare
    numbers near 1/10); trained CLIP-family scales end at open_clip's clamp, 100."""
    import torch
    if seeded:
        with torch.no_grad():
            model.logit_scale.fill_(float(np.log(100.0)))
    scale = float(model.logit_scale.detach().exp())
    labels = C.cifar10_classes()
    prompts = [f"a photo of a {c}." for c in labels]
    return scale, softmax_scores(images, [ids_of(p) for p in prompts], textual, scale, labels, prompts)


def softmax_scores(images, prompts_ids, textual, scale: float, labels, prompts):
    """What the model says about each photo: softmax(scale x cos) over the CIFAR-10 prompts,
    from the torch fp32 embeddings."""
    import torch
    with torch.no_grad():
        txt = torch.nn.functional.normalize(textual(torch.tensor(prompts_ids)), dim=-1).double()
    out = []
    for im in images:
        img = torch.tensor(C.l2n(im["fp32"]))
        probs = torch.softmax(scale * (txt @ img), dim=0).tolist()
        out.append({"path": im["path"], "labels": labels, "prompts": prompts, "probs": probs})
    return out


def write_outputs(tag: str, bundle: Path, fixtures_dir: Path, *, name: str, family: str, architecture: str,
                  description: str, dim: int, logit_scale: float, pp: dict, context: int, fid: dict,
                  images, texts, scores, meta: dict, header_notes: str = "") -> None:
    jsonl(fixtures_dir / "images.jsonl", images)
    jsonl(fixtures_dir / "texts.jsonl", texts)
    jsonl(fixtures_dir / "scores.jsonl", scores)
    (fixtures_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    text = f'''format = 1
name = {toml_str(name)}
architecture = {toml_str(architecture)}
description = {toml_str(description)}
family = "{family}"
multilingual = false
embedding_dim = {dim}
scoring = "softmax"
logit_scale = {logit_scale:.6f}    # exp(model.logit_scale)
{header_notes}
[preprocess]                 # open_clip's pretrained config ({pp["tag"]}): its eval transform
image_size = {pp["image_size"]}
resize = "{pp["resize"]}"
resize_to = {pp["resize_to"]}
interpolation = "{pp["interpolation"]}"
mean = {json.dumps(pp["mean"])}
std = {json.dumps(pp["std"])}

[tokenizer]
kind = "clip-bpe"
file = "bpe_simple_vocab_16e6.txt.gz"
context_length = {context}

'''
    text += "\n" + tower_toml(bundle, "visual", fidelity_notes(fid, "visual", f"the {fid['images']} fixture photos"))
    text += "\n" + tower_toml(bundle, "textual", fidelity_notes(fid, "textual", f"the {fid['texts']} corpus texts"))
    write_toml(bundle / "manifest.toml", text)
    log(tag, f"done: {bundle} and {fixtures_dir}")


def versions() -> dict:
    import open_clip
    import timm
    import torch
    return {"torch": torch.__version__, "open_clip": open_clip.__version__, "timm": timm.__version__}
