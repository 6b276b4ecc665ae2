"""Startup of the command line: what each command imports, the missing-package error, --version, python -m."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import selfstab
from selfstab.cli import main as cli_main

HEAVY = ("torch", "scipy", "matplotlib")
SRC = str(Path(selfstab.__file__).resolve().parents[1])

# Runs the entry point as `python -m selfstab ARGS` does, then reports which heavy packages were imported.
PROBE = """
import json, runpy, sys
args, missing = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in missing:
    sys.modules[name] = None          # this package is "not installed"
sys.argv = ["selfstab", *args]
code = 0
try:
    runpy.run_module("selfstab", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code or 0
print(json.dumps({"loaded": sorted(m for m in %r if sys.modules.get(m) is not None), "code": code}),
      file=sys.stderr)
""" % (HEAVY + ("numpy", "pandas", "h5py", "sklearn"),)


def _probe(args, missing=()):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=SRC, COLUMNS="100")
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(args)), json.dumps(list(missing))],
                          capture_output=True, text=True, env=env, timeout=300)
    *err, last = proc.stderr.strip().splitlines()
    report = json.loads(last)
    return report["loaded"], report["code"], proc.stdout, "\n".join(err)


@pytest.mark.parametrize("args,forbidden", [
    (["--help"], HEAVY),
    (["--version"], HEAVY),
    (["run", "--help"], HEAVY),
    (["track", "--help"], HEAVY),
    (["sweep", "--help"], HEAVY),
    (["plot", "--help"], HEAVY),
    (["report", "--help"], HEAVY),
    (["export", "--help"], HEAVY),
    (["theory", "--help"], HEAVY),
    (["doctor", "--help"], HEAVY),
    (["models"], ("scipy", "matplotlib")),     # counting parameters needs torch, nothing more
])
def test_startup_imports_nothing_heavy(args, forbidden):
    loaded, code, out, err = _probe(args)
    assert code == 0, err
    assert not set(loaded) & set(forbidden), f"selfstab {' '.join(args)} imported {loaded}"
    assert out.strip() and not err


def test_help_imports_no_numpy_either_and_lists_every_command():
    loaded, code, out, _ = _probe(["--help"])
    assert loaded == []     # not even numpy: argparse and selfstab.errors only
    for name, (_, line) in cli_main.COMMANDS.items():
        assert name in out and " ".join(line.split()[:4]) in " ".join(out.split())


def test_models_is_the_real_listing():
    loaded, code, out, _ = _probe(["models"])
    assert "torch" in loaded
    assert "resnet18" in out and "parameters on" in out


def test_version_and_python_dash_m():
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.run([sys.executable, "-m", "selfstab", "--version"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == f"selfstab {selfstab.__version__}"
    proc = subprocess.run([sys.executable, "-m", "selfstab", "nonsense"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "invalid choice: 'nonsense'" in proc.stderr


def test_a_missing_package_is_one_line_naming_it(tmp_path):
    # matplotlib "not installed": a figure command fails when it needs it, with one line and no traceback
    loaded, code, out, err = _probe(["theory", "fig2", "--steps", "10", "--out", str(tmp_path)],
                                    missing=["matplotlib"])
    assert code == 2
    assert err == "selfstab theory: error: needs the matplotlib package (pip install matplotlib)"
    # torch "not installed": models cannot count parameters
    loaded, code, out, err = _probe(["models"], missing=["torch"])
    assert code == 2 and err == "selfstab models: error: needs the torch package (pip install torch)"
    # ... but --help of the same commands still works
    loaded, code, out, err = _probe(["plot", "--help"], missing=["matplotlib", "torch", "scipy"])
    assert code == 0 and "usage: selfstab plot" in out and not err


def test_a_sub_command_module_that_fails_to_import_is_one_line(monkeypatch, capsys):
    real = cli_main.importlib.import_module

    def fake(name, *args):
        if name == "selfstab.cli.plot":
            raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
        if name == "selfstab.cli.catalog":
            raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")
        return real(name, *args)

    monkeypatch.setattr(cli_main.importlib, "import_module", fake)
    assert cli_main.main(["plot", "some-run"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "selfstab plot: error: needs the matplotlib package (pip install matplotlib)\n"
    assert captured.out == ""
    assert cli_main.main(["datasets"]) == 2
    assert capsys.readouterr().err == "selfstab datasets: error: needs the sklearn package (pip install scikit-learn)\n"
    # the other commands do not import that module, so they are unaffected
    with pytest.raises(SystemExit) as exc:
        cli_main.main(["--help"])
    assert exc.value.code == 0


def test_a_broken_selfstab_module_is_not_hidden(monkeypatch):
    # a missing module of selfstab itself is a bug: it must surface, not become a message about a package
    real = cli_main.importlib.import_module

    def fake(name, *args):
        if name == "selfstab.cli.report":
            raise ModuleNotFoundError("No module named 'selfstab.report'", name="selfstab.report")
        return real(name, *args)

    monkeypatch.setattr(cli_main.importlib, "import_module", fake)
    with pytest.raises(ModuleNotFoundError):
        cli_main.main(["report", "x"])


def test_every_command_module_registers_exactly_its_commands(tmp_path):
    # minimal arguments of each command; build_parser raises if a module registers more or fewer commands
    argv = {"track": ["x"], "resume": ["x"], "plot": ["x"], "report": ["x"], "export": ["x"]}
    for name in cli_main.COMMANDS:
        args, _ = cli_main.build_parser(name).parse_known_args([name, *argv.get(name, [])])
        assert args.command == name and callable(getattr(args, "func", None)), name
