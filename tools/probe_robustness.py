"""Break the toolkit's inputs on purpose and count how each break ends: a named error, a traceback, or silence.

Usage (from the repository root, PH2 under ../shared/data/ph2):
    python tools/probe_robustness.py checkpoints [--jobs 2]   # ~47 corrupted checkpoints x predict / evaluate
    python tools/probe_robustness.py configs [--jobs 2]       # ~50 bad training configs
    python tools/probe_robustness.py resume                   # checkpoint files of two epochs mixed, damaged
    python tools/probe_robustness.py diskfull --mount /mnt/x  # predict and train onto a 2 MB tmpfs (root)

Every case runs the command line in a subprocess (address space capped at 6 GB, 300 s each) inside a temporary
folder that is removed at the end. A case ends as one of:

- ``named``: non-zero exit, no traceback (the expected end of a broken input);
- ``traceback``: a Python traceback on stderr;
- ``silent``: exit 0 where the input should have been refused, or an output that is nonsense (empty masks on lesion
  images, Dice under 50);
- ``ok``: exit 0 with a sane output where accepting the input is right (e.g. predict with a record lacking its
  training data, which predict does not need).

The script prints one line per case and the counts; the issue's goal is 0 tracebacks and 0 silent.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The sources under test (``--src``: e.g. another checkout's, for the figures before a fix).
SRC = REPO / "src"
PH2 = REPO.parent / "shared" / "data" / "ph2"
PH2_IMAGES = "PH2Dataset/PH2 Dataset images"
# Two test ids and one training id of the shipped ph2 split.
TEST_IDS = ("IMD004", "IMD010")
TRAIN_ID = "IMD006"


def _limit_memory() -> None:
    cap = 6 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


@dataclass
class Outcome:
    case: str
    command: str
    kind: str
    detail: str


def run_cli(args: list[str], cwd: Path, timeout: float = 300.0) -> tuple[int, str, str]:
    """``lesionseg ARGS`` in a subprocess with this checkout's sources first on the path."""
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "lesionseg", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired:
        return -1, "", f"timed out after {timeout:.0f} s"
    return proc.returncode, proc.stdout, proc.stderr


def classify(rc: int, err: str, should_refuse: bool, sane: Callable[[], str | None]) -> tuple[str, str]:
    """The outcome kind and a one-line detail (the error line, or why an exit 0 is nonsense)."""
    if "Traceback (most recent call last)" in err:
        last = [line for line in err.strip().splitlines() if line.strip()][-1]
        return "traceback", last[:160]
    if rc != 0:
        lines = [line for line in err.strip().splitlines() if "error" in line.lower() or "FAILED" in line]
        return "named", (lines[-1] if lines else err.strip().splitlines()[-1] if err.strip() else f"exit {rc}")[:160]
    problem = sane()
    if problem:
        return "silent", problem
    if should_refuse:
        return "silent", "exit 0: accepted an input that should be refused"
    return "ok", "exit 0, sane output"


def print_counts(outcomes: list[Outcome], what: str) -> None:
    for o in outcomes:
        print(f"{o.kind:9s} {o.command:9s} {o.case:34s} {o.detail}")
    counts = Counter(o.kind for o in outcomes)
    by_command = Counter((o.command, o.kind) for o in outcomes)
    print(
        f"\n{what}: {len(outcomes)} runs: "
        + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("named", "traceback", "silent", "ok"))
    )
    for command in sorted({o.command for o in outcomes}):
        print(
            f"  {command}: "
            + ", ".join(f"{k} {by_command.get((command, k), 0)}" for k in ("named", "traceback", "silent", "ok"))
        )


