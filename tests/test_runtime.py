"""lesionseg.runtime: provenance (CPU, machine, commit) read plainly; the bottom layer imports nothing above it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import torch

from lesionseg import runtime
from lesionseg.runtime import cpu_flags, cpu_name, lesionseg_commit, machine_description

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx512f avx512_bf16

processor\t: 1
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx512f avx512_bf16
"""


def test_cpuinfo_fields_are_read_from_the_first_processor(tmp_path, monkeypatch):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    monkeypatch.setattr(runtime, "_CPUINFO", path)
    assert cpu_name() == "AMD EPYC 9R14 96-Core Processor"
    assert cpu_flags() == {"fpu", "sse2", "avx512f", "avx512_bf16"}
    assert machine_description().endswith(f"(AMD EPYC 9R14 96-Core Processor, torch {torch.__version__}, CPU)")


def test_without_cpuinfo_the_answers_are_plain_not_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "_CPUINFO", tmp_path / "absent")
    assert cpu_flags() == set()
    assert cpu_name()  # platform's answer or "unknown CPU", never empty
    path = tmp_path / "no_fields"
    path.write_text("processor\t: 0\n")
    monkeypatch.setattr(runtime, "_CPUINFO", path)
    assert cpu_flags() == set() and cpu_name()


def test_commit_is_the_source_trees_head():
    package = Path(runtime.__file__).resolve().parent
    lesionseg_commit.cache_clear()
    commit = lesionseg_commit()
    try:
        head = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("lesionseg is not installed from a git checkout")
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit)
    assert commit.removesuffix("-dirty") == head


def test_commit_outside_git_is_none(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(runtime.subprocess, "run", no_git)
    lesionseg_commit.cache_clear()
    try:
        assert lesionseg_commit() is None
    finally:
        lesionseg_commit.cache_clear()


def test_runtime_imports_nothing_from_lesionseg():
    """The bottom layer: inference, engine and every other package import it, so it may import none of them."""
    import ast

    tree = ast.parse(Path(runtime.__file__).read_text())
    imported = [
        node.module or "" if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert not relative and not [m for m in imported if m.startswith("lesionseg")]
