"""Every user tool is a console script with a useful --help; the built wheel, installed in a fresh
virtual environment, runs them from a folder outside the repository."""

from __future__ import annotations

import importlib
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from _helpers import CLI_MICRO_MODEL

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
TINY = [
    *CLI_MICRO_MODEL,
    "data.max_sample_size=8000",
    "data.max_tokens=40000",
    "trainer.progress=false",
    "trainer.num_threads=1",
]


def test_every_user_tool_is_a_console_script():
    assert {
        "w2v2-pretrain",
        "w2v2-finetune",
        "w2v2-transcribe",
        "w2v2-export-hf",
        "w2v2-probe",
        "w2v2-manifest",
        "w2v2-evaluate",
        "w2v2-extract",
        "w2v2-report",
        "w2v2-sweep-summary",
    } <= set(SCRIPTS)


def _entry(name: str):
    module, _, attr = SCRIPTS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_of_every_console_script(name, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    try:
        if name in ("w2v2-pretrain", "w2v2-finetune"):
            _entry(name)()
        else:
            _entry(name)(["--help"])
    except SystemExit as e:
        assert e.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and name in out.splitlines()[0]
    if name in ("w2v2-pretrain", "w2v2-finetune"):
        kind = name.removeprefix("w2v2-")
        assert "Hydra" in out and "powered by Hydra" not in out
        for expected in (
            f"{kind}_tiny",
            "recipe: ",
            "trainer.max_updates",
            "data.manifest_dir",
            "hydra.run.dir",
        ):
            assert expected in out, expected


def _see_running_site_packages(py: Path) -> None:
    """Make the venv of ``py`` import the dependencies (torch, ...) from the interpreter running the
    suite, wherever that is (a venv, a conda env, a system Python), without the network: plain path
    lines in a ``.pth`` file, appended after the venv's own site-packages, so the wheel installed
    there wins. Plain lines do not run the ``.pth`` files of those folders, so an editable install
    of this repository stays invisible. ``--system-site-packages`` is not enough: inside a venv it
    exposes the base interpreter's packages, not the running one's."""
    own = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    user = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
    running = [p for p in [*site.getsitepackages(), *user] if Path(p).is_dir()]
    (Path(own) / "_running_interpreter.pth").write_text("".join(f"{p}\n" for p in running))


@pytest.mark.slow
def test_the_wheel_in_a_fresh_venv_runs_every_script_and_trains_outside_the_repo(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}

    def run(*cmd, cwd=tmp_path):
        return subprocess.run(
            [str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
        )

    built = run(
        sys.executable, "-m", "pip", "wheel", REPO, "--no-deps", "--no-build-isolation", "-w", tmp_path / "w"
    )
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "w").glob("wav2vec2_lite-*.whl"))
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    py = venv / "bin" / "python"
    _see_running_site_packages(py)
    installed = run(
        sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = run(
        py,
        "-c",
        "import wav2vec2_lite, wav2vec2_lite.pretrained as p; print(wav2vec2_lite.__file__); "
        "print(p.available())",
        cwd=outside,
    )
    assert where.stdout.startswith(str(venv)) and "tiny-espeak-10h" in where.stdout, (
        where.stdout + where.stderr
    )
    for name in SCRIPTS:
        shown = run(venv / "bin" / name, "--help", cwd=outside)
        assert shown.returncode == 0 and shown.stdout.startswith("usage: "), (name, shown.stderr[-1000:])
    made = run(
        py,
        "-c",
        "from wav2vec2_lite.train.toy_data import make_toy_corpus; "
        "make_toy_corpus('toy', train=6, valid=2, seed=1)",
        cwd=outside,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    pre = run(
        venv / "bin" / "w2v2-pretrain",
        "--config-name",
        "pretrain_tiny",
        "data.manifest_dir=toy",
        *TINY,
        "trainer.max_updates=2",
        "hydra.run.dir=pt",
        cwd=outside,
    )
    assert pre.returncode == 0 and (outside / "pt" / "checkpoints" / "last").is_dir(), pre.stderr[-3000:]
    ft = run(
        venv / "bin" / "w2v2-finetune",
        "--config-name",
        "finetune_tiny",
        "data.manifest_dir=toy",
        "finetune.pretrained=pt",
        "trainer.max_updates=2",
        "trainer.progress=false",
        "trainer.num_threads=1",
        "data.max_tokens=40000",
        "hydra.run.dir=ft",
        cwd=outside,
    )
    assert ft.returncode == 0 and (outside / "ft" / "checkpoints" / "last").is_dir(), ft.stderr[-3000:]