# ------------------------------------------------------------------------------------------------ checkpoints
def _tiny_ph2(root: Path) -> Path:
    """A PH2 root of three cases (links to the real ones): two test ids and one training id of the shipped split."""
    data = root / "ph2"
    images = data / PH2_IMAGES
    images.mkdir(parents=True)
    for name in ("PH2_dataset.txt", "PH2_dataset.csv"):
        src = PH2 / "PH2Dataset" / name
        if src.is_file():
            shutil.copyfile(src, data / "PH2Dataset" / name)
    for case in (*TEST_IDS, TRAIN_ID):
        (images / case).symlink_to((PH2 / PH2_IMAGES / case).resolve())
    return data


def _safetensors_parts(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write_safetensors(path: Path, header: dict, body: bytes) -> None:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)


def _tensor_mutation(kind: str) -> Callable[[Path], None]:
    """Rewrite a weights file's tensors with torch: NaN, inf, integer cast, a tensor missing/extra/reshaped."""

    def mutate(path: Path) -> None:
        import torch
        from safetensors.torch import load, save_file

        tensors = load(path.read_bytes())  # not mmapped: the file is rewritten below
        floats = [k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1]
        key = floats[len(floats) // 2]
        if kind == "nan":
            tensors[key] = tensors[key].clone()
            tensors[key].view(-1)[0] = float("nan")
        elif kind == "inf":
            tensors[key] = torch.full_like(tensors[key], float("inf"))
        elif kind == "int":
            tensors = {k: (v * 0).to(torch.int32) if v.is_floating_point() else v for k, v in tensors.items()}
        elif kind == "missing":
            del tensors[key]
        elif kind == "extra":
            tensors["extra.weight"] = torch.zeros(3)
        elif kind == "shape":
            key = next(k for k, v in tensors.items() if v.is_floating_point() and v.dim() > 1)
            tensors[key] = tensors[key].reshape(-1)
        elif kind == "other_model":
            from lesionseg.models import create_model

            tensors = create_model("unet_small").state_dict()
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))

    return mutate


def _bitflip(path: Path) -> None:
    header, body = _safetensors_parts(path)
    body = bytearray(body)
    body[len(body) // 2] ^= 0x40
    _write_safetensors(path, header, bytes(body))


def _record_edit(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        data = json.loads(path.read_text())
        out = edit(data)
        path.write_text(json.dumps(data if out is None else out, indent=1))

    return mutate


def _set(key: str, value: object) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        d[key] = value

    return edit


def _drop(key: str) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        d.pop(key, None)

    return edit


def _raw(text: str) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        path.write_text(text)

    return mutate


def _truncate(fraction: float) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * fraction)])

    return mutate


def _pickle(path: Path) -> None:
    import torch
    from safetensors.torch import load

    torch.save(load(path.read_bytes()), path)  # a torch (pickle) file under the .safetensors name; never unpickled


