"""Stage 2 of the edgeclip-demo recipe: align EfficientNet-Lite0 with all-MiniLM-L6-v2.

Image embedding (384-d, the MiniLM space):
    f, logits = EfficientNet-Lite0 with its last MBConv block and head fine-tuned (or frozen)
    sem       = softmax(logits / tau) @ T          T: MiniLM embeddings of the 1000 ImageNet names
    z         = normalize(W_f f + W_s sem + b)     W_s starts at identity, W_f at zero
Text embedding:
    u         = normalize(t + A t)                 t: MiniLM (mean pooled, normalised), A starts at 0

`sem` is the "semantic embedding combination" route: on its own it already maps an image into
MiniLM space, which is what lets labels never seen in training work. The trained terms fix what it
gets wrong on these photos (upscaled 32 px CIFAR images, loose ImageNet names). The loss is CLIP's
softmax over cosine × logit scale, taken per data set over that data set's training classes (CIFAR's
"automobile" and Caltech's "car" never compete). Caltech-101 classes from
`demo_model.caltech_held_out()` are never trained on, in either tower.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import demo_model as dm
from demo_features import TRUNK_BLOCKS
from edgeclip_common import open_clip_metadata

# The runtime's default prompt ensemble (labels/imagenet7.txt): what a plain label line expands to.
TEMPLATES = [l for l in (Path(__file__).resolve().parent.parent / "src" / "labels" / "imagenet7.txt")
             .read_text().split("\n") if l]
CONTEXT_LENGTH = 32


def work_dir() -> Path:
    return dm.edgeclip_home() / "work" / "edgeclip-demo"


def load_split(name: str) -> dict:
    z = np.load(work_dir() / "features" / f"{name}.npz")
    return {k: z[k] for k in z.files}


def imagenet_names() -> list[str]:
    return list(open_clip_metadata().IMAGENET_CLASSNAMES)


def text_bank(texts: list[str]) -> dict[str, torch.Tensor]:
    """MiniLM embedding (normalised) of every `template.format(text)`, cached on disk."""
    path = work_dir() / "text_bank.pt"
    bank = torch.load(path) if path.exists() else {}
    prompts = sorted({tpl.format(t) for t in texts for tpl in TEMPLATES} - set(bank))
    if prompts:
        model, tok = dm.MiniLM(), dm.minilm_tokenizer()
        t0 = time.time()
        emb = dm.embed_texts(model, tok, prompts, CONTEXT_LENGTH)
        print(f"[train] embedded {len(prompts)} prompts in {time.time() - t0:.0f} s", flush=True)
        bank.update(zip(prompts, emb))
        torch.save(bank, path)
    return bank


def prompt_stack(bank, names: list[str]) -> torch.Tensor:
    """[len(names), templates, 384]."""
    return torch.stack([torch.stack([bank[tpl.format(n)] for tpl in TEMPLATES]) for n in names])


class ImageHead(nn.Module):
    """Everything after the cached trunk: last block + head (optional fine-tune), fc, projection."""

    def __init__(self, backbone: dm.EfficientNetLite0, imagenet_text: torch.Tensor, dim: int,
                 tau: float, finetune: bool, hidden: int = 0):
        super().__init__()
        self.finetune = finetune
        self.backbone = backbone
        for p in backbone.parameters():
            p.requires_grad_(False)
        if finetune:
            for m in [*backbone._blocks[TRUNK_BLOCKS:], backbone._conv_head, backbone._bn1]:
                for p in m.parameters():
                    p.requires_grad_(True)
        self.register_buffer("imagenet_text", imagenet_text)
        self.tau = tau
        if hidden:
            self.w_f = nn.Sequential(nn.Linear(1280, hidden), nn.GELU(), nn.Linear(hidden, dim))
        else:
            self.w_f = nn.Sequential(nn.Linear(1280, dim))
        nn.init.zeros_(self.w_f[-1].weight)  # start from the semantic route alone
        nn.init.zeros_(self.w_f[-1].bias)
        self.w_s = nn.Linear(imagenet_text.shape[1], dim, bias=False)
        nn.init.eye_(self.w_s.weight)

    def from_features(self, feats, logits):
        sem = (logits / self.tau).softmax(-1) @ self.imagenet_text
        return F.normalize(self.w_f(feats) + self.w_s(sem), dim=-1)

    def forward(self, h):
        feats, logits = self.backbone.top(h, TRUNK_BLOCKS)
        return self.from_features(feats, logits)


class TextHead(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.a = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.a.weight)

    def forward(self, t):
        return F.normalize(t + self.a(t), dim=-1)


def class_embeddings(text_head: TextHead, prompts: torch.Tensor) -> torch.Tensor:
    """The runtime's prompt ensemble: mean of the normalised per-template embeddings, renormalised."""
    return F.normalize(text_head(prompts).mean(1), dim=-1)


