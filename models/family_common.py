"""Helpers shared by the exporters of model families beyond CLIP (export_siglip.py,
export_mclip.py): the multilingual corpus, a SentencePiece model trained on it, JSON Lines."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import edgeclip_common as C


def corpus() -> list[str]:
    text = (C.MODELS_DIR / "corpus" / "multilingual.txt").read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line and not line.startswith("#")]


def train_spiece(out: Path, vocab_size: int, **special_ids: int) -> Path:
    """`out`/spiece.model: a SentencePiece Unigram model trained on the multilingual corpus,
    with the family's special pieces (`pad_id`, `eos_id`, `unk_id`, `bos_id`; -1 = none)."""
    import sentencepiece as spm
    work = out / "spiece-train"
    work.mkdir(parents=True, exist_ok=True)
    # Repeated so that the trainer's sentence sampling sees every line.
    (work / "corpus.txt").write_text("\n".join(corpus() * 3) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(work / "corpus.txt"), model_prefix=str(work / "spiece"), vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, pad_piece="<pad>", eos_piece="</s>",
        unk_piece="<unk>", bos_piece="<s>", hard_vocab_limit=False, num_threads=1, minloglevel=2,
        **special_ids)
    dst = out / "spiece.model"
    shutil.copyfile(work / "spiece.model", dst)
    shutil.rmtree(work)
    return dst


def jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


SCHEME = {
    "visual": "per-channel symmetric int8 weights (MatMul; output projection kept fp32), "
              "activations symmetric int8 per row",
    "textual": "dynamic per-channel symmetric int8 weights (MatMul; output projection kept fp32), "
               "uint8 activations",
}


def tower_toml(bundle: Path, tower: str, int8_notes: dict[str, str] | None = None) -> str:
    """The manifest's `[visual]` or `[textual]` table: its input and output names, both files with
    their sha256, and for int8 the quantisation scheme plus `int8_notes` (key: TOML value; a
    key starting with '#' is written as a comment line)."""
    io = {"visual": ("pixel_values", "image_embeds"), "textual": ("input_ids", "text_embeds")}[tower]
    lines = [f"[{tower}]", f'input = "{io[0]}"', f'output = "{io[1]}"']
    for precision, suffix in (("fp32", ".onnx"), ("int8", ".int8.onnx")):
        f = f"{tower}{suffix}"
        lines += [f"[{tower}.{precision}]", f'file = "{f}"', f'sha256 = "{C.sha256_file(bundle / f)}"']
    if int8_notes is not None:
        lines.append(f'scheme = "{SCHEME[tower]}"')
        lines += [k if k.startswith("#") else f"{k} = {v}" for k, v in int8_notes.items()]
    return "\n".join(lines) + "\n"


def fidelity_notes(fid: dict, tower: str, over: str) -> dict[str, str]:
    """`int8_notes` for [`tower_toml`]: cos(int8, fp32) min and mean from `fid`
    (`<tower>_cos_min`, `<tower>_cos_mean`) over `over` (what was embedded)."""
    kind = {"visual": "image", "textual": "text"}[tower]
    return {f"# cos(int8, fp32) of normalised {kind} embeddings over {over}": "",
            "cos_vs_fp32_min": f"{fid[tower + '_cos_min']:.6f}",
            "cos_vs_fp32_mean": f"{fid[tower + '_cos_mean']:.6f}"}


def prepare_dirs(name: str) -> tuple[Path, Path]:
    """$EDGECLIP_HOME/<name> and fixtures/<name>, created, their stamps removed (a failed export
    must not look finished)."""
    home = C.edgeclip_home()
    bundle, fixtures_dir = home / name, home / "fixtures" / name
    for d in (bundle, fixtures_dir):
        d.mkdir(parents=True, exist_ok=True)
        (d / ".stamp").unlink(missing_ok=True)
    return bundle, fixtures_dir


def fresh_work_dir(bundle: Path) -> Path:
    """An empty <bundle>/work for intermediate files."""
    work = bundle / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return work


TOWER_FILES = ("visual.onnx", "visual.int8.onnx", "textual.onnx", "textual.int8.onnx")


def export_towers(visual, textual, px, ids, bundle: Path, session, quantise_visual=None) -> tuple[dict, dict]:
    """visual/textual .onnx from the torch modules and their .int8.onnx (the visual one by
    `quantise_visual(src, dst)`, default symmetric int8 per row), all in standard-domain ops;
    returns (onnxruntime sessions made by `session(path)`, op histograms), by file name."""
    from export_clip import export_onnx, op_histogram, quantise
    export_onnx(visual, px, bundle / "visual.onnx", "pixel_values", "image_embeds")
    export_onnx(textual, ids, bundle / "textual.onnx", "input_ids", "text_embeds")
    if quantise_visual is None:
        quantise(bundle / "visual.onnx", bundle / "visual.int8.onnx", symmetric_rows=True)
    else:
        quantise_visual(bundle / "visual.onnx", bundle / "visual.int8.onnx")
    quantise(bundle / "textual.onnx", bundle / "textual.int8.onnx", symmetric_rows=False)
    hists = {}
    for f in TOWER_FILES:
        hists[f] = op_histogram(bundle / f)
        assert all("::" not in k for k in hists[f]), f"{f} uses a non-standard domain op"
    return {f: session(bundle / f) for f in TOWER_FILES}, hists


def write_toml(path: Path, text: str) -> None:
    """Writes a manifest after checking that it parses."""
    import tomllib
    tomllib.loads(text)
    path.write_text(text, encoding="utf-8")
