"""Names of arrays and HDF5 datasets used across cgkd, with their shapes, dtypes and units.

F = frames, A = atoms, B = beads, M = ensemble members, E = edges, H = hidden features.
"""

# --- all-atom trajectory file (cgkd.io.aa_h5) ----------------------------------------------
POSITIONS = "positions"  # (F, A, 3) float32 nm  (also (F, B, 3) in CG files)
FORCES = "forces"  # (F, A, 3) float32 kJ/mol/nm  (also (F, B, 3) in CG files)
BOX = "box"  # (F, 3, 3) float32 nm, rows are box vectors a, b, c
POTENTIAL_ENERGY = "potential_energy"  # (F,) float64 kJ/mol
TIME = "time"  # (F,) float64 ps
MASSES = "masses"  # (A,) or (B,) float64 amu
CONSTRAINTS = "constraints"  # (C, 2) int64 atom index pairs held rigid (HBonds, rigid water)

# --- coarse-grained dataset (cgkd.data) ------------------------------------------------------
TYPES = "types"  # (B,) int64 bead type index into attrs["type_names"]

# --- knowledge-distillation labels (group "labels" in a CG dataset) -------------------------
LABELS = "labels"
MEAN_FORCES = "mean_forces"  # (F, B, 3) float32 kJ/mol/nm, ensemble mean
MEMBER_FORCES = "member_forces"  # (M, F, B, 3) float32 kJ/mol/nm
MEAN_NODE_ENERGY = "mean_node_energy"  # (F, B) float32 kJ/mol, ensemble mean per-bead energy
MEMBER_NODE_ENERGY = "member_node_energy"  # (M, F, B) float32 kJ/mol, per-bead energy per member
MEMBER_ENERGY = "member_energy"  # (M, F) float64 kJ/mol, total energy per member
MEAN_ENERGY = "mean_energy"  # (F,) float64 kJ/mol
FORCE_STD = "force_std"  # (F, B) float32 kJ/mol/nm, per-bead std of member forces (norm over xyz)

# --- student targets (cgkd.kd.students, cgkd distill) --------------------------------------
FORCE_TARGETS = ("mapped", "teacher", "mean")  # mapped forces, one teacher's, the ensemble mean
ENERGY_TARGETS = ("none", "node", "total")  # no energy term, per-bead energies, total energy

# --- model outputs (cgkd.nn) ----------------------------------------------------------------
NODE_ENERGY = "node_energy"  # (N,) per-bead energy, kJ/mol (N = beads in the batch)
NODE_FEATURES = "node_features"  # (N, H) invariant hidden features of the last layer
VECTOR_FEATURES = "vector_features"  # (N, 3, H) equivariant vector features (PaiNN-like models)
EDGE_FEATURES = "edge_features"  # (E, H) per-edge features of the last interaction
EDGE_INDEX = "edge_index"  # (2, E) int64, [0] = receiving centre i, [1] = neighbour j (cgkd.nn.neighbors)
ENERGY = "energy"  # (G,) total energy per frame/graph, kJ/mol
FORCE = "force"  # (N, 3) -dE/dx, kJ/mol/nm