# (name, file: "weights" | "record", mutation, predict should refuse, evaluate should refuse)
CHECKPOINT_VARIANTS: list[tuple[str, str, Callable[[Path], None], bool, bool]] = [
    ("weights_truncated_half", "weights", _truncate(0.5), True, True),
    ("weights_truncated_to_8_bytes", "weights", _truncate(8 / 1e9), True, True),
    ("weights_empty", "weights", _raw(""), True, True),
    (
        "weights_header_garbage",
        "weights",
        lambda p: p.write_bytes(struct.pack("<Q", 16) + b"{not json!!!!!!}"),
        True,
        True,
    ),
    ("weights_header_length_huge", "weights", lambda p: p.write_bytes(struct.pack("<Q", 2**62) + b"{}"), True, True),
    ("weights_random_bytes", "weights", lambda p: p.write_bytes(os.urandom(4096)), True, True),
    ("weights_pickle_renamed", "weights", _pickle, True, True),
    ("weights_missing", "weights", lambda p: p.unlink(), True, True),
    ("weights_bit_flipped", "weights", _bitflip, True, True),
    ("weights_nan", "weights", _tensor_mutation("nan"), True, True),
    ("weights_inf", "weights", _tensor_mutation("inf"), True, True),
    ("weights_integer_cast", "weights", _tensor_mutation("int"), True, True),
    ("weights_tensor_missing", "weights", _tensor_mutation("missing"), True, True),
    ("weights_tensor_extra", "weights", _tensor_mutation("extra"), True, True),
    ("weights_tensor_reshaped", "weights", _tensor_mutation("shape"), True, True),
    ("weights_of_another_model", "weights", _tensor_mutation("other_model"), True, True),
    ("record_empty", "record", _raw(""), True, True),
    ("record_not_json", "record", _raw("{model: sc_unext,"), True, True),
    ("record_null", "record", _raw("null"), True, True),
    ("record_list", "record", _raw("[1, 2, 3]"), True, True),
    ("record_binary", "record", lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), True, True),
    ("record_no_model", "record", _record_edit(_drop("model")), True, True),
    ("record_no_model_kwargs", "record", _record_edit(_drop("model_kwargs")), False, False),
    ("record_unknown_key", "record", _record_edit(_set("modle", "x")), True, True),
    ("record_model_unknown", "record", _record_edit(_set("model", "sc_unextt")), True, True),
    ("record_model_another", "record", _record_edit(_set("model", "unet_small")), True, True),
    ("record_model_number", "record", _record_edit(_set("model", 123)), True, True),
    ("record_kwargs_unknown", "record", _record_edit(_set("model_kwargs", {"bogus": 1})), True, True),
    ("record_kwargs_bad_value", "record", _record_edit(_set("model_kwargs", {"channels": "abc"})), True, True),
    ("record_kwargs_null", "record", _record_edit(_set("model_kwargs", None)), True, True),
    ("record_threshold_string", "record", _record_edit(_set("threshold", "0.5")), True, True),
    ("record_threshold_1.5", "record", _record_edit(_set("threshold", 1.5)), True, True),
    ("record_threshold_nan", "record", _record_edit(_set("threshold", float("nan"))), True, True),
    ("record_postprocess_string", "record", _record_edit(_set("postprocess", "largest_component")), True, True),
    (
        "record_postprocess_unknown_step",
        "record",
        _record_edit(_set("postprocess", {"steps": ["explode"]})),
        True,
        True,
    ),
    ("record_image_size_0x0", "record", _record_edit(_set("image_size", [0, 0])), True, True),
    ("record_image_size_huge", "record", _record_edit(_set("image_size", [100000, 100000])), True, True),
    ("record_image_size_one_value", "record", _record_edit(_set("image_size", [256])), True, True),
    ("record_image_size_strings", "record", _record_edit(_set("image_size", ["256", "256"])), True, True),
    ("record_mean_short", "record", _record_edit(_set("mean", [0.5])), True, True),
    ("record_mean_nan", "record", _record_edit(_set("mean", [float("nan")] * 3)), True, True),
    ("record_std_zero", "record", _record_edit(_set("std", [0, 0, 0])), True, True),
    ("record_std_negative", "record", _record_edit(_set("std", [-0.2, 0.2, 0.2])), True, True),
    ("record_in_channels_2", "record", _record_edit(_set("in_channels", 2)), True, True),
    ("record_num_classes_0", "record", _record_edit(_set("num_classes", 0)), True, True),
    ("record_format_version_99", "record", _record_edit(_set("format_version", 99)), True, True),
    ("record_checksum_of_other_file", "record", _record_edit(_set("sha256", {"weights": "0" * 64})), True, True),
    ("record_no_dataset", "record", _record_edit(_drop("dataset")), False, True),
]


def _predict_sane(out: Path) -> Callable[[], str | None]:
    def check() -> str | None:
        table = out / "measurements.csv"
        if not table.is_file():
            return "exit 0 without measurements.csv"
        rows = list(csv.DictReader(table.open()))
        empty = [r["image"] for r in rows if float(r["area"]) == 0]
        if len(rows) != len(TEST_IDS) or empty:
            return f"exit 0 with {len(rows)} rows, {len(empty)} empty masks on lesion images"
        return None

    return check


