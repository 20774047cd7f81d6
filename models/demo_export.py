"""Stage 3 of the edgeclip-demo recipe: export the trained model as an edgeclip bundle.

Writes $EDGECLIP_HOME/edgeclip-demo-build/ with fp32 and int8 towers, tokenizer.json and a
manifest; with --install DIR also writes the int8-only bundle that is committed in the repository
(models/edgeclip-demo/).

int8 scheme: weight-only, symmetric, per output channel (per row for the token-embedding table),
stored as int8 initialisers + Cast + Mul. Runtimes fold the dequantisation at load, so inference
runs the float kernels on weights rounded to 8 bits: a 4x smaller file at fp32 speed and near-fp32
fidelity. Dynamic int8 activation quantisation (MatMulInteger/ConvInteger) was not used for this
bundle: it is the subject of the performance work, and it costs accuracy on MiniLM.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import demo_model as dm
import demo_train as dt
from edgeclip_common import sha256_file

NAME = "edgeclip-demo"
VISUAL_IN, VISUAL_OUT = "pixel_values", "image_embeds"
TEXT_IN, TEXT_OUT = ["input_ids", "attention_mask"], "text_embeds"
QUANT_MIN_ELEMENTS = 1024


class VisualTower(nn.Module):
    def __init__(self, ckpt):
        super().__init__()
        self.backbone = dm.EfficientNetLite0()
        self.backbone.load_state_dict(ckpt["backbone"])
        self.head = dt.ImageHead(self.backbone, ckpt["imagenet_text"], ckpt["imagenet_text"].shape[1],
                                 ckpt["tau"], finetune=False, hidden=ckpt["args"].get("hidden", 0))
        self.head.w_f.load_state_dict(ckpt["w_f"])
        self.head.w_s.load_state_dict(ckpt["w_s"])

    def forward(self, pixel_values):
        return self.head.from_features(*self.backbone(pixel_values))


class TextTower(nn.Module):
    def __init__(self, ckpt):
        super().__init__()
        self.minilm = dm.MiniLM()
        self.head = dt.TextHead(ckpt["imagenet_text"].shape[1])
        self.head.a.load_state_dict(ckpt["text_a"])

    def forward(self, input_ids, attention_mask):
        return self.head(self.minilm(input_ids, attention_mask))


def export(module, example, path: Path, inputs, output) -> None:
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), example, str(tmp), input_names=inputs, output_names=[output],
                          opset_version=17, dynamo=False, do_constant_folding=True)
    os.replace(tmp, path)


def quantise_weights(src: Path, dst: Path) -> dict:
    """Weight-only symmetric int8 (see module doc) of Conv, MatMul, Gemm and Gather weights.
    Returns {"tensors": n, "bytes_before/after"}.

    Measured on the shipped visual tower (120 test photos, cos to fp32 in onnxruntime): all
    weights int8 min 0.941 / mean 0.9940; convolutions only 0.948 / 0.9967; convolutions except
    depthwise 0.967 / 0.9978 (18 MB, over the 40 MB bundle budget with the text tower);
    everything except depthwise 0.944 / 0.9951. The accuracy cost is what decides, and
    `edgeclip eval` measures it (README)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    consumers: dict[str, list] = {}
    for n in g.node:
        for k, i in enumerate(n.input):
            consumers.setdefault(i, []).append((n, k))

    def channel_axis(name):
        """Axis the scale varies along, or None when the tensor is not a weight we quantise."""
        uses = consumers.get(name, [])
        if not uses:
            return None
        axes = set()
        for n, k in uses:
            if n.op_type == "Conv" and k == 1:
                axes.add(0)
            elif n.op_type == "MatMul" and k == 1:
                axes.add(-1)
            elif n.op_type == "Gemm" and k == 1:
                trans = next((a.i for a in n.attribute if a.name == "transB"), 0)
                axes.add(0 if trans else -1)
            elif n.op_type == "Gather" and k == 0:
                axes.add(0)
            else:
                return None
        return axes.pop() if len(axes) == 1 else None

    new_init, nodes, count, before, after = [], [], 0, 0, 0
    for init in g.initializer:
        w = numpy_helper.to_array(init)
        axis = channel_axis(init.name) if w.dtype == np.float32 and w.size >= QUANT_MIN_ELEMENTS else None
        before += w.nbytes
        if axis is None:
            new_init.append(init)
            after += w.nbytes
            continue
        reduce = tuple(d for d in range(w.ndim) if d != axis % w.ndim)
        scale = np.abs(w).max(axis=reduce, keepdims=True) / 127.0
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        new_init += [numpy_helper.from_array(q, init.name + "_int8"),
                     numpy_helper.from_array(scale, init.name + "_scale")]
        nodes += [helper.make_node("Cast", [init.name + "_int8"], [init.name + "_f"], to=onnx.TensorProto.FLOAT),
                  helper.make_node("Mul", [init.name + "_f", init.name + "_scale"], [init.name])]
        count += 1
        after += q.nbytes + scale.nbytes
    del g.initializer[:]
    g.initializer.extend(new_init)
    old_nodes = list(g.node)
    del g.node[:]
    g.node.extend(nodes + old_nodes)
    onnx.checker.check_model(m)
    tmp = dst.with_suffix(".tmp.onnx")
    onnx.save(m, str(tmp))
    os.replace(tmp, dst)
    return {"tensors": count, "bytes_before": before, "bytes_after": after}


