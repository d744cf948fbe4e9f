"""Installing plugin distributions for real (pip --target) so their entry points are discovered."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def pip_install_target(source: Path, target: Path) -> Path:
    """``pip install --no-deps --target`` a distribution; put ``target`` on sys.path / PYTHONPATH to use it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    return target


def make_distribution(root: Path, dist_name: str, module_name: str, module_source: str) -> Path:
    """Write a one-module distribution whose module is a ``trl_causal`` entry point."""
    source = root / dist_name
    source.mkdir(parents=True)
    (source / f"{module_name}.py").write_text(textwrap.dedent(module_source))
    (source / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{dist_name}"
            version = "0.0.1"

            [project.entry-points.trl_causal]
            {module_name} = "{module_name}"

            [tool.setuptools]
            py-modules = ["{module_name}"]
            """
        )
    )
    return source
