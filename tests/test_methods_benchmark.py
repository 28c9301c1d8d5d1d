"""speed/method_step.py runs end to end on a tiny bank and reports every method."""
import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "speed" / "method_step.py"


def test_method_step_benchmark_smoke(tmp_path, capsys):
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("method_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "times.json"
    module.main(["--n", "3000", "--batch", "8", "--dim", "16", "--pool", "64", "--reps", "2", "--warmup", "0",
                 "--device", "cpu", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["floor (matmul + top-M)", "invp", "insdis-softmax", "insdis-nce", "knn",
                                           "mocov2", "interclr", "clim"]
    assert all(len(r["times"]) == 2 and min(r["times"]) > 0 for r in rows)
    assert "| 3000 | invp |" in capsys.readouterr().out
