"""DDP on CPU (gloo): two processes train the same model as one process with the same global batch; rank 0 alone
writes; resume under DDP continues exactly; device selection without a GPU.

Equality of weights needs a setting where the two runs compute the same gradient:
- no BatchNorm in the model: BatchNorm in training mode normalises with the statistics of each process's half batch,
  which differ from the full batch's (SyncBatchNorm would fix that, but it has no CPU kernel). The equivalence run uses
  U-Net with its BatchNorm layers replaced by identities (per-sample norms such as GroupNorm would do as well);
- a loss that is a mean of per-image terms over equal-size images (BCE over pixels + per-image Dice): the mean of two
  half-batch means equals the full-batch mean, and DDP averages the gradients of the two halves;
- no augmentation (each process draws its own) and plain SGD (Adam divides by the root of tiny second moments, which
  amplifies the float rounding that gloo's summation order adds).
The DistributedSampler deals the same seeded permutation round-robin, so at each step the two ranks hold exactly the
images of the one-process batch.
"""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import nn

from lesionseg.engine import Trainer
from lesionseg.engine.config import config_from_dict
from lesionseg.engine.distributed import DistContext, wrap_model
from lesionseg.models import create_model
from lesionseg.runtime import autocast_context, resolve_device


class NormFreeTrainer(Trainer):
    """U-Net with identities in place of BatchNorm (see the module docstring)."""

    def _build_model(self) -> nn.Module:
        model = create_model(self.cfg.model.name, self.cfg.data.in_channels, 1, **self.cfg.model.kwargs)
        for module in list(model.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, nn.BatchNorm2d):
                    setattr(module, child_name, nn.Identity())
        return model


def _config(tiny: dict, out: Path, name: str, **train) -> dict:
    data = {**tiny["data"], "augment": {"hflip": 0.0, "vflip": 0.0, "affine": 0.0, "color": 0.0}}
    return {
        **tiny,
        "data": data,
        "optim": {"name": "sgd", "lr": 0.05, "scheduler": "constant"},
        "train": {**tiny["train"], "out_dir": str(out), "name": name, "threads": 1, **train},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfgs: dict, out: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    # 1. the equivalence run; rank 1 is pointed at its own folder, which must stay absent (rank 0 alone writes)
    cfg = config_from_dict(cfgs["equiv"])
    equiv = NormFreeTrainer(cfg, run_dir=f"{out}/equiv_rank{rank}", progress=False)
    equiv.fit()
    # 2. resume under DDP: 1 epoch, stop, resume for the second == the 2 epochs in one go above (one shared folder)
    NormFreeTrainer(cfg, run_dir=f"{out}/part", progress=False).fit(stop_after=1)
    NormFreeTrainer(cfg, run_dir=f"{out}/part", progress=False).fit(resume=True)
    equiv.close()  # the first trainer created the process group; it leaves it


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_two_process_ddp_equals_one_process_and_resumes(tiny_config, tmp_path):
    out = tmp_path / "runs"
    cfgs = {"equiv": _config(tiny_config, out, "equiv", epochs=2, postprocess=False)}
    # 8 training ids, global batch 4: 2 steps per epoch, 4 steps in all
    assert cfgs["equiv"]["data"]["batch_size"] == 4
    mp.spawn(_worker, args=(2, _free_port(), cfgs, str(out)), nprocs=2, join=True)

    single = NormFreeTrainer(config_from_dict(cfgs["equiv"]), run_dir=out / "single", progress=False)
    single.fit()
    ddp = load_file(str(out / "equiv_rank0" / "last.safetensors"))
    ref = single.model.state_dict()
    assert set(ddp) == set(ref)
    moved = 0.0
    init = NormFreeTrainer(config_from_dict(cfgs["equiv"]), run_dir=out / "init", progress=False).model.state_dict()
    for k, v in ref.items():
        assert torch.allclose(ddp[k], v, rtol=1e-4, atol=1e-6), (k, (ddp[k] - v).abs().max())
        moved = max(moved, float((v - init[k]).abs().max()))
    assert moved > 1e-3  # the weights did train, so equality is not that of two untouched initialisations
    # validation: each rank scored one of the 2 validation ids; summed counts give the one-process scores
    ddp_rows, ref_rows = _rows(out / "equiv_rank0" / "metrics.csv"), _rows(out / "single" / "metrics.csv")
    assert [r["step"] for r in ddp_rows] == [r["step"] for r in ref_rows] == ["2", "4"]
    for a, b in zip(ddp_rows, ref_rows):
        for key in ("train_loss", "val_dice_per_image", "val_dice_global", "val_iou_global"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-5), key
    assert not (out / "equiv_rank1").exists(), "rank 1 wrote files"

    # resume under DDP: every rank restored weights, optimiser, counters and its own RNG from rank 0's files
    part = load_file(str(out / "part/last.safetensors"))
    for k in ddp:
        assert torch.allclose(ddp[k], part[k], atol=1e-6), k
    assert [int(r["epoch"]) for r in _rows(out / "part/metrics.csv")] == [1, 2]


def test_global_batch_must_split_evenly(tiny_config, tmp_path, monkeypatch):
    from lesionseg.engine.trainer import _per_process_batch

    assert _per_process_batch(8, 2) == 4
    with pytest.raises(ValueError, match="batch_size=5 is the global batch.*divisible by the number of processes"):
        _per_process_batch(5, 2)


def test_device_resolution_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device(spec)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_device_resolution_with_cuda_visible(monkeypatch):
    """The choice logic alone (no GPU needed): torch is told two GPUs exist."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="index 2 out of range; 2 CUDA device"):
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match="cuda:N with an integer"):
        resolve_device("cuda:x")
    # under torchrun each process takes the GPU of its local rank
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)


def test_precision_and_device_checks(tiny_config, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="train.device must be auto, cpu, cuda or cuda:N"):
        config_from_dict({"train": {"device": "gpu"}})
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        autocast_context("fp16", "cpu")
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        Trainer(config_from_dict({**tiny_config, "train": {**tiny_config["train"], "precision": "fp16"}}))
    with pytest.raises(ValueError, match="no CUDA device"):
        Trainer(config_from_dict({**tiny_config, "train": {**tiny_config["train"], "device": "cuda"}}))
    # SyncBatchNorm has no CPU kernel: asking for it in a CPU DDP run is an error, not a silent no-op
    with pytest.raises(ValueError, match="sync_bn needs CUDA"):
        wrap_model(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)), DistContext(torch.device("cpu"), 0, 2), True)


def test_single_process_run_is_on_cpu_here(tiny_config):
    trainer = Trainer(config_from_dict({**tiny_config, "train": {**tiny_config["train"], "epochs": 1}}), progress=False)
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: auto picks it")
    assert trainer.device == torch.device("cpu") and trainer.dist.world_size == 1
    assert next(trainer.model.parameters()).device.type == "cpu"


def _gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gpu_check", Path(__file__).resolve().parents[2] / "perf" / "gpu_check.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_without_cuda_says_so_and_its_training_path_runs(tmp_path, monkeypatch, capsys):
    gpu_check = _gpu_check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert "sees no CUDA device" in capsys.readouterr().out
    # the measuring function itself, on the CPU (the GPU path differs only in the device and the memory counters)
    root, split = gpu_check.write_blobs(tmp_path / "blobs", 12, 32)
    data = {"root": str(root), "layout": "folder", "split": str(split)}
    result = gpu_check.train("unet_small", 4, "cpu", 1, data, tmp_path / "runs", 32)
    assert result["device"] == "cpu" and len(result["epoch_seconds"]) == 1 and result["steps_per_epoch"] == 2
