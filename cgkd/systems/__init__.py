"""System specs that ship with cgkd (package data, found with ``importlib.resources``).

``<name>.yaml`` is a spec (docs/systems.md) loaded by ``cgkd.io.spec.load_spec("<name>")``; its templates
(one-molecule PDB files) are in ``templates/``, referenced relative to the spec file. ``systems/`` at the
repository root is a link to this folder. No code here: nothing to import but the data.
"""
