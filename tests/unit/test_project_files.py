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
    # and its failure is fatal: under `set -e` a failing command inside an `&&` list is not
    # (a failing ruff let CI pass without running a test)
    assert f"if ! ({install_and_test}" in ci


def test_readme_starts_with_install_and_run_commands():
    first, second = readme_commands()[:2]
    assert "pip install" in first and "roadprn " in first
    assert "pip install" in second and "pytest" in second


def test_pyproject_torch_range_admits_ci_torch():
    text = (REPO / "pyproject.toml").read_text()
    spec = re.search(r'"torch([^"]*)"', text).group(1)
    from packaging.specifiers import SpecifierSet

    assert "2.13.0" in SpecifierSet(spec)


def _architecture_modules_table() -> str:
    text = (REPO / "docs" / "architecture.md").read_text()
    return text[text.index("## Modules"):text.index("## Conventions")]


def test_architecture_doc_names_every_module():
    """docs/architecture.md is the map of the code: every module is in its table, directly
    (``raster/scene.py``) or through its folder's row (``vectorize/``)."""
    table = _architecture_modules_table()
    rows = {m.group(1) for m in re.finditer(r"^\| `([^`]+)`", table, flags=re.M)}
    named = set(re.findall(r"`([a-z_]+(?:/[a-z_]+)*\.py)`", table))
    package = REPO / "roadprn"
    missing = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if path.name in ("__init__.py", "__main__.py") or rel in named:
            continue
        folder = rel.split("/")[0] + "/"
        if "/" in rel and folder in rows:
            continue
        missing.append(rel)
    assert not missing, f"modules missing from docs/architecture.md: {missing}"


def test_architecture_doc_names_only_modules_that_exist():
    table = _architecture_modules_table()
    package = REPO / "roadprn"
    paths = set(re.findall(r"^\| `([a-z_]+(?:/[a-z_]+)*(?:\.py|/))`", table, flags=re.M))
    paths |= set(re.findall(r"`([a-z_]+/[a-z_]+\.py)`", table))
    gone = [p for p in sorted(paths) if not (package / p).exists()]
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"
    layout = (REPO / "docs" / "architecture.md").read_text().split("## Layout", 1)[1]
    layout = layout.split("```")[1]
    folders = {p.parent.name for p in package.glob("*/__init__.py")}
    listed = set(re.findall(r"^  ([a-z_]+)/", layout, flags=re.M))
    assert listed == folders, f"layout block vs packages: {sorted(listed ^ folders)}"
