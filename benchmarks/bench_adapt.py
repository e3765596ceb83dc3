"""What adapting Whisper base's first layers costs to train on this CPU (issue 39, section 2).

One training step (forward, backward, Adam) on a batch of 3 s clips through the part of
Whisper base the default model reads (the convolutions and layers 1-3), with a pooled
linear head on layer 3, timed per clip:

    lora          LoRA (model/adapter.py) on layers 1-3's attention and feed-forward, rank 16
    layer3        layer 3 fine-tuned on cached layer-2 outputs (the convolutions and layers 1-2 not run)
    layers1-3     layers 1-3 fine-tuned end to end (the convolutions frozen)

in float32 and under bfloat16 autocast, on one and on two threads. The weights are the
pinned Whisper base (speed does not depend on them; the inputs are random log-mel frames).
Writes benchmarks/results/bench_adapt.json and the "Adapting the encoder" section of
docs/benchmarks.md (not with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import cpu_name, median_ms, result_args, table, update_doc  # noqa: E402

VARIANTS = ("lora", "layer3", "layers1-3")
CLIP_S = 3.0
MEL_FRAMES = int(CLIP_S * 100)  # 10 ms log-mel frames


def encoder_part():
    """Whisper base's encoder up to layer 3, from the pinned packages."""
    from emomon.model.specs import WHISPER_BASE, EncoderSpec
    from emomon.model.whisper import load_whisper

    model, _, _ = load_whisper(EncoderSpec(kind="whisper", name=WHISPER_BASE, layer=3))
    del model.layers[3:]
    return model.float().train()


def step_fn(variant: str, batch: int, dtype: str):
    """A function doing one training step of `variant` on a batch, and the trainable parameter count."""
    import torch

    from emomon.model.adapter import LoraSpec, add_lora

    enc = encoder_part()
    d = enc.config.d_model
    head = torch.nn.Linear(d, 9)
    mel = torch.randn(batch, enc.config.num_mel_bins, MEL_FRAMES)
    T = MEL_FRAMES // 2
    positions = enc.embed_positions.weight[:T]
    for p in enc.parameters():
        p.requires_grad_(False)
    if variant == "lora":
        params = [p for m in add_lora(enc, LoraSpec(rank=16, layers=(0, 1, 2))).values() for p in (m.lora_a, m.lora_b)]
    elif variant == "layer3":
        params = list(enc.layers[2].parameters())
    else:
        params = [p for layer in enc.layers for p in layer.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam([*params, *head.parameters()], lr=1e-4)
    target = torch.randn(batch, 9)

    def layer_out(layer, h):
        out = layer(h, attention_mask=None)
        return out[0] if isinstance(out, tuple) else out

    with torch.no_grad():  # layer 3 alone reads cached layer-2 outputs
        cached = torch.nn.functional.gelu(enc.conv1(mel))
        cached = torch.nn.functional.gelu(enc.conv2(cached)).transpose(1, 2) + positions  # (B, T, D)
        for layer in enc.layers[:2]:
            cached = layer_out(layer, cached)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            if variant == "layer3":
                h = layer_out(enc.layers[2], cached)
            else:
                with torch.no_grad():
                    h = torch.nn.functional.gelu(enc.conv1(mel))
                    h = torch.nn.functional.gelu(enc.conv2(h)).transpose(1, 2) + positions
                for layer in enc.layers:
                    h = layer_out(layer, h)
            loss = torch.nn.functional.mse_loss(head(h.mean(1)).float(), target)
        loss.backward()
        opt.step()

    return step, sum(p.numel() for p in params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    result_args(ap, "bench_adapt", "batch 4, one repeat, one thread, float32: checks the script; nothing saved")
    args = ap.parse_args()
    import torch

    threads = (1,) if args.quick else (1, 2)
    dtypes = ("float32",) if args.quick else ("float32", "bfloat16")
    batch, repeats = (4, 1) if args.quick else (args.batch, args.repeats)
    rows = []
    for variant in VARIANTS:
        for dtype in dtypes:
            step, trainable = step_fn(variant, batch, dtype)
            for n in threads:
                torch.set_num_threads(n)
                ms = median_ms(step, repeats) / batch
                rows.append({"variant": variant, "dtype": dtype, "threads": n, "ms_per_clip": round(ms, 1),
                             "trainable_m": round(trainable / 1e6, 2),
                             "epoch_min": round(11_400 * ms / 1e3 / 60, 1)})  # fmt: skip
                print(rows[-1], flush=True)
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "date": date.today().isoformat(), "batch": batch,
              "clip_s": CLIP_S, "rows": rows}  # fmt: skip
    text = (f"{result['cpu']}, {result['cores']} cores, {result['date']}: one training step (forward, backward, "
            f"Adam) on batches of {batch} clips of {CLIP_S:g} s through Whisper base's convolutions and layers 1-3, "
            "per clip; an epoch over the seven corpora's 11,400 files at that rate.\n\n")  # fmt: skip
    text += table(rows, [("variant", "variant"), ("dtype", "dtype"), ("threads", "threads"),
                         ("ms_per_clip", "ms per clip"), ("trainable_m", "trained parameters (M)"),
                         ("epoch_min", "epoch (min)")])  # fmt: skip
    print(text)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        update_doc(args.doc, text, "adapt", "Adapting the encoder (training cost)")


if __name__ == "__main__":
    main()
