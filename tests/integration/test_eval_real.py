"""scripts/eval_real.py end to end on the img33 held-out strip with the default models."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.helpers import REPO_ROOT

METRICS = ("iou", "precision", "recall", "len_recall_3m", "len_precision_3m", "len_recall_5m",
           "len_precision_5m", "apls")


def _script():
    spec = importlib.util.spec_from_file_location("eval_real", REPO_ROOT / "scripts" /
                                                  "eval_real.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.realdata
def test_eval_real_on_img33_strip(realdata, tmp_path, one_torch_thread, capsys):
    out = tmp_path / "real.json"
    doc = _script().main(["--images", "img33", "--realdata", str(realdata),
                          "--work-dir", str(tmp_path / "work"), "--json", str(out),
                          "--markdown", str(tmp_path / "real.md"), "--threads", "1"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(doc, default=float))
    (image,) = doc["images"]
    rows = {row["variant"]: row for row in image["rows"]}
    assert set(rows) == {"base", "base+PRN", "base@best"}
    assert rows["base+PRN"]["refined"]  # the default PRN belongs to the default RGB model
    for row in rows.values():
        for key in METRICS:
            assert 0.0 <= row[key] <= 1.0, (row["variant"], key, row[key])
        assert row["truth_length_m"] > 100  # the strip is 390 x 0.3 m tall, 390 m wide
    assert rows["base"]["iou"] > 0.3  # held-out Vegas residential: the default model sees roads
    assert 0.05 <= rows["base@best"]["threshold"] <= 0.95
    assert doc["models"]["img33"]["base_sha256"] and doc["models"]["img33"]["prn_sha256"]
    assert doc["roadprn_version"]
    assert "| img33 | base+PRN |" in capsys.readouterr().out