def _evaluate_sane(out: Path) -> Callable[[], str | None]:
    def check() -> str | None:
        path = out / "metrics.json"
        if not path.is_file():
            return "exit 0 without metrics.json"
        payload = json.loads(path.read_text())
        dice = payload["results"]["per_image"]["dice"]
        if not dice >= 0.5:
            return f"exit 0 with Dice {100 * dice:.2f}"
        if TRAIN_ID in (out / "per_image.csv").read_text():
            return f"exit 0, scored training id {TRAIN_ID}"
        return None

    return check


def probe_checkpoints(jobs: int, only: list[str]) -> list[Outcome]:
    work = Path(tempfile.mkdtemp(prefix="probe_ckpt_"))
    try:
        data = _tiny_ph2(work)
        images = [data / PH2_IMAGES / i / f"{i}_Dermoscopic_Image" / f"{i}.png" for i in TEST_IDS]
        # A real checkpoint: the shipped skin model, saved again with this checkout's save_checkpoint.
        env = dict(os.environ, PYTHONPATH=str(SRC))
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from lesionseg.models.hub import load_pretrained, save_checkpoint;"
                "m, r = load_pretrained('skin'); save_checkpoint(sys.argv[1], m, r)",
                str(work / "base"),
            ],
            env=env,
            check=True,
        )
        variants = [v for v in CHECKPOINT_VARIANTS if not only or v[0] in only]

        def one(variant) -> list[Outcome]:
            name, which, mutate, refuse_predict, refuse_evaluate = variant
            folder = work / name
            folder.mkdir()
            for suffix in (".json", ".safetensors"):
                shutil.copyfile(work / f"base{suffix}", folder / f"ckpt{suffix}")
            mutate(folder / ("ckpt.json" if which == "record" else "ckpt.safetensors"))
            stem = str(folder / "ckpt")
            results = []
            out = folder / "pred"
            rc, _, err = run_cli(
                ["predict", *map(str, images), "--model", stem, "--out", str(out), "--no-progress", "-q"], folder
            )
            kind, detail = classify(rc, err, refuse_predict, _predict_sane(out))
            results.append(Outcome(name, "predict", kind, detail))
            out = folder / "eval"
            rc, _, err = run_cli(
                [
                    "evaluate",
                    "--checkpoint",
                    stem,
                    "--data-root",
                    str(data),
                    "--no-hd95",
                    "--no-progress",
                    "--out",
                    str(out),
                ],
                folder,
            )
            kind, detail = classify(rc, err, refuse_evaluate, _evaluate_sane(out))
            results.append(Outcome(name, "evaluate", kind, detail))
            print(f"done {name}: {', '.join(o.kind for o in results)}", file=sys.stderr, flush=True)
            return results

        with ThreadPoolExecutor(jobs) as pool:
            outcomes = [o for group in pool.map(one, variants) for o in group]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return outcomes


