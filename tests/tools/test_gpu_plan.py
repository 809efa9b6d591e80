"""The GPU plan rehearsed on the CPU: checks say "no CUDA", timings run, a tiny benchmark trains, one archive comes
back and unpacks into run folders the report reads; the reference loader and the exact data copies it carries."""

from __future__ import annotations

import importlib.util
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lesionseg.benchmark import load_benchmark_config, write_report
from lesionseg.data import find_cases
from lesionseg.data.base import load_case, resize_pair
from lesionseg.models import create_model
from lesionseg.models.complexity import count_parameters, measure_train_step

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plan():
    spec = importlib.util.spec_from_file_location("gpu_plan", REPO / "tools" / "gpu_plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_plan_rehearsed_on_cpu_packs_one_archive_that_unpacks_into_runs_the_report_reads(
    plan, tmp_path: Path, tiny_config: dict, blob_root: Path, blob_split: Path
) -> None:
    model = tmp_path / "unet.yaml"
    model.write_text(yaml.safe_dump({**tiny_config, "train": {**tiny_config["train"], "epochs": 1}}))
    bench = tmp_path / "bench.yaml"
    bench.write_text(
        yaml.safe_dump(
            {
                "name": "rehearsal",
                "out_dir": str(tmp_path / "work"),
                "results_dir": str(tmp_path / "results"),
                "data": {"root": str(blob_root), "layout": "folder"},
                "protocol": {"kind": "fixed", "split": str(blob_split)},
                "seeds": [0, 1],
                "precision": "fp32",
                "threads": 1,
                "models": [{"config": str(model), "label": "unet_a", "epochs": 1}],
                "report": {"overlay_cases": 1, "bootstrap": 50, "latency_repeats": 1},
            }
        )
    )
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"jobs": [{"config": str(bench), "only": ["unet_a"], "jobs": 1}]}))
    out = tmp_path / "out"
    args = ["run", "--device", "cpu", "--rehearse", "--manifest", str(manifest), "--out", str(out)]
    assert plan.main([*args, "--root", str(tmp_path), "--cpu-steps", "1", "--budget-s", "300"]) == 0

    record = json.loads((out / "gpu_plan.json").read_text())
    assert record["cuda_checks"]["cuda"] is False
    assert record["cuda_checks"]["message"].startswith("no CUDA: not asked for (--device cpu)")
    assert "checks" not in record["cuda_checks"]
    ours = next(r for r in record["timings"]["rows"] if r["label"] == "unext" and r["source"] == "lesionseg")
    assert ours["params"] == count_parameters(create_model("unext")) and ours["cpu_fp32_ms"] > 0
    assert not any(k.startswith("gpu_") for k in ours)  # nothing presented as a GPU figure
    assert record["benchmarks"] == [{"config": str(bench), "started": ["unet_a"], "state": "exit 0"}]
    assert sorted(Path(p).parent.name for p in record["packed"]["results"] if p.endswith("metrics.json")) == [
        "seed0",
        "seed1",
    ]

    # one archive in --out; paths relative to --root, so `tar xzf ... -C <root>` puts every file in its place
    assert sorted(p.name for p in out.iterdir()) == ["benchmark.log", "gpu_plan.json", "gpu_plan_results.tar.gz"]
    with tarfile.open(out / "gpu_plan_results.tar.gz") as tar:
        names = tar.getnames()
        assert all(not n.startswith("/") and ".." not in n for n in names)
        assert "results/runs/unet_a/seed0/metrics.json" in names and "results/runs/unet_a/seed1/per_image.csv" in names
        assert not any(n.endswith(("report.md", "results.csv", ".safetensors")) for n in names)
        plan_json = [n for n in names if n.startswith("docs/results/gpu_plan/") and n.endswith(".json")]
        assert len(plan_json) == 1
        unpacked = tmp_path / "unpacked"
        tar.extractall(unpacked, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    assert json.loads((unpacked / plan_json[0]).read_text())["cuda_checks"]["cuda"] is False
    cfg = load_benchmark_config(bench, [f"results_dir={unpacked / 'results'}", f"out_dir={tmp_path / 'none'}"])
    report = write_report(cfg).read_text()
    assert "All 2 runs (1 models x 2) are finished." in report
    assert "| unet_a | seed0 | 1 | 1 |" in report


def test_the_archive_leaves_out_half_exported_runs_rebuilt_pages_and_resumable_runs_over_the_cap(
    plan, tmp_path: Path
) -> None:
    results, work = tmp_path / "results", tmp_path / "work"
    old = results / "runs/old/seed0/metrics.json"  # there before the plan started: not sent back
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    before = plan._snapshot([results])
    for name, text in {
        "runs/a/seed0/per_image.csv": "stopped before its metrics.json",
        "runs/a/seed1/per_image.csv": "x",
        "runs/a/seed1/metrics.json": "{}",
        "runs/a/seed1/cross/b/metrics.json": "{}",
        "splits/run0.json": "{}",
        "complexity.json": "{}",
        "report.md": "rebuilt here",
    }.items():
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_text(text)
    small, large = work / "runs/s/seed0", work / "runs/l/seed0"
    small.mkdir(parents=True)
    large.mkdir(parents=True)
    (small / "last.safetensors").write_bytes(b"0" * 1024)
    (large / "last.safetensors").write_bytes(b"0" * 4096)
    packed = plan.pack_results(
        tmp_path / "a.tar.gz", tmp_path, before, [results], {"x/plan.json": b"{}"}, [large, small], 3 / 1024
    )
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        names = sorted(tar.getnames())
    assert names == [
        "results/complexity.json",
        "results/runs/a/seed1/cross/b/metrics.json",
        "results/runs/a/seed1/metrics.json",
        "results/runs/a/seed1/per_image.csv",
        "results/splits/run0.json",
        "work/runs/s/seed0/last.safetensors",
        "x/plan.json",
    ]
    assert packed["resume"] == ["work/runs/s/seed0"] and packed["resume_left_out"] == ["work/runs/l/seed0 (0.0 MiB)"]


def test_the_plan_starts_no_run_its_estimate_says_cannot_finish(plan) -> None:
    recipe = {"train": 105, "val": 15, "batch": 8, "epochs": 100}
    # 13 steps of 0.2 s, a validation of 15 images (2 batches) at a third of a step, 0.5 s: 3.23 s an epoch
    assert plan._estimate_s(recipe, {"gpu_fp32_ms": 200.0}) == pytest.approx(
        60 + 100 * (13 * 0.2 + 15 / 8 * 0.2 / 3 + 0.5)
    )
    assert plan._estimate_s(recipe, {"cpu_fp32_ms": 200.0}) is None  # a CPU timing never stands for the GPU
    assert plan._estimate_s(recipe, None) is None


def test_missing_imports_are_named_with_what_they_are_for(plan) -> None:
    found = plan.missing_modules((("numpy", "arrays"), ("no_such_module_lesionseg", "a test")))
    assert found == ["no_such_module_lesionseg (a test)"]
    assert plan.missing_modules() == []  # this environment runs the package


def test_the_reference_loads_with_its_unused_imports_stubbed_and_sys_modules_left_as_they_were(
    plan, tmp_path: Path
) -> None:
    archs = tmp_path / "archs.py"
    archs.write_text(
        "import torch\nfrom torch import nn\nimport torchvision\nfrom torchvision.utils import save_image\n"
        "import matplotlib.pyplot as plt\nfrom utils import *\nimport timm\n"
        "from timm.models.layers import DropPath, to_2tuple, trunc_normal_\nfrom mmcv.cnn import ConvModule\n"
        "class UNext(nn.Module):\n"
        "    def __init__(self, num_classes, input_channels=3, img_size=224, drop_path=0.5):\n"
        "        super().__init__()\n"
        "        self.size = to_2tuple(img_size)\n"
        "        self.conv = nn.Conv2d(input_channels, num_classes, 3, padding=1)\n"
        "        trunc_normal_(self.conv.weight, std=0.02)\n"
        "        self.drop = DropPath(drop_path)\n"
        "    def forward(self, x):\n"
        "        return self.drop(self.conv(x))\n"
    )
    before = {name: sys.modules.get(name) for name in ("timm", "mmcv", "torchvision", "utils")}
    net = plan.load_reference_unext(archs, size=32)
    assert net.size == (32, 32)
    assert {name: sys.modules.get(name) for name in before} == before
    x = np.ones((2, 3, 8, 8), dtype=np.float32)
    import torch

    net.eval()
    assert torch.equal(net(torch.from_numpy(x)), net.conv(torch.from_numpy(x)))  # DropPath is identity in eval
    net.train()
    torch.manual_seed(0)
    kept = net.drop(torch.ones(64, 1, 2, 2))
    assert set(kept.unique().tolist()) == {0.0, 2.0}  # whole samples dropped, the rest scaled by 1 / (1 - p)
    with pytest.raises(FileNotFoundError, match="no reference UNeXt"):
        plan.load_reference_unext(tmp_path / "absent.py")


def test_the_real_reference_unext_has_our_unext_parameter_count(plan) -> None:
    path = REPO / plan.REFERENCE
    if not path.is_file():
        pytest.skip(f"{plan.REFERENCE} not fetched (it is never committed)")
    ref = plan.load_reference_unext(path, size=64)
    assert count_parameters(ref) == count_parameters(create_model("unext"))
    assert measure_train_step(ref, (64, 64), batch=1, steps=1, warmup=0) > 0


def _fake_ph2(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    images = root / "PH2Dataset" / "PH2 Dataset images"
    lines = ["|| Name || Histological Diagnosis || Clinical Diagnosis ||"]
    for i in range(n):
        cid = f"IMD{i:03d}"
        (images / cid / f"{cid}_Dermoscopic_Image").mkdir(parents=True)
        (images / cid / f"{cid}_lesion").mkdir(parents=True)
        img = rng.integers(0, 255, (45, 61, 3), dtype=np.uint8)
        mask = np.zeros((45, 61), dtype=np.uint8)
        mask[10 : 20 + 3 * i, 15:40] = 255
        Image.fromarray(img).save(images / cid / f"{cid}_Dermoscopic_Image" / f"{cid}.png")
        Image.fromarray(mask).save(images / cid / f"{cid}_lesion" / f"{cid}_lesion.bmp")
        lines.append(f"|| {cid} || || {i % 3} ||")
    (root / "PH2Dataset" / "PH2_dataset.txt").write_text("\n".join(lines) + "\n")
    return root


def test_the_ph2_copy_at_the_training_size_gives_the_arrays_the_originals_give(plan, tmp_path: Path) -> None:
    root = _fake_ph2(tmp_path / "ph2")
    written = plan.copy_ph2_resized(root, (24, 32), tmp_path / "copy")
    originals = {c.id: c for c in find_cases(root, "ph2")}
    copies = find_cases(tmp_path / "copy", "ph2")
    assert written > 0 and sorted(c.id for c in copies) == sorted(originals)
    for case in copies:
        image, mask = load_case(case)
        assert image.shape == (24, 32, 3)  # stored at the training size: resizing it again changes nothing
        want = resize_pair(*load_case(originals[case.id]), (24, 32))
        assert np.array_equal(image, want[0]) and np.array_equal(mask, want[1])
        assert case.meta == originals[case.id].meta == {"diagnosis": int(case.id[-1]) % 3}  # diagnoses travel too


def test_the_kvasir_copy_keeps_the_images_and_thresholds_the_jpeg_masks_exactly(plan, tmp_path: Path) -> None:
    base = tmp_path / "kvasir" / "Kvasir-SEG"
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(base / "images" / f"c{i}.jpg")
        noisy = np.clip(rng.normal(0, 40, (40, 50)) + (np.arange(50) > 20) * 255, 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(base / "masks" / f"c{i}.jpg", quality=60)
    plan.copy_kvasir(tmp_path / "kvasir", tmp_path / "copy")
    for original, copy in zip(
        find_cases(tmp_path / "kvasir", "kvasir_seg"), find_cases(tmp_path / "copy", "kvasir_seg")
    ):
        assert copy.mask.suffix == ".png" and copy.image.read_bytes() == original.image.read_bytes()
        assert np.array_equal(load_case(copy)[1], load_case(original)[1])
