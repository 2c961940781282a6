"""AA vs CG MD speed on the reline quick box, measured in one process (a quick check beside benchmarks.speed).

    OMP_NUM_THREADS=2 python benchmarks/md_speed_check.py    # after make demo (needs runs/reline-quick)
"""
import time, torch, openmm, openmm.unit as u
from cgkd.aa import build
from cgkd.io.spec import load_spec
from cgkd.data import read_cg
from cgkd.openmm import create_system
from cgkd.export import load_potential_artefact
torch.set_num_threads(1)
def rate(system, pos, box, dt, n, platform="CPU"):
    integ = openmm.LangevinMiddleIntegrator(333*u.kelvin, 1/u.picosecond, dt*u.picosecond)
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName(platform))
    if box is not None: ctx.setPeriodicBoxVectors(*box)
    ctx.setPositions(pos)
    integ.step(50)
    t = time.perf_counter(); integ.step(n); ctx.getState(getEnergy=True); w = time.perf_counter() - t
    return n / w, n * dt * 1e-3 / w * 86400
for name in ("reline", "water"):
    aa = build(load_spec(name), "quick", platform="CPU", seed=1)
    sps, nsd = rate(aa.system, aa.positions, None, 0.002, 500)
    print(f"AA {name}: {aa.topology.getNumAtoms()} atoms, {sps:.1f} steps/s, {nsd:.1f} ns/day")
cg = read_cg("runs/reline-quick/map/cg.h5", frames=slice(0, 1))
art = load_potential_artefact("runs/reline-quick/export/student.pt")
for backend in ("torch", "python"):
    s = create_system(art, cg.topology, box=cg.box[0], backend=backend)
    sps, nsd = rate(s, cg.positions[0].astype(float) * u.nanometer, None, 0.004, 1000)
    print(f"CG student {backend}: {cg.n_beads} beads, {sps:.1f} steps/s, {nsd:.1f} ns/day")
