"""GPU check: train a CPU-size and a paper-size model for a few epochs on CUDA in bf16, and the same models on the CPU.

Usage:
    python perf/gpu_check.py [--data-root ROOT --layout L --split S] [--models unext vmunet]
        [--epochs 3] [--cpu-epochs 1] [--size 256] [--batch 8 32] [--out gpu_check.json]

Prints, per model: parameters, GPU epoch times (the first epoch includes cuDNN autotuning and is shown apart), peak
GPU memory (``torch.cuda.max_memory_allocated``), the final validation Dice, and the CPU epoch time of the same model
and batch. Without a data root it writes a synthetic blob dataset (``--images`` images at ``--size``) into a temporary
folder, so the script needs nothing but the package; with a data root (e.g. a resized cache of ISIC carried to the GPU
machine) it trains on that. Where torch sees no CUDA device it says so and exits with status 0 having measured nothing:
a CPU number is never presented as a GPU one.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lesionseg.data.synthetic import write_blob_dataset
from lesionseg.engine import Trainer
from lesionseg.engine.config import config_from_dict
from lesionseg.models import create_model
from lesionseg.models.complexity import count_parameters


def write_blobs(root: Path, n: int, size: int, seed: int = 0) -> tuple[Path, Path]:
    """The package's synthetic blob dataset under ``root`` and a split JSON beside it (70% train, 15% val, 15% test)."""
    write_blob_dataset(root, n, size, seed)
    ids = sorted(p.stem for p in (root / "images").iterdir())
    a, b = int(0.7 * n), int(0.85 * n)
    split = root / "split.json"
    split.write_text(
        json.dumps({"info": {"generator": "gpu_check"}, "train": ids[:a], "val": ids[a:b], "test": ids[b:]})
    )
    return root, split


def train(model: str, batch: int, device: str, epochs: int, data: dict, out: Path, size: int) -> dict:
    cfg = config_from_dict(
        {
            "data": {**data, "image_size": [size, size], "batch_size": batch},
            "model": {"name": model},
            "optim": {"name": "adamw", "lr": 1e-3},
            "train": {
                "epochs": epochs,
                "device": device,
                "precision": "bf16",
                "channels_last": True,
                "postprocess": False,
                "out_dir": str(out),
                "name": f"{model}-{device}",
            },
        }
    )
    trainer = Trainer(cfg, progress=False)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    start = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - start
    with open(trainer.run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    result = {
        "device": str(trainer.device),
        "epoch_seconds": [float(r["epoch_seconds"]) for r in rows],
        "wall_seconds": round(wall, 1),
        "steps_per_epoch": len(trainer.train_loader),
        "val_dice_per_image": float(rows[-1]["val_dice_per_image"]),
    }
    if trainer.device.type == "cuda":
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(trainer.device) / 2**30, 3)
        result["gpu"] = torch.cuda.get_device_name(trainer.device)
    trainer.close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", help="dataset root (default: a synthetic blob dataset)")
    p.add_argument("--layout", help="layout of --data-root")
    p.add_argument("--split", help="split name or JSON of --data-root")
    p.add_argument("--models", nargs=2, default=["unext", "vmunet"], metavar=("CPU_SIZE", "PAPER_SIZE"))
    p.add_argument("--batch", nargs=2, type=int, default=[8, 32], metavar=("CPU_SIZE", "PAPER_SIZE"))
    p.add_argument("--epochs", type=int, default=3, help="GPU epochs per model")
    p.add_argument("--cpu-epochs", type=int, default=1, help="CPU epochs per model (0 skips the CPU timing)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--images", type=int, default=160, help="synthetic images (without --data-root)")
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args(argv)

    if not torch.cuda.is_available():
        print(
            f"gpu_check: torch {torch.__version__} sees no CUDA device (built with CUDA "
            f"{torch.version.cuda or 'none'}); this script measures GPU training, so nothing was run."
        )
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.data_root:
            data = {"root": args.data_root, "layout": args.layout, "split": args.split or args.layout or "ph2"}
            what = f"{args.data_root} ({args.layout or 'detected layout'}, split {data['split']})"
        else:
            root, split = write_blobs(tmp / "blobs", args.images, args.size)
            data = {"root": str(root), "layout": "folder", "split": str(split)}
            what = f"{args.images} synthetic {args.size}x{args.size} blob images"
        results = {
            "data": what,
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cpu_threads": torch.get_num_threads(),
            "models": {},
        }
        for model, batch in zip(args.models, args.batch):
            entry: dict = {"params_m": round(count_parameters(create_model(model)) / 1e6, 3), "batch": batch}
            entry["cuda_bf16"] = train(model, batch, "cuda", args.epochs, data, tmp / "runs", args.size)
            if args.cpu_epochs > 0:
                entry["cpu_bf16"] = train(model, batch, "cpu", args.cpu_epochs, data, tmp / "runs", args.size)
            results["models"][model] = entry
            torch.cuda.empty_cache()

    gpu = next(iter(results["models"].values()))["cuda_bf16"]["gpu"]
    print(f"GPU {gpu}; CPU {results['cpu']} ({results['cpu_threads']} torch threads); torch {results['torch']}")
    print(f"data: {what}; bf16 autocast, channels-last, AdamW")
    print(
        f"{'model':14s} {'params M':>8s} {'batch':>5s} {'steps/ep':>8s} {'GPU 1st ep s':>12s} {'GPU ep s':>9s} "
        f"{'peak GiB':>8s} {'CPU ep s':>9s} {'GPU speed-up':>12s}"
    )
    for model, e in results["models"].items():
        g = e["cuda_bf16"]
        steady = g["epoch_seconds"][1:] or g["epoch_seconds"]
        gpu_epoch = float(np.median(steady))
        cpu_epoch = float(np.median(e["cpu_bf16"]["epoch_seconds"])) if "cpu_bf16" in e else float("nan")
        print(
            f"{model:14s} {e['params_m']:8.3f} {e['batch']:5d} {g['steps_per_epoch']:8d} "
            f"{g['epoch_seconds'][0]:12.2f} {gpu_epoch:9.2f} {g['peak_gpu_memory_gib']:8.2f} {cpu_epoch:9.2f} "
            f"{cpu_epoch / gpu_epoch:11.1f}x"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
