"""Model benchmark: encoder path vs bare transformers forward, fused bank vs loop, fp32 vs bf16.

Real-size HuBERT-Base and -Large configurations with random weights (speed does not depend
on the weights), saved to a temporary folder and loaded through emomon's own loading path.

    python benchmarks/bench_model.py                 # full run, updates docs/benchmarks.md
    python benchmarks/bench_model.py --quick         # tiny sizes, seconds; checks the script

Writes JSON to benchmarks/results/ and the tables between the bench_model markers in
docs/benchmarks.md. Numbers are medians over repeats, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402
from benchmarks.report import cpu_name, table, update_doc  # noqa: E402
from emomon.model.audio import SAMPLE_RATE  # noqa: E402
from emomon.model.encoder import load_encoder  # noqa: E402
from emomon.model.regressor import RegressorBank  # noqa: E402
from emomon.model.specs import EncoderSpec, RegressorSpec  # noqa: E402

GOAL_ENCODER_OVERHEAD = 0.05  # the project's encoder path within 5 % of a bare forward
GOAL_BANK_SPEEDUP = 3.0  # fused bank at least 3x faster than a loop on a 3 s segment
GOAL_SHARE_DIFF = 0.01  # every compute dtype keeps the shares within this of float32
EMOTIONS = 9


def hubert_config(size: str):
    from transformers import HubertConfig

    if size == "large":  # facebook/hubert-large-ll60k
        return HubertConfig(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
            feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
        )  # fmt: skip
    if size == "base":  # facebook/hubert-base-ls960
        return HubertConfig()
    return HubertConfig(  # "tiny", for --quick
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip


def save_random(size: str, folder: Path) -> Path:
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    cfg = hubert_config(size)
    torch.manual_seed(0)
    HubertModel(cfg).save_pretrained(folder)
    layer = cfg.feat_extract_norm == "layer"
    Wav2Vec2FeatureExtractor(do_normalize=layer, return_attention_mask=layer).save_pretrained(folder)
    return folder


def median_ms(fn, repeats: int) -> float:
    return report.median_ms(fn, repeats, torch.cuda.synchronize if torch.cuda.is_available() else None)


def paired_ms(fa, fb, repeats: int) -> tuple[float, float]:
    """Medians of two functions timed alternately, so that drift hits both alike."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, acc in ((fa, ta), (fb, tb)):
            t = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            acc.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ta), statistics.median(tb)


