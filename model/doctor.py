"""`emomon doctor`: what this machine offers the model, and what emomon chose and why.

Every line is something that decides speed or correctness: the CPU's instruction sets
(bfloat16 and int8 kernels depend on them), torch's threads and CUDA, ONNX Runtime's
providers, the compute dtype `auto` picks, and the engine `auto` picked (its
measurement, or that the ONNX export is still being made). Nothing is loaded or
measured: the report reads what is there.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path

ISA = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def report(bundle: str | Path, device: str, dtype: str, engine: str) -> list[tuple[str, str]]:
    """(what, finding) lines, in the order they are printed."""
    import torch

    from .. import __version__
    from .auto_engine import measured
    from .compute import choose_dtype, cpu_flags, cpu_name, resolve_device
    from .engines import choose_engine

    folder = Path(bundle)
    flags = cpu_flags()
    rows = [
        ("emomon", f"{__version__} (Python {platform.python_version()}, {platform.system()} {platform.machine()})"),
        ("CPU", f"{cpu_name()}, {os.cpu_count()} cores"),
        ("instruction sets", ", ".join(f for f in ISA if f in flags) or "none of " + ", ".join(ISA)),
        (
            "torch",
            f"{torch.__version__}, {torch.get_num_threads()} threads, capability "
            f"{torch.backends.cpu.get_cpu_capability()}",
        ),  # fmt: skip
    ]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        rows.append(("CUDA", f"{torch.version.cuda}: {', '.join(names)}"))
    else:
        rows.append(("CUDA", "no CUDA GPU visible to torch"))
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime as ort

        rows.append(("onnxruntime", f"{ort.__version__}, providers {', '.join(ort.get_available_providers())}"))
    else:
        rows.append(("onnxruntime", "not installed (pip install 'emomon[onnx]')"))
    rows.append(("FFmpeg (PyAV)", "installed" if importlib.util.find_spec("av") else "not installed (emomon[media])"))
    try:
        where = resolve_device(device)
        rows.append(("device", f"{where} (setting {device})"))
        compute, why = choose_dtype(dtype, where)
        rows.append(("dtype", f"{compute} ({why})"))
        chosen, why = choose_engine(engine, folder, device, dtype)
    except Exception as e:  # noqa: BLE001 - a setting that cannot run here is what the doctor reports
        rows.append(("problem", str(e)))
        return rows
    if chosen == "measure":
        seen = measured(folder, dtype)
        chosen, why = seen if seen else ("torch", _pending(folder, device, dtype))
    rows.append(("engine", f"{chosen} ({why})"))
    return rows


def _pending(folder: Path, device: str, dtype: str) -> str:
    """Why auto runs torch for now: the export is being made, or not started yet."""
    from .files import try_lock
    from .onnx_engine import CacheEntry, onnx_precision

    entry = CacheEntry.of(folder, onnx_precision(dtype, device))
    if entry.ready():
        return "auto: the ONNX export is cached; the next run measures both engines and keeps the faster"
    fd = try_lock(entry.lock)
    if fd is None:
        return "auto: the ONNX export is being made in the background; torch until it is there"
    os.close(fd)
    return "auto: not measured here yet; the next run starts the ONNX export in the background, torch meanwhile"