# ------------------------------------------------------------------------------------------------ configs
# Each a --set override of a tiny valid config; every one is wrong and should be refused before training.
BAD_CONFIGS: list[str] = [
    "data.image_size=[0,0]",
    "data.image_size=[-32,32]",
    "data.image_size=[100000,100000]",
    "data.image_size=[32]",
    "data.image_size=abc",
    "data.in_channels=0",
    "data.in_channels=2",
    "data.mean=[0.5]",
    "data.mean=[.nan,0.5,0.5]",
    "data.std=[0,0,0]",
    "data.std=[-0.2,0.2,0.2]",
    "data.batch_size=0",
    "data.batch_size=-4",
    "data.num_workers=-5",
    "data.augment.hflip=2",
    "data.augment.vflip=-1",
    "data.augment.degrees=720",
    "data.augment.scale=[1.2,0.8]",
    "data.augment.scale=[0,1]",
    "data.augment.hue=3",
    "data.draw_split={test_fraction: 1.5}",
    "data.root=/no/such/folder",
    "data.layout=no_such_layout",
    "data.split=no_such_split",
    "model.name=no_such_model",
    "model.kwargs={bogus: 1}",
    "model.kwargs={channels: abc}",
    "loss.name=no_such_loss",
    "loss.deep_supervision=[0,1]",
    "optim.name=no_such_optim",
    "optim.lr=0",
    "optim.lr=-0.001",
    "optim.lr=.nan",
    "optim.min_lr=1",
    "optim.weight_decay=-1",
    "optim.betas=[0.9,1.5]",
    "optim.momentum=2",
    "optim.scheduler=no_such_schedule",
    "optim.scheduler_kwargs={bogus: 1}",
    "optim.warmup_epochs=-3",
    "optim.grad_clip=-1",
    "train.epochs=0",
    "train.time_budget_min=-1",
    "train.time_budget_min=0",
    "train.checkpoint_every=0",
    "train.val_every=0",
    "train.threshold=1.5",
    "train.threads=-2",
    "train.seed=-1",
    "train.precision=fp8",
    "train.monitor=accuracy",
    "train.device=tpu",
]


