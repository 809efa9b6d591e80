"""The README's "Extending lesionseg" snippets run as written: a model, a layout, a metric, a loss, a CLI verb and a
benchmark config, each checked for doing what the section says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

import lesionseg

REPO = Path(__file__).resolve().parents[1]

# What the snippets take from the module they are written into (cli.py, metrics/scores.py and registry.py).
PREAMBLE = """
import argparse
import torch
from torch import Tensor
from lesionseg.cli import UsageError, _add_data
from lesionseg.metrics.registry import _BOTH, MetricSpec
from lesionseg.metrics.scores import Reduction, _prepare, _ratio, _reduce
"""

CHECKS = """
import tempfile
from PIL import Image
from lesionseg import create_model, list_models
from lesionseg.cli import build_parser, main
from lesionseg.data import detect_layout, find_cases
from lesionseg.losses import build_loss

assert "tiny_net" in list_models(cpu_size=True)
assert create_model("tiny_net", channels=4)(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 32, 32)

root = Path(tempfile.mkdtemp())
for folder in ("scans", "labels"):
    (root / folder).mkdir()
for i in (2, 1):
    Image.new("RGB", (8, 8)).save(root / "scans" / f"s{i}.png")
    Image.new("L", (8, 8), 255).save(root / "labels" / f"s{i}_label.png")
assert detect_layout(root) == "my_clinic" and [c.id for c in find_cases(root)] == ["s1", "s2"]

tp, fp = torch.tensor([3.0, 0.0]), torch.tensor([1.0, 0.0])
zero = torch.zeros(2)
assert torch.allclose(FDR.score(tp, fp, zero, zero, "per_image"), torch.tensor(0.125, dtype=torch.float64))
assert float(FDR.score(tp, fp, zero, zero, "global")) == 0.25

loss = build_loss("weighted_bce", pos_weight=3.0)
assert float(loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))) > 0

parser = build_parser()
sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
_add_count(sub)
args = parser.parse_args(["count", "--data-root", str(root), "-q"])
assert args.func(args) == 0 and args.quiet
try:
    cmd_count(parser.parse_args(["count"]))
except UsageError as err:
    assert "--data-root" in str(err)
else:
    raise AssertionError("count without --data-root must be a usage error")
print("checked")
"""


def _section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Extending lesionseg")
    return text[start : text.index("\n## ", start + 1)]


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", _section(), flags=re.S)


def test_python_snippets_run_and_do_what_they_say(tmp_path):
    blocks = _blocks("python")
    assert len(blocks) == 5  # model, layout, metric, loss, verb
    script = tmp_path / "extending.py"
    script.write_text("from pathlib import Path\n" + PREAMBLE + "\n".join(blocks) + CHECKS)
    # A process of its own: the snippets register names in the package's global registries.
    src = Path(lesionseg.__file__).resolve().parents[1]  # the package under test
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("checked")


def test_benchmark_snippet_is_a_valid_config(tmp_path):
    from lesionseg.benchmark import load_benchmark_config

    (block,) = _blocks("yaml")
    path = tmp_path / "my_ph2.yaml"
    path.write_text(block)
    cwd = os.getcwd()
    os.chdir(REPO)  # the entries name training configs relative to the repository
    try:
        cfg = load_benchmark_config(path)
    finally:
        os.chdir(cwd)
    assert [m.label for m in cfg.models] == ["unet_small", "sc_unext"]
    assert cfg.protocol.kind == "repeated" and cfg.num_runs == 3
    assert yaml.safe_load(block)["name"] == cfg.name