@torch.no_grad()
def accuracy(head, text_head, split, names, keep=None, batch=512) -> float:
    cls = class_embeddings(text_head, split["prompts"][names])
    idx = np.arange(len(split["labels"])) if keep is None else keep
    correct = 0
    for i in range(0, len(idx), batch):
        j = idx[i : i + batch]
        z = embed_split(head, split, j)
        pred = (z @ cls.T).argmax(-1)
        correct += int((np.array(names)[pred.numpy()] == split["labels"][j]).sum())
    return correct / max(1, len(idx))


def embed_split(head, split, j):
    if head.finetune:
        return head(torch.from_numpy(split["h"][j].astype(np.float32)))
    return head.from_features(torch.from_numpy(split["feats"][j].astype(np.float32)),
                              torch.from_numpy(split["logits"][j].astype(np.float32)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-backbone", type=float, default=1e-4)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--text-wd", type=float, default=1e-2)
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--caltech-repeat", type=int, default=4)
    ap.add_argument("--finetune", action="store_true")
    ap.add_argument("--hidden", type=int, default=0, help="MLP hidden width of the feature branch (0: linear)")
    ap.add_argument("--train-text", action="store_true")
    ap.add_argument("--distill", type=float, default=0.0,
                    help="share of the target given to the pretrained ImageNet probabilities over "
                         "the 1000 ImageNet names (0: data-set classes only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(2)

    splits = {n: load_split(n) for n in ("cifar-train", "caltech-train", "cifar-test", "caltech-test")}
    in_names = imagenet_names()
    cifar_names = list(splits["cifar-train"]["classes"])
    caltech_all = dm.caltech_classes()
    held = dm.caltech_held_out()
    bank = text_bank([dm.label_text(c) for c in cifar_names + caltech_all] + in_names)
    in_prompts = prompt_stack(bank, in_names)
    in_text = F.normalize(in_prompts.mean(1), dim=-1)
    for s in splits.values():
        # class folder -> [templates, 384] prompt embeddings, looked up by name
        s["prompts"] = _PromptTable(bank)
        s["labels"] = np.array(s["classes"])[s["labels"]]

    backbone = dm.load_efficientnet_lite0()
    head = ImageHead(backbone, in_text, in_text.shape[1], args.tau, args.finetune, args.hidden)
    text_head = TextHead(in_text.shape[1])
    logit_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
    groups = [{"params": [*head.w_f.parameters(), *head.w_s.parameters(), logit_scale],
               "lr": args.lr, "weight_decay": args.wd}]
    if args.train_text:
        groups.append({"params": text_head.parameters(), "lr": args.lr, "weight_decay": args.text_wd})
    if args.finetune:
        groups.append({"params": [p for p in backbone.parameters() if p.requires_grad],
                       "lr": args.lr_backbone, "weight_decay": args.wd})
    opt = torch.optim.AdamW(groups)

    train_sets = []
    for name, repeat in (("cifar-train", 1), ("caltech-train", args.caltech_repeat)):
        s = splits[name]
        names = [c for c in s["classes"] if c not in held]
        keep = np.flatnonzero(np.isin(s["labels"], names))  # held-out classes never reach training
        target = np.searchsorted(names, s["labels"])
        train_sets.append((s, names, np.tile(keep, repeat), target))
    steps_per_epoch = sum(len(ix) for _, _, ix, _ in train_sets) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups],
                                                total_steps=args.epochs * steps_per_epoch, pct_start=0.1)

    def report(tag):
        head.eval()
        if args.finetune:
            backbone.eval()
        cal = splits["caltech-test"]
        seen = np.flatnonzero(~np.isin(cal["labels"], held))
        unseen = np.flatnonzero(np.isin(cal["labels"], held))
        r = {
            "cifar10": accuracy(head, text_head, splits["cifar-test"], cifar_names),
            "caltech_seen_101way": accuracy(head, text_head, cal, caltech_all, seen),
            "caltech_all_101way": accuracy(head, text_head, cal, caltech_all),
            "caltech_heldout_20way": accuracy(head, text_head, cal, held, unseen),
            "caltech_heldout_101way": accuracy(head, text_head, cal, caltech_all, unseen),
        }
        print(f"[train] {tag}: " + " ".join(f"{k}={v * 100:.1f}" for k, v in r.items()), flush=True)
        return r

    report("before training (semantic route only)")
    in_cls = None  # ImageNet-name class embeddings for --distill (constant unless --train-text)
    for epoch in range(args.epochs):
        head.train()
        if args.finetune:
            backbone.train()
            backbone._bn0.eval()
        # interleave batches of both data sets in random order
        batches = []
        for k, (s, names, ix, target) in enumerate(train_sets):
            perm = rng.permutation(ix)
            batches += [(k, perm[i : i + args.batch]) for i in range(0, len(perm) - args.batch + 1, args.batch)]
        rng.shuffle(batches)
        t0, total = time.time(), 0.0
        for k, j in batches:
            s, names, _, target = train_sets[k]
            z = embed_split(head, s, j)
            cls = class_embeddings(text_head, s["prompts"][names])
            onehot = F.one_hot(torch.from_numpy(target[j]).long(), len(names)).float()
            if args.distill > 0:
                # The 1000 ImageNet names join the candidates, and the pretrained network's own
                # ImageNet probabilities share the target: images stay near every text that
                # describes them, not only near this data set's few class names, which is what
                # keeps labels nobody trained on usable next to trained ones.
                if args.train_text or in_cls is None:
                    with torch.set_grad_enabled(args.train_text):
                        in_cls = class_embeddings(text_head, in_prompts)
                cls = torch.cat([cls, in_cls])
                teacher = torch.from_numpy(s["logits"][j].astype(np.float32)).softmax(-1)
                onehot = torch.cat([(1 - args.distill) * onehot, args.distill * teacher], dim=1)
            logits = logit_scale.exp().clamp(max=100) * z @ cls.T
            loss = -(onehot * logits.log_softmax(-1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss)
        print(f"[train] epoch {epoch + 1}/{args.epochs} loss {total / len(batches):.3f} "
              f"scale {float(logit_scale.exp()):.1f} {time.time() - t0:.0f} s", flush=True)
    result = report("after training")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"backbone": backbone.state_dict(), "w_f": head.w_f.state_dict(),
                    "w_s": head.w_s.state_dict(), "text_a": text_head.a.state_dict(),
                    "imagenet_text": in_text, "tau": args.tau,
                    "logit_scale": float(logit_scale.exp().clamp(max=100)),
                    "args": vars(args) | {"out": str(args.out)}, "accuracy": result}, args.out)
        print(f"[train] wrote {args.out}")
    return 0


class _PromptTable:
    """Maps a list of class folder names to their stacked prompt embeddings (cached per list)."""

    def __init__(self, bank):
        self.bank = bank
        self.cache: dict[tuple, torch.Tensor] = {}

    def __getitem__(self, names):
        key = tuple(names)
        if key not in self.cache:
            self.cache[key] = prompt_stack(self.bank, [dm.label_text(n) for n in names])
        return self.cache[key]


if __name__ == "__main__":
    sys.exit(main())