def probe_configs(jobs: int, only: list[str]) -> list[Outcome]:
    import yaml

    work = Path(tempfile.mkdtemp(prefix="probe_cfg_"))
    try:
        sys.path.insert(0, str(SRC))
        from lesionseg.data.synthetic import write_blob_dataset

        root = write_blob_dataset(work / "blobs", n=12, size=40)
        ids = sorted(p.stem for p in (root / "images").iterdir())
        split = work / "split.json"
        split.write_text(json.dumps({"info": {}, "train": ids[:8], "val": ids[8:10], "test": ids[10:]}))
        base = {
            "data": {
                "layout": "folder",
                "root": str(root),
                "split": str(split),
                "image_size": [32, 32],
                "batch_size": 4,
            },
            "model": {"name": "unet_small", "kwargs": {"channels": [4, 8, 16]}},
            "optim": {"lr": 0.01},
            "train": {"epochs": 1, "out_dir": str(work / "runs"), "threads": 1},
        }
        (work / "tiny.yaml").write_text(yaml.safe_dump(base))
        cases = [c for c in BAD_CONFIGS if not only or c in only]

        def one(i_override: tuple[int, str]) -> Outcome:
            i, override = i_override
            run = work / "runs" / f"c{i}"
            rc, _, err = run_cli(
                ["train", "--config", str(work / "tiny.yaml"), "--name", f"c{i}", "--set", override, "--no-progress"],
                work,
            )
            trained = (run / "metrics.csv").is_file()
            if "Traceback (most recent call last)" in err:
                kind, detail = "traceback", err.strip().splitlines()[-1][:160]
            elif rc != 0 and trained:
                kind, detail = "named", "after training started: " + err.strip().splitlines()[-1][:140]
            elif rc != 0:
                kind, detail = "named", (err.strip().splitlines() or [f"exit {rc}"])[-1][:160]
            else:
                kind, detail = "silent", "exit 0: trained with a wrong config"
            return Outcome(override, "train", kind, detail)

        with ThreadPoolExecutor(jobs) as pool:
            outcomes = list(pool.map(one, enumerate(cases)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return outcomes


# ------------------------------------------------------------------------------------------------ resume
def probe_resume() -> list[Outcome]:
    """Train 1 epoch, resume to 2, then put epoch 1's files beside epoch 2's (every mixture a kill between the
    renames can leave) and damage each file; every resume must be refused by name, none go on."""
    import yaml

    work = Path(tempfile.mkdtemp(prefix="probe_resume_"))
    outcomes = []
    try:
        sys.path.insert(0, str(SRC))
        from lesionseg.data.synthetic import write_blob_dataset

        root = write_blob_dataset(work / "blobs", n=12, size=40)
        ids = sorted(p.stem for p in (root / "images").iterdir())
        split = work / "split.json"
        split.write_text(json.dumps({"info": {}, "train": ids[:8], "val": ids[8:10], "test": ids[10:]}))
        cfg = {
            "data": {
                "layout": "folder",
                "root": str(root),
                "split": str(split),
                "image_size": [32, 32],
                "batch_size": 4,
            },
            "model": {"name": "unet_small", "kwargs": {"channels": [4, 8, 16]}},
            "optim": {"lr": 0.01},
            "train": {"epochs": 1, "out_dir": str(work / "runs"), "name": "r", "threads": 1},
        }
        (work / "r.yaml").write_text(yaml.safe_dump(cfg))
        run = work / "runs" / "r"
        names = ("last.json", "last.safetensors", "last.state.safetensors")
        rc, _, err = run_cli(["train", "--config", str(work / "r.yaml"), "--no-progress"], work)
        assert rc == 0, err
        epoch1 = {n: (run / n).read_bytes() for n in names}
        rc, _, err = run_cli(["train", "--resume", str(run), "--set", "train.epochs=2", "--no-progress"], work)
        assert rc == 0, err
        epoch2 = {n: (run / n).read_bytes() for n in names}
        cases: list[tuple[str, dict[str, bytes]]] = []
        for old in (("last.safetensors",), ("last.state.safetensors",), ("last.safetensors", "last.state.safetensors")):
            # The record of epoch 1 beside the named files of epoch 2 (renamed before the kill) ...
            cases.append((f"record@1 + {'+'.join(old)}@2", {**epoch1, **{n: epoch2[n] for n in old}}))
            # ... and epoch 2's record beside epoch 1's files (a copy or restore that mixed them).
            cases.append((f"record@2 + {'+'.join(old)}@1", {**epoch2, **{n: epoch1[n] for n in old}}))
        for n in ("last.safetensors", "last.state.safetensors"):
            cases.append((f"{n} truncated", {**epoch2, n: epoch2[n][: len(epoch2[n]) // 2]}))
            flipped = bytearray(epoch2[n])
            flipped[-7] ^= 0x10
            cases.append((f"{n} one bit flipped", {**epoch2, n: bytes(flipped)}))
            cases.append((f"{n} empty", {**epoch2, n: b""}))
        for name, files in cases:
            for n, data in files.items():
                (run / n).write_bytes(data)
            rc, _, err = run_cli(["train", "--resume", str(run), "--set", "train.epochs=3", "--no-progress"], work)
            kind, detail = classify(rc, err, True, lambda: None)
            hint = "lesionseg train --config" in err
            outcomes.append(Outcome(name, "resume", kind, detail + ("" if hint or kind != "named" else " (no hint)")))
            print(f"done {name}: {kind}", file=sys.stderr, flush=True)
        for n, data in epoch2.items():
            (run / n).write_bytes(data)
        rc, _, err = run_cli(["train", "--resume", str(run), "--set", "train.epochs=3", "--no-progress"], work)
        outcomes.append(Outcome("whole epoch-2 checkpoint", "resume", "ok" if rc == 0 else "named", f"exit {rc}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return outcomes


# ------------------------------------------------------------------------------------------------ disk full
def probe_diskfull(mount: Path) -> list[Outcome]:
    """predict --out and a training run folder on a 2 MB tmpfs: named error with the file, summary printed, no
    partial file. Needs root (mount); the tmpfs is unmounted at the end."""
    import yaml

    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    work = Path(tempfile.mkdtemp(prefix="probe_full_"))
    outcomes = []
    try:
        images = work / "images"
        images.mkdir()
        for case in sorted(p.name for p in (PH2 / PH2_IMAGES).iterdir())[:12]:
            src = PH2 / PH2_IMAGES / case / f"{case}_Dermoscopic_Image" / f"{case}.png"
            if src.is_file():
                shutil.copyfile(src, images / f"{case}.png")
        rc, out, err = run_cli(["predict", str(images), "--out", str(mount / "pred"), "--no-progress", "-q"], work)
        left = sorted(p.name for p in (mount / "pred").iterdir()) if (mount / "pred").is_dir() else []
        empty = [p for p in left if (mount / "pred" / p).stat().st_size == 0]
        tmp = [p for p in left if "tmp" in p]
        summary = [line for line in out.splitlines() if " inputs: " in line]
        kind, detail = classify(rc, err, True, lambda: None)
        outcomes.append(
            Outcome(
                "predict 12 PH2 images",
                "predict",
                kind,
                f"{detail} | summary: {summary[-1] if summary else 'NOT PRINTED'} | files left {len(left)}, "
                f"0-byte {len(empty)}, temporary {len(tmp)}",
            )
        )
        for p in left:
            (mount / "pred" / p).unlink()
        # Training: a 256x256 unet_small writes a ~7 MB checkpoint, more than the disk holds.
        root = work / "ph2"
        (root / PH2_IMAGES).mkdir(parents=True)
        for name in ("PH2_dataset.txt", "PH2_dataset.csv"):
            if (PH2 / "PH2Dataset" / name).is_file():
                shutil.copyfile(PH2 / "PH2Dataset" / name, root / "PH2Dataset" / name)
        ids = sorted(p.name for p in (PH2 / PH2_IMAGES).iterdir())[:10]
        for case in ids:
            (root / PH2_IMAGES / case).symlink_to((PH2 / PH2_IMAGES / case).resolve())
        split = work / "split.json"
        split.write_text(json.dumps({"info": {}, "train": ids[:8], "val": ids[8:], "test": []}))
        cfg = {
            "data": {"layout": "ph2", "root": str(root), "split": str(split), "image_size": [64, 64], "batch_size": 4},
            "model": {"name": "unet_small"},
            "train": {"epochs": 1, "out_dir": str(mount / "runs"), "name": "full", "threads": 1},
        }
        (work / "full.yaml").write_text(yaml.safe_dump(cfg))
        rc, out, err = run_cli(["train", "--config", str(work / "full.yaml"), "--no-progress"], work)
        run = mount / "runs" / "full"
        left = sorted(p.name for p in run.iterdir()) if run.is_dir() else []
        partial = [
            p
            for p in left
            if "tmp" in p
            or (run / p).stat().st_size == 0
            or (p.endswith(".safetensors") and not (run / (p.split(".")[0] + ".json")).is_file())
        ]
        kind, detail = classify(rc, err, True, lambda: None)
        outcomes.append(
            Outcome(
                "train unet_small 64x64",
                "train",
                kind,
                f"{detail} | summary printed: {'best_epoch' in out} | files left: {', '.join(left)}"
                + (f" | PARTIAL {partial}" if partial else ""),
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(["umount", str(mount)], check=False)
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=("checkpoints", "configs", "resume", "diskfull"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", action="append", default=[], help="run only these case names")
    parser.add_argument(
        "--src", type=Path, default=None, help="the lesionseg sources to probe (default: this checkout's)"
    )
    parser.add_argument("--mount", default="/mnt/probe_full", help="diskfull: where to mount the small tmpfs")
    args = parser.parse_args()
    global SRC
    SRC = (args.src or SRC).resolve()
    if args.probe == "checkpoints":
        print_counts(probe_checkpoints(args.jobs, args.only), "corrupted checkpoints")
    elif args.probe == "configs":
        print_counts(probe_configs(args.jobs, args.only), "bad configs")
    elif args.probe == "resume":
        print_counts(probe_resume(), "resume from mixed or damaged checkpoints")
    else:
        print_counts(probe_diskfull(Path(args.mount)), "full disk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
