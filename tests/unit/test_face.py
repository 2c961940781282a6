"""The package face: ``import cgkd`` offers the pipeline's verbs lazily, and neither it nor ``cgkd --help`` loads torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import cgkd


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_cgkd_loads_no_torch_and_no_openmm():
    proc = _fresh_python("import sys, cgkd; cgkd.__all__; dir(cgkd); "
                         "print(sorted(m for m in ('torch', 'openmm', 'h5py', 'numpy') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_cli_help_loads_no_torch_and_no_openmm():
    proc = _fresh_python(
        "import sys\n"
        "from cgkd.cli.main import VERBS, build_parser\n"
        "parser = build_parser()\n"
        "parser.format_help()\n"
        "sub = next(a for a in parser._actions if a.dest == 'verb')\n"
        "assert sorted(sub.choices) == sorted(VERBS), sorted(sub.choices)\n"
        "for verb in VERBS: sub.choices[verb].format_help()\n"
        "print(sorted(m for m in ('torch', 'openmm') if m in sys.modules))\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_console_script_help_loads_no_torch():
    proc = _fresh_python("import sys\nfrom cgkd.cli.main import main\n"
                         "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
                         "print('torch' in sys.modules, file=sys.stderr)")
    assert proc.returncode == 0, proc.stderr
    assert "usage: cgkd" in proc.stdout and proc.stderr.strip() == "False"


def test_the_face_lists_the_pipeline_in_order():
    names = cgkd.__all__
    order = ["load_spec", "simulate", "read_aa", "map_aa", "write_cg", "train_teachers", "make_labels",
             "train_student", "export_model", "create_system", "run_cg_md", "compare", "run_pipeline"]
    assert [n for n in names if n in order] == order
    assert len(set(names)) == len(names)
    assert set(names) <= set(dir(cgkd))


@pytest.mark.parametrize("name", cgkd.__all__)
def test_every_name_resolves(name):
    value = getattr(cgkd, name)
    assert callable(value)
    assert value.__name__ == name
    assert getattr(cgkd, name) is value  # cached after the first look-up


def test_the_face_is_the_real_thing():
    from cgkd.export.artefact import export_model
    from cgkd.io.spec import load_spec
    from cgkd.mapping import Mapping
    from cgkd.pipeline import run_pipeline
    from cgkd.topology import Topology

    assert cgkd.load_spec is load_spec and cgkd.Mapping is Mapping and cgkd.Topology is Topology
    assert cgkd.export_model is export_model and cgkd.run_pipeline is run_pipeline


def test_an_unknown_name_lists_the_verbs():
    with pytest.raises(AttributeError, match=r"no attribute 'train_techers'.*load_spec, simulate"):
        cgkd.train_techers
    assert not hasattr(cgkd, "export_checkpoint")


def test_cli_choices_match_the_library():
    from cgkd.cli import distill
    from cgkd.kd import students

    assert distill.FORCE_TARGETS == students.FORCE_TARGETS
    assert distill.ENERGY_TARGETS == students.ENERGY_TARGETS


def test_cli_turns_os_errors_into_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    from cgkd.cli.main import main

    import shutil
    from pathlib import Path

    cg = tmp_path / "cg.h5"
    shutil.copyfile(Path(__file__).parents[1] / "data" / "v1" / "cg.h5", cg)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # an output folder under a regular file: an OSError from the file system, reported in one line
    argv = ["distill", str(cg), "--student", "native", "--force-target", "mapped", "--out", str(blocker / "sub")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cgkd distill: error:") and str(blocker) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(OSError):
        main(["--debug"] + argv)
