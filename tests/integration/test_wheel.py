"""The wheel is the whole service: built from the tree and installed without the
source beside it, Django finds the apps, their templates and their migrations.

No network and no dependency install: the wheel is built with the project venv's
setuptools (--no-build-isolation) and installed with --no-deps into a fresh venv
whose only view of the dependencies is a .pth line naming the project venv's
site-packages. A .pth line adds the directory but runs none of the .pth files in it,
so the project's editable install (a .pth file there) stays out of sight, and the
commands run from an empty directory, with no PYTHONPATH.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

from tests.conftest import ROOT

# Run by the installed copy: where its modules and templates come from, and how many migrations it sees.
PROBE = """
import django, config, dlq
django.setup()
from django.template.loader import get_template
from django.db.migrations.loader import MigrationLoader
print(config.__file__)
for name in ["admin/dlq/deadletter/close.html", "admin/dlq/deadletter/change_form.html",
             "admin/whatsapp/circuitbreaker/change_list.html"]:
    print(get_template(name).origin.name)
print(len(MigrationLoader(None, ignore_no_migrations=True).disk_migrations))
"""
TEMPLATES = [str(path.relative_to(ROOT)) for path in sorted(ROOT.glob("*/templates/**/*.html"))]


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"
    return result


def test_the_wheel_installs_and_runs_without_the_source_tree(tmp_path):
    assert "dlq/templates/admin/dlq/deadletter/close.html" in TEMPLATES
    # Built from a copy, so setuptools' build/ directory never holds stale files of the tree.
    source = tmp_path / "source"
    source.mkdir()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in packages:
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
         "-w", str(wheels), str(source)],
        cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = wheels.glob("whatsapp_handler-*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    assert set(TEMPLATES) <= inside, f"missing from the wheel: {sorted(set(TEMPLATES) - inside)}"

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path).stdout.strip()
    )
    (site / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
         str(wheel)],
        cwd=tmp_path,
    )  # fmt: skip

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "wheel-test-secret-key-0123456789-abcdefghijklmnopqrstuv",
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    run([str(python), "-m", "django", "check"], cwd=elsewhere, env=env)
    found = run([str(python), "-c", PROBE], cwd=elsewhere, env=env).stdout.splitlines()
    assert all(line.startswith(str(venv)) for line in found[:4]), found
    assert Path(found[1]).is_file() and found[1].endswith("dlq/templates/admin/dlq/deadletter/close.html")
    assert int(found[-1]) >= 10, "the apps' migrations are in the wheel"
    assert str(ROOT) not in "\n".join(found[:4])