def bench_encoders(
    sizes: list[str], seconds: list[float], repeats: int, device: str, tmp: Path, bf16_seconds: float
) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for size in sizes:
        folder = save_random(size, tmp / size)
        enc = load_encoder(EncoderSpec.paper(name=str(folder)), device, "float32")
        bf16 = load_encoder(EncoderSpec.paper(name=str(folder)), device, "bfloat16")
        params = sum(p.numel() for p in enc.model.parameters())
        for s in seconds:
            audio = (0.1 * rng.standard_normal(int(s * SAMPLE_RATE))).astype(np.float32)
            wave = torch.from_numpy(audio)[None].to(enc.device)

            def bare():
                with torch.inference_mode():
                    return enc.model(wave).last_hidden_state

            ours_ms, bare_ms = paired_ms(lambda: enc.encode([audio]), bare, repeats)
            row = dict(
                encoder=f"hubert-{size}", params_m=round(params / 1e6, 1), seconds=s,
                bare_ms=round(bare_ms, 1), emomon_ms=round(ours_ms, 1),
                overhead_pct=round(100 * (ours_ms / bare_ms - 1), 1), rtf=round(ours_ms / 1e3 / s, 3),
                bf16_ms="", bf16_rtf="", bf16_cosine="",
            )  # fmt: skip
            if s == bf16_seconds:  # bf16 once per encoder: without native kernels it is very slow
                bf16_ms = median_ms(lambda: bf16.encode([audio]), max(1, repeats // 2))
                a = enc.encode([audio]).features.flatten()
                b = bf16.encode([audio]).features.flatten()
                cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
                row.update(bf16_ms=round(bf16_ms, 1), bf16_rtf=round(bf16_ms / 1e3 / s, 3), bf16_cosine=round(cos, 5))
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def bench_dtypes(sizes: list[str], seconds: float, repeats: int, device: str, tmp: Path) -> list[dict]:
    """[runtime] dtype = "auto" (and int8) against float32 on this machine: time per segment,
    embedding cosine to float32, and the largest share difference through a random softmax
    head (pooled, as the default's) on real Emo-DB clips when ../shared holds them."""
    from emomon.model.bundle import new_bank
    from emomon.model.compute import choose_dtype

    rng = np.random.default_rng(0)
    clips = _real_clips(seconds) or [(0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)]
    rows = []
    for size in sizes:
        folder = tmp / size if (tmp / size).is_dir() else save_random(size, tmp / size)
        ref = load_encoder(EncoderSpec.paper(name=str(folder)), device, "float32")
        torch.manual_seed(0)
        spec = RegressorSpec.paper(arch=3, head="shared", output="softmax", pooling=("mean", "std"), ff_dims=(64,))
        bank = new_bank(spec, tuple(f"e{i}" for i in range(EMOTIONS)), ref.dim, 0).to(ref.device).eval()

        def shares(enc):
            emb = enc.encode(clips)
            x = (emb.features - emb.features.mean()) / emb.features.std()
            with torch.inference_mode():
                return bank(x, emb.lengths)[0].float().cpu(), emb.features

        ref_shares, ref_feats = shares(ref)
        fp32_ms = median_ms(lambda: ref.encode(clips[:1]), repeats)
        extra = ("int8",) if device == "cpu" and choose_dtype("auto", device)[0] != "int8" else ()
        for dtype in ("auto", *extra):
            chosen, _ = choose_dtype(dtype, device)
            enc = ref if chosen == "float32" else load_encoder(EncoderSpec.paper(name=str(folder)), device, dtype)
            ms = fp32_ms if enc is ref else median_ms(lambda: enc.encode(clips[:1]), repeats)
            other_shares, other_feats = shares(enc)
            cos = float(torch.nn.functional.cosine_similarity(ref_feats.flatten(), other_feats.flatten(), dim=0))
            row = dict(
                encoder=f"hubert-{size}", seconds=seconds, dtype=dtype, chosen=chosen, fp32_ms=round(fp32_ms, 1),
                ms=round(ms, 1), speedup=round(fp32_ms / ms, 2), cosine=round(cos, 5),
                max_share_diff=round(float((ref_shares - other_shares).abs().max()), 4), clips=len(clips),
            )  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _real_clips(seconds: float) -> list[np.ndarray]:
    """Up to four Emo-DB sentences cut to `seconds`, when ../shared/data/emodb is there."""
    folder = ROOT.parent / "shared" / "data" / "emodb" / "wav"
    if not folder.is_dir():
        return []
    from emomon.model.audio import read_audio

    out = [read_audio(f)[: int(seconds * SAMPLE_RATE)] for f in sorted(folder.glob("*.wav"))[:40:10]]
    return [a for a in out if len(a) >= SAMPLE_RATE // 2]


def render_dtypes(result: dict) -> str:
    m = result["machine"]
    rows = result["dtypes"]
    ok = all(r["max_share_diff"] <= GOAL_SHARE_DIFF for r in rows if r["dtype"] == "auto")
    return (
        f"Run {m['date']} on {m['cpu']} ({m['threads']} threads), torch {m['torch']}, device `{m['device']}`, "
        f"native bf16 kernels: {'yes' if m['fast_bf16'] else 'no'}.\n"
        f"Command: `python benchmarks/bench_model.py{result['args']}`. One segment, medians in ms; shares through "
        f"a random pooled softmax head on {rows[0]['clips'] if rows else 0} real Emo-DB clips.\n\n"
        + table(
            rows,
            [
                ("encoder", "encoder"),
                ("seconds", "audio (s)"),
                ("dtype", "setting"),
                ("chosen", "runs as"),
                ("fp32_ms", "float32"),
                ("ms", "setting (ms)"),
                ("speedup", "speed-up"),
                ("cosine", "cosine to fp32"),
                ("max_share_diff", "max share diff"),
            ],
        )  # fmt: skip
        + f"\nGoal: `auto` keeps every share within {GOAL_SHARE_DIFF} of float32: **{'met' if ok else 'not met'}**.\n"
    )


def bench_bank(cases: list[tuple[str, int, float, float, int]], repeats: int, device: str, spec: RegressorSpec):
    """Fused bank vs a Python loop over the same nine stock regressors."""
    rows = []
    for name, dim, hop_s, seconds, batch in cases:
        torch.manual_seed(0)
        bank = RegressorBank(spec, dim, EMOTIONS).to(device).eval()
        loop = [bank.regressor(m).to(device).eval() for m in range(EMOTIONS)]
        T = int(seconds / hop_s)
        x = torch.randn(batch, T, dim, device=device)
        n = torch.full((batch,), T, device=device)
        with torch.inference_mode():
            diff = (bank(x, n)[0] - torch.cat([r(x, n)[0] for r in loop], 1)).abs().max().item()
            fused_ms, loop_ms = paired_ms(lambda: bank(x, n), lambda: [r(x, n) for r in loop], repeats)
        row = dict(
            features=name, dim=dim, seconds=seconds, frames=T, batch=batch, arch=spec.arch,
            fused_ms=round(fused_ms, 1), loop_ms=round(loop_ms, 1),
            speedup=round(loop_ms / fused_ms, 2), max_abs_diff=diff,
        )  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def machine(device: str) -> dict:
    cpu = cpu_name()
    import transformers

    from emomon.model.compute import fast_bf16

    info = dict(
        cpu=cpu, threads=torch.get_num_threads(), torch=torch.__version__, fast_bf16=fast_bf16(device),
        transformers=transformers.__version__, python=platform.python_version(), device=device,
        date=datetime.now(UTC).strftime("%Y-%m-%d"),
    )  # fmt: skip
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def render(result: dict) -> str:
    m = result["machine"]
    enc_goal = all(r["overhead_pct"] <= 100 * GOAL_ENCODER_OVERHEAD for r in result["encoders"])
    three = [r for r in result["bank"] if r["seconds"] == 3.0 and r["batch"] == 1]
    bank_goal = all(r["speedup"] >= GOAL_BANK_SPEEDUP for r in three)
    return (
        f"Run {m['date']} on {m['cpu']} ({m['threads']} threads"
        + (f", GPU {m['gpu']}" if "gpu" in m else "")
        + f"), torch {m['torch']}, transformers {m['transformers']}, device `{m['device']}`, "
        f"native bf16 kernels: {'yes' if m['fast_bf16'] else 'no'}.\n"
        f"Command: `python benchmarks/bench_model.py{result['args']}`. Medians in ms.\n\n"
        "**Encoder path** (`Encoder.encode` on one segment: numpy in, normalisation, padding, "
        "float32 features out) vs a bare `model(wave).last_hidden_state`, timed alternately; "
        "bf16 = weights and compute in bfloat16 (on the 3 s segment), with the cosine similarity "
        "of its embeddings to fp32.\n\n"
        + table(
            result["encoders"],
            [
                ("encoder", "encoder"),
                ("params_m", "params (M)"),
                ("seconds", "audio (s)"),
                ("bare_ms", "bare fp32"),
                ("emomon_ms", "emomon fp32"),
                ("overhead_pct", "overhead %"),
                ("rtf", "RTF fp32"),
                ("bf16_ms", "emomon bf16"),
                ("bf16_rtf", "RTF bf16"),
                ("bf16_cosine", "cosine bf16/fp32"),
            ],
        )  # fmt: skip
        + f"\nGoal: overhead <= {100 * GOAL_ENCODER_OVERHEAD:.0f} %: "
        f"**{'met' if enc_goal else 'not met'}**.\n\n"
        "**Regressor bank**: nine Architecture-2 regressors (paper sizes) as one fused "
        "`RegressorBank` call vs a Python loop over nine stock `Regressor` modules with the "
        "same weights (max abs difference shown).\n\n"
        + table(
            result["bank"],
            [
                ("features", "features"),
                ("dim", "D"),
                ("seconds", "audio (s)"),
                ("frames", "frames"),
                ("batch", "batch"),
                ("fused_ms", "fused"),
                ("loop_ms", "loop"),
                ("speedup", "speed-up"),
                ("max_abs_diff", "max abs diff"),
            ],
        )  # fmt: skip
        + f"\nGoal: fused >= {GOAL_BANK_SPEEDUP:.0f}x the loop on a 3 s segment: "
        f"**{'met' if bank_goal else 'not met'}**.\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and one repeat: checks the script")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--only", choices=["dtype"], help="run only the dtype comparison (auto and int8 vs float32)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    dtype_sizes = ["tiny"] if args.quick else ["base", "large"]
    with tempfile.TemporaryDirectory() as tmp:
        dtypes = bench_dtypes(dtype_sizes, 3.0, repeats, args.device, Path(tmp))
        if args.only == "dtype":
            result = dict(machine=machine(args.device), dtypes=dtypes,
                          args="".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])))  # fmt: skip
            args.out.mkdir(parents=True, exist_ok=True)
            name = (
                "bench_model_dtype_quick.json" if args.quick else f"bench_model_dtype_{args.device.split(':')[0]}.json"
            )
            (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
            body = render_dtypes(result)
            print(body)
            if not args.quick:
                update_doc(args.doc, body, "bench_model_dtype", "Compute dtype: auto against float32")
            return 0
        if args.quick:
            encoders = bench_encoders(["tiny"], [1.0], repeats, args.device, Path(tmp), 1.0)
            spec = RegressorSpec.paper(conv_channels=(16, 12, 8), lstm_hidden=8, ff_dims=(8, 4, 2))
            bank = bench_bank([("tiny", 32, 0.02, 3.0, 1)], repeats, args.device, spec)
        else:
            encoders = bench_encoders(["base", "large"], [1.0, 3.0, 10.0], repeats, args.device, Path(tmp), 3.0)
            cases = [
                ("HuBERT-Large", 1024, 0.02, 1.0, 1),
                ("HuBERT-Large", 1024, 0.02, 3.0, 1),
                ("HuBERT-Large", 1024, 0.02, 10.0, 1),
                ("HuBERT-Large", 1024, 0.02, 3.0, 8),
                ("HuBERT-Base", 768, 0.02, 3.0, 1),
                ("eGeMAPS", 25, 0.01, 3.0, 1),
            ]
            bank = bench_bank(cases, repeats, args.device, RegressorSpec.paper(arch=2))
    result = dict(
        machine=machine(args.device), encoders=encoders, bank=bank, dtypes=dtypes,
        args="".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    name = "bench_model_quick.json" if args.quick else f"bench_model_{args.device.split(':')[0]}.json"
    (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
    body = render(result)
    print(body)
    if not args.quick:
        update_doc(args.doc, body, "bench_model", "Model")
        update_doc(args.doc, render_dtypes(result), "bench_model_dtype", "Compute dtype: auto against float32")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
