"""Stage 1 of the edgeclip-demo recipe: run the frozen EfficientNet-Lite0 trunk once over every
training and evaluation image and cache what the trainable part needs.

For each split it writes $EDGECLIP_HOME/work/edgeclip-demo/features/<split>.npz with
  h      float16 [N, 192, 7, 7]  output of block 14 (input of the last MBConv block, fine-tuned later)
  feats  float16 [N, 1280]       pooled head features of the pretrained network
  logits float16 [N, 1000]       pretrained ImageNet logits
  labels int16   [N]             index into `classes`
plus `classes` and `paths`. onnxruntime runs the trunk: torch's depthwise convolutions run at
~17 images/s on 2 cores, onnxruntime at ~90.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

import demo_model as dm

SPLITS = ("caltech-train", "caltech-test", "cifar-train", "cifar-test")
TRUNK_BLOCKS = 15


def split_items(split: str) -> list[tuple[Path, str]]:
    if split == "caltech-train":  # all classes; demo_train.py leaves the held-out ones out
        return dm.caltech_split("train")
    if split == "caltech-test":
        return dm.caltech_split("test")
    if split == "cifar-train":
        return dm.folder_split(dm.cifar_train_dir())
    if split == "cifar-test":
        return dm.folder_split(dm.DATASETS / "cifar10" / "test")
    raise SystemExit(f"unknown split {split}")


class Trunk(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        h = self.m.trunk(x, TRUNK_BLOCKS)
        feats, logits = self.m.top(h, TRUNK_BLOCKS)
        return h, feats, logits


def trunk_session(work: Path):
    import onnxruntime as ort

    path = work / "trunk.onnx"
    if not path.exists():
        model = Trunk(dm.load_efficientnet_lite0()).eval()
        torch.onnx.export(model, (torch.zeros(1, 3, dm.IMAGE_SIZE, dm.IMAGE_SIZE),), str(path),
                          input_names=["x"], output_names=["h", "feats", "logits"],
                          opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def extract(split: str, work: Path) -> None:
    out = work / "features" / f"{split}.npz"
    if out.exists():
        print(f"[features] {out} exists", flush=True)
        return
    items = split_items(split)
    classes = sorted({c for _, c in items})
    index = {c: i for i, c in enumerate(classes)}
    sess = trunk_session(work)
    n = len(items)
    h = np.zeros((n, 192, 7, 7), np.float16)
    feats = np.zeros((n, 1280), np.float16)
    logits = np.zeros((n, 1000), np.float16)
    t0 = time.time()
    # Decoding/resizing of the next image overlaps inference (PIL and onnxruntime release the
    # GIL); one image ahead only (Executor.map would decode the whole split up front).
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(dm.preprocess, items[0][0])
        for i in range(n):
            x = ahead.result()
            if i + 1 < n:
                ahead = pool.submit(dm.preprocess, items[i + 1][0])
            hh, ff, ll = sess.run(None, {"x": x[None]})
            h[i], feats[i], logits[i] = hh[0], ff[0], ll[0]
            if i % 2000 == 0 or i == n - 1:
                print(f"[features] {split} {i + 1}/{n} {(i + 1) / (time.time() - t0):.0f} img/s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, h=h, feats=feats, logits=logits,
             labels=np.array([index[c] for _, c in items], np.int16),
             classes=np.array(classes), paths=np.array([str(p) for p, _ in items]))
    tmp.rename(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("splits", nargs="*", default=list(SPLITS))
    args = ap.parse_args()
    work = dm.edgeclip_home() / "work" / "edgeclip-demo"
    work.mkdir(parents=True, exist_ok=True)
    for s in args.splits:
        extract(s, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
