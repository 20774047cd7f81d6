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
