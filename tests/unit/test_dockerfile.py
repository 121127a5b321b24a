"""The Dockerfile cannot be built here (no Docker engine); these checks keep the properties the
README's Docker section promises: dependency layers that survive a code change, the bundled
example in the image, any uid able to run it, CPU and CUDA variants."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # join continued lines
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def _index(rows, predicate) -> int:
    return next(i for i, row in enumerate(rows) if predicate(*row))


def test_dependencies_install_from_metadata_before_the_code_is_copied():
    rows = _instructions()
    metadata = _index(rows, lambda w, r: w == "COPY" and r.split()[0] == "pyproject.toml")
    deps = _index(rows, lambda w, r: w == "RUN" and "pip install \".${EXTRAS" in r)
    code = _index(rows, lambda w, r: w == "COPY" and r.split()[0] == "roadprn")
    assert metadata < deps < code
    copied = [r.split()[:-1] for w, r in rows[:deps] if w == "COPY"]
    assert copied == [["pyproject.toml"]]  # nothing that changes with the code or the docs
    final = _index(rows, lambda w, r: w == "RUN" and "pip install --no-deps ." in r)
    assert final > code
    assert not any(w == "COPY" and r.split()[0] == "." for w, r in rows)


def test_image_has_the_example_and_runs_for_any_uid():
    rows = _instructions()
    copies = {r.split()[0] for w, r in rows if w == "COPY"}
    assert {"roadprn", "configs", "examples"} <= copies
    assert (REPO / "examples" / "synthetic_scene.tif").is_file()
    env = " ".join(r for w, r in rows if w == "ENV")
    assert "HOME=/tmp" in env and "ROADPRN_LOG_DIR=/tmp/" in env
    assert ("USER", "roadprn") in rows and ("WORKDIR", "/data") == rows[-3]
    assert ("ENTRYPOINT", '["roadprn"]') in rows
    readme = (REPO / "README.md").read_text()
    assert '--user "$(id -u):$(id -g)"' in readme and "--build-arg VARIANT=cuda" in readme


def test_torch_comes_from_the_chosen_variants_index():
    text = (REPO / "Dockerfile").read_text()
    assert "https://download.pytorch.org/whl/cpu" in text
    assert "https://download.pytorch.org/whl/${CUDA_TAG}" in text
    assert "ARG VARIANT=cpu" in text
