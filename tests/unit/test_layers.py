"""The layering of docs/design.md: no module imports from a layer above its own; no torch below ``data``."""

import re
from pathlib import Path

import cgkd

ORDER = ["units", "keys", "registry", "errors", "arrays", "seeds", "progress", "io", "parallel", "geometry", "topology", "aa", "mapping", "data", "nn", "train", "kd", "export", "openmm",
         "analysis", "pipeline", "cli"]
RANK = {name: i for i, name in enumerate(ORDER)}
RANK["export"] = RANK["openmm"]  # one layer
RANK["synthetic"] = RANK["pipeline"]  # a workflow over kd, export/openmm and analysis, like the pipeline
NO_TORCH = {"units", "keys", "registry", "errors", "arrays", "seeds", "progress", "io", "parallel", "geometry", "topology", "aa", "mapping", "analysis"}
ROOT = Path(cgkd.__file__).parent


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        layer = path.relative_to(ROOT).parts[0].removesuffix(".py")
        if layer in RANK:
            yield layer, path, path.read_text()


def test_no_module_imports_a_higher_layer():
    bad = []
    for layer, path, text in _modules():
        for target in re.findall(r"^\s*(?:from|import) cgkd\.(\w+)", text, re.M):
            if target in RANK and RANK[target] > RANK[layer]:
                bad.append(f"{path.relative_to(ROOT)} ({layer}) imports cgkd.{target}")
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_lower_layers_do_not_import_torch():
    bad = [str(p.relative_to(ROOT)) for layer, p, text in _modules()
           if layer in NO_TORCH and re.search(r"^\s*(?:import torch|from torch)", text, re.M)]
    assert not bad, f"torch imported in layers that must not use it: {bad}"


def test_the_check_sees_every_layer():
    layers = {layer for layer, _, _ in _modules()}
    assert {"io", "geometry", "topology", "mapping", "nn", "train", "kd", "openmm", "analysis", "cli"} <= layers
