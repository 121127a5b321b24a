"""The README's commands and CI must not drift apart."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    test_cmd = readme_commands()[1]
    assert "pytest" in test_cmd
    install_and_test = test_cmd.split("&& ", 2)[-1]  # drop the venv creation/activation
    ci = (REPO / ".ci" / "run").read_text()
    assert install_and_test in ci


def test_readme_starts_with_install_and_run_commands():
    first, second = readme_commands()[:2]
    assert "pip install" in first and "roadprn " in first
    assert "pip install" in second and "pytest" in second


def test_pyproject_torch_range_admits_ci_torch():
    text = (REPO / "pyproject.toml").read_text()
    spec = re.search(r'"torch([^"]*)"', text).group(1)
    from packaging.specifiers import SpecifierSet

    assert "2.13.0" in SpecifierSet(spec)
