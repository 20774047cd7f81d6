#!/usr/bin/env python3
"""Side by side: edgeclip (native ViT and tract backends) and onnxruntime on the same ONNX
graphs, same threads.

Prints, per tower and precision, the median latency of both and their ratio
(edgeclip / onnxruntime: below 1 means edgeclip is faster). Both sides time a batch-1
run from an already preprocessed input, after warm-up, in the same process layout
(edgeclip's own `bench` command; onnxruntime with intra_op_num_threads = threads,
inter_op_num_threads = 1, all graph optimisations on).

Run through scripts/compare-onnxruntime, which builds edgeclip and picks the venv.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort


def home() -> Path:
    h = os.environ.get("EDGECLIP_HOME")
    return Path(h) if h else Path.home() / ".cache" / "edgeclip"


_sessions: dict = {}


def ort_median_ms(path: Path, feed: dict, threads: int, iterations: int) -> float:
    """Median of `iterations` runs; the session is built once per (file, threads)."""
    key = (str(path), threads)
    if key not in _sessions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        _sessions[key] = (sess, names)
    sess, names = _sessions[key]
    feed = {k: v for k, v in feed.items() if k in names}
    for _ in range(3):
        sess.run(None, feed)
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edgeclip", default="target/release/edgeclip")
    ap.add_argument("--model", default="clip-vit-b-32-seeded")
    ap.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1])
    ap.add_argument("--precision", nargs="+", default=["fp32", "int8"])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3,
                    help="edgeclip and onnxruntime take turns this many times; medians and the ratio are "
                         "taken per round (so a drift in the machine's speed hits both sides) and the "
                         "median over rounds is printed")
    ap.add_argument("--backend", nargs="+", default=["native", "tract"],
                    help="edgeclip image-tower backends to time (the text tower always runs on tract)")
    args = ap.parse_args()

    bundle = home() / args.model
    manifest = tomllib.loads((bundle / "manifest.toml").read_text())
    size = manifest["preprocess"]["image_size"]
    ctx = manifest["tokenizer"]["context_length"]
    # The same deterministic inputs edgeclip's bench uses (values do not change the cost).
    pixels = (((np.arange(3 * size * size) % 251) / 125.0) - 1.0).astype(np.float32).reshape(1, 3, size, size)
    ids = np.zeros((1, ctx), dtype=np.int64)
    ids[0, :10] = [49406, 320, 1125, 539, 518, 3638, 7644, 11607, 269, 49407]
    image_feed = {manifest["visual"].get("input", "pixel_values"): pixels}
    text_feed = {manifest["textual"].get("input", "input_ids"): ids, "attention_mask": (ids != 0).astype(np.int64)}

    # onnxruntime's own int8 of the same model: its dynamic quantisation (uint8 activations),
    # which its x86 kernels run much faster than the bundle's int8 x int8 graph. The ratio is
    # taken against the faster of the two: the bar a user comparing runtimes would see.
    ort_own: dict[str, Path] = {}
    tmp = tempfile.TemporaryDirectory()
    if "int8" in args.precision:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        for tower in ("visual", "textual"):
            dst = Path(tmp.name) / f"{tower}.ort-int8.onnx"
            quantize_dynamic(str(bundle / manifest[tower]["fp32"]["file"]), str(dst), per_channel=True,
                             weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                             extra_options={"WeightSymmetric": True, "MatMulConstBOnly": True})
            ort_own[tower] = dst

    print(f"model {args.model}, onnxruntime {ort.__version__}, {args.rounds} rounds of {args.iterations} runs "
          "each side, medians in ms")
    print("ort = onnxruntime on the same file; ort-own = onnxruntime on its own uint8 quantisation "
          "of the fp32 graph (int8 rows); ratio = edgeclip / the faster of the two, per round, median over rounds")
    print(f"{'tower':<8}{'backend':<8}{'precision':<11}{'threads':>7}{'edgeclip':>11}{'ort':>9}{'ort-own':>9}"
          f"{'ratio':>8}  ratio per round")
    med = statistics.median
    for threads in args.threads:
        for precision in args.precision:
            # rows[(tower, backend)] = per-round (edgeclip ms, ort ms, ort-own ms or None)
            rows: dict = {}
            for _ in range(args.rounds):
                runs = {}
                for backend in args.backend:
                    out = subprocess.run(
                        [args.edgeclip, "bench", "--model", args.model, "--precision", precision,
                         "--threads", str(threads), "--iterations", str(args.iterations), "--no-cache",
                         "--backend", backend, "--json"],
                        check=True, capture_output=True, text=True,
                    ).stdout
                    runs[backend] = json.loads(out)
                for tower, feed, key in (("visual", image_feed, "image_ms"), ("textual", text_feed, "text_ms")):
                    path = bundle / manifest[tower][precision]["file"]
                    o = ort_median_ms(path, feed, threads, args.iterations)
                    own = ort_median_ms(ort_own[tower], feed, threads, args.iterations) if precision == "int8" else None
                    # The text tower always runs on tract: one row is enough.
                    shown = runs.items() if tower == "visual" else list(runs.items())[:1]
                    for backend, ec in shown:
                        label = ec.get("backend", backend) if tower == "visual" else "tract"
                        rows.setdefault((tower, label), []).append((ec[key]["p50"], o, own))
            for (tower, label), rs in rows.items():
                e, o = med([r[0] for r in rs]), med([r[1] for r in rs])
                owns = [r[2] for r in rs if r[2] is not None]
                own = med(owns) if owns else None
                ratios = [r[0] / min(x for x in r[1:] if x is not None) for r in rs]
                own_text = f"{own:>9.1f}" if own is not None else f"{'-':>9}"
                per_round = " ".join(f"{x:.2f}" for x in ratios)
                print(f"{tower:<8}{label:<8}{precision:<11}{threads:>7}{e:>11.1f}{o:>9.1f}{own_text}"
                      f"{med(ratios):>8.2f}  {per_round}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
