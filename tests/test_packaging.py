"""The setup path: dependency lists that must not drift, and the Makefile's promises."""

from __future__ import annotations

import re
import subprocess
import tomllib

import yaml

from conftest import REPO


def canonical(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pyproject_packages() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {canonical(d) for d in deps}


def test_environment_yml_names_the_same_packages_as_pyproject():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_side = {canonical(p) for p in pip if not p.startswith("-e")}
    assert conda_side == pyproject_packages()
    assert "-e ." in pip


def test_lock_pins_every_dependency_exactly():
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonical(name)] = version
    missing = pyproject_packages() - set(pins)
    assert not missing, f"requirements.lock lacks {missing}"
    # this machine's setup path: the CPU build of torch 2.13.0 (anything else pulls CUDA wheels)
    assert pins["torch"] == "2.13.0"


def test_makefile_targets_document_themselves():
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for target in ("demo", "test", "test-slow", "bench", "table3", "fig3", "setup"):
        assert re.search(rf"make {target}\s+\S", out), f"make help does not describe {target}"


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make test" in ci
    assert "make test" in readme and "make demo" in readme