def session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def fidelity(build: Path, images: list[Path], texts: list[str]) -> dict:
    """cos(int8, fp32) of the embeddings in onnxruntime."""
    tok = dm.minilm_tokenizer()
    out = {}
    v32, v8 = session(build / "visual.onnx"), session(build / "visual.int8.onnx")
    cos = []
    for p in images:
        x = dm.preprocess(p)[None]
        a, b = v32.run(None, {VISUAL_IN: x})[0][0], v8.run(None, {VISUAL_IN: x})[0][0]
        cos.append(float(a @ b))
    out["visual"] = (min(cos), float(np.mean(cos)), len(cos))
    t32, t8 = session(build / "textual.onnx"), session(build / "textual.int8.onnx")
    cos = []
    for t in texts:
        ids, mask = dm.tokenize(tok, [t], dt.CONTEXT_LENGTH)
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        a, b = t32.run(None, feed)[0][0], t8.run(None, feed)[0][0]
        cos.append(float(a @ b))
    out["textual"] = (min(cos), float(np.mean(cos)), len(cos))
    return out


def manifest(ckpt, files: dict, fid: dict, precisions: list[str]) -> str:
    acc = ckpt["accuracy"]
    lines = [
        "format = 1",
        f'name = "{NAME}"',
        'architecture = "EfficientNet-Lite0 + all-MiniLM-L6-v2"',
        'description = "Small pretrained image-text model built by models/prepare edgeclip-demo: '
        'EfficientNet-Lite0 (ImageNet) aligned to all-MiniLM-L6-v2 on CIFAR-10 + Caltech-101 train"',
        f"embedding_dim = {ckpt['imagenet_text'].shape[1]}",
        f"logit_scale = {ckpt['logit_scale']:.6f}     # trained",
        'pooling = "mean"            # text: mean over the attention mask, inside the graph; informational',
        "# accuracy of the trained checkpoint in PyTorch (cached features; `edgeclip eval` reproduces",
        "# these from the files): " + ", ".join(f"{k} {v * 100:.1f} %" for k, v in acc.items()),
        "",
        "[preprocess]",
        f"image_size = {dm.IMAGE_SIZE}",
        'resize = "shortest-side"',
        f"resize_to = {dm.IMAGE_SIZE}",
        'interpolation = "bicubic"',
        f"mean = {list(dm.MEAN)}",
        f"std = {list(dm.STD)}",
        "",
        "[tokenizer]",
        'kind = "wordpiece"          # BERT uncased, from the tokenizer.json of all-MiniLM-L6-v2',
        'file = "tokenizer.json"',
        f"context_length = {dt.CONTEXT_LENGTH}",
        "pad_id = 0",
    ]
    scheme = "weight-only symmetric per-channel int8 (Cast + Mul, folded at load), fp32 compute"
    for tower, inputs, output in (("visual", [VISUAL_IN], VISUAL_OUT), ("textual", TEXT_IN, TEXT_OUT)):
        lines += ["", f"[{tower}]", f'input = "{inputs[0]}"', f'output = "{output}"']
        for prec in precisions:
            name, digest = files[(tower, prec)]
            lines += [f"[{tower}.{prec}]", f'file = "{name}"', f'sha256 = "{digest}"']
            if prec == "int8":
                lo, mean, n = fid[tower]
                lines += [f'scheme = "{scheme}"',
                          f"# cos(int8, fp32) in onnxruntime over {n} "
                          + ("photos (Caltech-101 test, CIFAR-10 test, ../shared photos)" if tower == "visual"
                             else "prompts (class names of CIFAR-10, Caltech-101, ImageNet x templates)"),
                          f"cos_vs_fp32_min = {lo:.6f}", f"cos_vs_fp32_mean = {mean:.6f}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--install", type=Path, default=None, help="also write the int8-only bundle here")
    args = ap.parse_args()
    torch.set_num_threads(2)
    ckpt = torch.load(args.checkpoint, weights_only=False)
    build = dm.edgeclip_home() / f"{NAME}-build"
    build.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    export(VisualTower(ckpt), (torch.zeros(1, 3, dm.IMAGE_SIZE, dm.IMAGE_SIZE),), build / "visual.onnx",
           [VISUAL_IN], VISUAL_OUT)
    ids, mask = dm.tokenize(dm.minilm_tokenizer(), ["a photo of a cat."], dt.CONTEXT_LENGTH)
    export(TextTower(ckpt), (ids, mask), build / "textual.onnx", TEXT_IN, TEXT_OUT)
    for tower in ("visual", "textual"):
        q = quantise_weights(build / f"{tower}.onnx", build / f"{tower}.int8.onnx")
        print(f"[export] {tower}: {q['tensors']} weight tensors to int8, "
              f"{q['bytes_before'] / 1e6:.1f} -> {q['bytes_after'] / 1e6:.1f} MB", flush=True)
    shutil.copyfile(dm.minilm_dir() / "tokenizer.json", build / "tokenizer.json")

    rng = np.random.default_rng(0)
    cal = dm.caltech_split("test")
    cif = dm.folder_split(dm.DATASETS / "cifar10" / "test")
    photos = sorted(p for p in (dm.DATASETS / "photos").rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    images = [cal[i][0] for i in rng.choice(len(cal), 100, replace=False)] + \
             [cif[i][0] for i in rng.choice(len(cif), 100, replace=False)] + photos
    names = [dm.label_text(c) for c in dm.CIFAR_CLASSES + dm.caltech_classes()] + dt.imagenet_names()[::10]
    texts = [tpl.format(n) for i, n in enumerate(names) for tpl in dt.TEMPLATES[i % 7 : i % 7 + 1]] + names
    fid = fidelity(build, images, texts)
    print(f"[export] int8 fidelity {fid}", flush=True)

    files = {(t, p): (f"{t}{'.int8' if p == 'int8' else ''}.onnx",
                      sha256_file(build / f"{t}{'.int8' if p == 'int8' else ''}.onnx"))
             for t in ("visual", "textual") for p in ("fp32", "int8")}
    (build / "manifest.toml").write_text(manifest(ckpt, files, fid, ["fp32", "int8"]))
    if args.install:
        args.install.mkdir(parents=True, exist_ok=True)
        for t in ("visual", "textual"):
            shutil.copyfile(build / f"{t}.int8.onnx", args.install / f"{t}.int8.onnx")
        shutil.copyfile(build / "tokenizer.json", args.install / "tokenizer.json")
        (args.install / "manifest.toml").write_text(manifest(ckpt, files, fid, ["int8"]))
        (args.install / "held-out-classes.txt").write_text(
            "# Caltech-101 folders never used in training (either tower): the zero-shot test set.\n"
            + "".join(f"{c}\n" for c in dm.caltech_held_out()))
        size = sum(f.stat().st_size for f in args.install.iterdir())
        print(f"[export] installed int8 bundle in {args.install} ({size / 1e6:.1f} MB)")
    print(f"[export] {build} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
