"""Model files take shared parts from ``models/blocks``: never a block from a sibling model file."""

from __future__ import annotations

import ast
from pathlib import Path

MODELS = Path(__file__).resolve().parents[2] / "src" / "lesionseg" / "models"
# The infrastructure a model file may use besides blocks/.
INFRA = {"_registry", "base", "blocks"}
# Variants built as subclasses of another model's class (nnU-Net's one-attribute variants): the parent architecture,
# and its size presets, are the only names a model file may take from a sibling.
FAMILIES = {
    "attention_unet": {"unet": {"UNet"}},
    "cmssm_unet": {"vmunet": {"CPU_SIZE", "VMUNet"}},
    "hcmamba": {"vmunet": {"CPU_SIZE", "VMUNet"}},
    "medmamba": {"vmunet": {"CPU_SIZE", "VMUNet"}},
    "sc_unext": {"unext": {"UNeXt"}},
}
NOT_MODELS = {"__init__", "_registry", "base", "hub", "complexity", "ensemble"}


def _sibling_imports(path: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            top = node.module.split(".")[0]
            if top not in INFRA:
                out.setdefault(top, set()).update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("lesionseg."):
            out.setdefault(node.module or "", set()).update(a.name for a in node.names)
    return out


def test_model_files_import_only_blocks_base_registry_or_their_parent_architecture():
    files = sorted(p for p in MODELS.glob("*.py") if p.stem not in NOT_MODELS)
    assert len(files) >= 20
    offending = {}
    for path in files:
        extra = _sibling_imports(path)
        allowed = FAMILIES.get(path.stem, {})
        bad = {mod: names - allowed.get(mod, set()) for mod, names in extra.items()}
        bad = {mod: names for mod, names in bad.items() if names}
        if bad:
            offending[path.stem] = bad
    assert not offending, f"model files importing from siblings (move the part to models/blocks/): {offending}"


def test_blocks_import_nothing_from_model_files():
    for path in sorted((MODELS / "blocks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                raise AssertionError(f"{path.name} imports {'.' * node.level}{node.module} from outside blocks/")


def test_registry_does_not_import_hub():
    """``hub`` builds on ``_registry`` (the ``pretrained=`` branch lives in hub): no import circle between them."""
    text = (MODELS / "_registry.py").read_text()
    assert "hub" not in {n.module for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ImportFrom)}
    assert "import_module" not in text and "from .hub" not in text
