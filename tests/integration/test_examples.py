"""The examples run at a tiny size: the OpenMM script and the comparison notebook."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from cgkd.data.cg_h5 import CGData, read_cg, write_cg
from cgkd.topology import Topology
from cgkd.export import LennardJonesPair, export_potential

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_openmm_simulation_script(tmp_path):
    types, L = ["A", "B"], 2.4
    g = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)[:26]
    pos = ((g + 0.5) * L / 3)[None]
    n = pos.shape[1]
    write_cg(tmp_path / "cg.h5", CGData(positions=pos, forces=np.zeros_like(pos), box=np.eye(3)[None] * L,
                                        topology=Topology(types, np.arange(n) % 2, np.full(n, 50.0),
                                                          molecule_names=["M"] * n), temperature=300.0))
    export_potential(LennardJonesPair(types, [[0.4, 0.45], [0.45, 0.5]], [[1, 1.5], [1.5, 2]], 0.9), tmp_path / "m.pt",
                     type_names=types, type_masses=[50.0, 50.0], cutoff=0.9, periodic=True)
    out = tmp_path / "traj.dcd"
    proc = subprocess.run([sys.executable, str(EXAMPLES / "openmm_simulation.py"), str(tmp_path / "m.pt"),
                           str(tmp_path / "cg.h5"), "--steps", "100", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    import mdtraj

    traj = mdtraj.load_dcd(str(out), top=read_cg(tmp_path / "cg.h5").topology.to_mdtraj())
    assert traj.n_frames == 10 and np.all(np.isfinite(traj.xyz))
    assert "Potential Energy" in proc.stdout


@pytest.mark.slow
def test_compare_notebook(tmp_path):
    # register a kernel for this very interpreter in a private prefix: works without a system-wide kernelspec
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(tmp_path / "jup"), "--name",
                    "cgkd-test"], check=True, capture_output=True)
    env_backup = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "CGKD_WORK", "CGKD_STEPS", "OMP_NUM_THREADS")}
    os.environ.update(JUPYTER_PATH=str(tmp_path / "jup" / "share" / "jupyter"), CGKD_WORK=str(tmp_path / "work"),
                      CGKD_STEPS="200", OMP_NUM_THREADS="1")
    try:
        nb = nbformat.read(EXAMPLES / "compare_properties.ipynb", as_version=4)
        NotebookClient(nb, timeout=300, kernel_name="cgkd-test", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in env_backup.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    text = (tmp_path / "work" / "report" / "report.md").read_text()
    assert "| RDF A-B |" in text
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "RDF A-B total absolute error" in outputs
