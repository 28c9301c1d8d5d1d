"""Pascal VOC07 classification on frozen features, three protocols (docs/protocols.md §VOC07 classification):

- ``voc07_svm``: Goyal/VISSL per-class linear SVMs on every probed layer, cost sweep with
  3-fold CV (AP scoring), per-class best cost, refit on trainval, VOC area-AP on test with
  difficult images excluded. (class, cost) fits run in parallel threads and are stored on
  disk, so a re-run skips finished fits. The layer is chosen by mean CV AP (the anchors take
  the best layer on test; that number is kept as ``map_best_layer_on_test``).
- ``voc07_bce`` (``tasks/voc07_bce.py``): the official InvP ``voc_linear.py``: Linear(8192, 20)
  on layer4's second block pooled to 2x2, BCE with difficult masked, SGD lr 3.0, 1,900
  iterations, sklearn AP, the training images augmented anew at every iteration.
- ``voc07_lbfgs``: SimCLR's L-BFGS logistic regression, C selected on VOC's val split,
  11-point mAP (the ``transfer_linear`` protocol on VOC07 alone).
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
from sklearn.model_selection import cross_val_score
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from benchmark.core.fields import Float, Int, ListOf
from benchmark.core.store import write_json_atomic
from tasks.base import Measurement, Task, TaskContext, register
from tasks.common import SPLIT_FIELDS, blas_threads, encoder_key, task_settings
from tasks.feature_budget import WorkingCopy
from tasks.features import (
    GRIDS,
    LAYERS,
    FeatureLayer,
    context_features,
    feature_cache_path,
    resolve_layers,
)
from tasks.linear import GOYAL_LAYERS
from tasks.metrics import mean_ap, voc_area_ap
from tasks.transfer import TransferLinearTask
from tasks.transforms import eval_transform

DATASET = "voc07_cls"
VISSL_COSTS = [0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 50.0, 100.0, 1000.0]


class VOC07Task(Task):
    """Shared registry fields of the VOC07 classification protocols."""

    paper_table = "Table 1"
    paper_column = "VOC07"
    metrics = ("map",)


SVM_WORKING_COPY = WorkingCopy("float64", one_layer_at_a_time=True)  # l2_normalise, per layer


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """VISSL's x / (||x|| + 1e-5) per row, in float64."""
    x = np.asarray(x, dtype=np.float64)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-5)


def fit_svm(x: np.ndarray, y: np.ndarray, cost: float, folds: int) -> dict[str, Any]:
    """One (class, cost) fit: mean ``folds``-fold CV AP, then the refit on all of ``x``."""
    def make() -> LinearSVC:
        return LinearSVC(C=cost, class_weight={1: 2, -1: 1}, intercept_scaling=1.0,
                         penalty="l2", loss="squared_hinge", tol=1e-4, dual=True, max_iter=2000)

    cv_ap = cross_val_score(make(), x, y, cv=folds, scoring="average_precision").mean()
    model = make().fit(x, y)
    return {"cv_ap": float(cv_ap), "coef": model.coef_.ravel().tolist(),
            "intercept": float(model.intercept_[0])}


def svm_sweep(
    x: np.ndarray, targets: np.ndarray, costs: list[float], folds: int, store: Path, workers: int
) -> dict[tuple[int, float], dict[str, Any]]:
    """Every (class, cost) fit, reading finished ones from ``store`` and writing new ones there.
    Training labels: present = +1; absent and difficult = -1 (VISSL)."""
    def job(c: int, cost: float) -> dict[str, Any]:
        path = store / f"cls{c}_cost{cost:g}_cv{folds}.json"
        if path.is_file():
            return json.loads(path.read_text())
        result = fit_svm(x, np.where(targets[:, c] == 1, 1, -1), cost, folds)
        write_json_atomic(path, result)
        return result

    keys = [(c, cost) for c in range(targets.shape[1]) for cost in costs]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda key: job(*key), keys))
    return dict(zip(keys, results))


def svm_store(ctx: TaskContext, s: Mapping[str, Any], dataset: str, layer: FeatureLayer) -> Path:
    """Folder of the (class, cost) fits on one feature matrix: keyed like the feature cache
    (encoder, dataset, train split, layer, transform), so fits are reused only on the very
    features they were made from."""
    features = feature_cache_path(ctx.cache_dir, encoder_key(ctx.encoder), dataset,
                                  s["train_split"], layer, eval_transform(dataset, s))
    relative = features.relative_to(Path(ctx.cache_dir) / "features").with_suffix("")
    return Path(ctx.cache_dir) / "voc07_svm" / relative


@register
class VOC07SVMTask(VOC07Task):
    name = "voc07_svm"
    resource_kind = "cpu_fit"  # features once, then SVMs on the CPUs
    summary = "Goyal/VISSL linear SVMs per class and layer, cost sweep + 3-fold CV, VOC area mAP"
    protocol = "Goyal/VISSL VOC07 SVM (docs/protocols.md §Goyal VISSL SVM): LinearSVC, class_weight 2:1, CV AP, area AP"
    defaults: ClassVar[dict[str, Any]] = {
        "layers": GOYAL_LAYERS[:-1],
        "grids": {},
        "costs": VISSL_COSTS,
        "folds": 3,
        "workers": 2,
        "dataset": DATASET,
        "train_split": "trainval",
        "test_split": "test",
        "eval_resize": "warp",
    }
    settings_fields = {
        "layers": LAYERS,
        "grids": GRIDS,
        "costs": ListOf(Float(gt=0), min_len=1),
        "folds": Int(ge=2),
        "workers": Int(ge=1),
        **SPLIT_FIELDS,
    }

    def run(self, ctx: TaskContext) -> list[Measurement]:
        s = task_settings(self, ctx)
        backbone = ctx.encoder.load(ctx.device)
        layers = resolve_layers(s["layers"], backbone, dict(s["grids"]), ctx.encoder.kind)
        dataset = s["dataset"]
        train, train_t = context_features(ctx, s, dataset, s["train_split"], layers, backbone,
                                          working=SVM_WORKING_COPY)
        test, test_t = context_features(ctx, s, dataset, s["test_split"], layers, backbone,
                                        working=SVM_WORKING_COPY)
        costs = [float(c) for c in s["costs"]]
        per_layer = {}
        for layer in layers:
            store = svm_store(ctx, s, dataset, layer)
            with threadpool_limits(limits=blas_threads(ctx)):
                fits = svm_sweep(l2_normalise(train[layer.name]), train_t.numpy(), costs,
                                 int(s["folds"]), store, int(s["workers"]))
            per_layer[layer.name] = self._score_layer(fits, costs, l2_normalise(test[layer.name]),
                                                      test_t.numpy())
        return self._measurements(dataset, per_layer)

    @staticmethod
    def _score_layer(fits, costs, test_x, test_t) -> dict[str, Any]:
        classes = test_t.shape[1]
        best_costs = [max(costs, key=lambda cost: fits[(c, cost)]["cv_ap"]) for c in range(classes)]
        coef = np.stack([fits[(c, best_costs[c])]["coef"] for c in range(classes)], axis=1)
        bias = np.array([fits[(c, best_costs[c])]["intercept"] for c in range(classes)])
        test_map, per_class = mean_ap(test_x @ coef + bias, test_t, voc_area_ap, "exclude")
        cv_map = float(np.mean([fits[(c, best_costs[c])]["cv_ap"] for c in range(classes)]))
        return {"map": test_map, "cv_map": cv_map, "costs": best_costs, "per_class": per_class}

    @staticmethod
    def _measurements(dataset: str, per_layer: dict[str, dict[str, Any]]) -> list[Measurement]:
        chosen = max(per_layer, key=lambda name: per_layer[name]["cv_map"])
        best_test = max(per_layer, key=lambda name: per_layer[name]["map"])
        out = [
            Measurement("map", per_layer[chosen]["map"], dataset, "test",
                        {"layer": chosen, "cv_map": per_layer[chosen]["cv_map"],
                         "costs": per_layer[chosen]["costs"],
                         "selection": "layer by mean 3-fold CV AP on trainval"}),
            Measurement("map_best_layer_on_test", per_layer[best_test]["map"], dataset, "test",
                        {"layer": best_test,
                         "label": "best layer on test, as the anchors report it"}),
        ]
        out += [
            Measurement(f"map@{name}", r["map"], dataset, "test",
                        {"cv_map": r["cv_map"], "costs": r["costs"], "per_class_ap": r["per_class"]})
            for name, r in per_layer.items()
        ]
        return out


@register
class VOC07LBFGSTask(TransferLinearTask):
    name = "voc07_lbfgs"
    summary = "SimCLR L-BFGS logistic regression per class on VOC07, 11-point mAP"
    paper_table = "Table 1"
    paper_column = "VOC07"
    metrics = ("voc11_map", "voc11_map_pr")
    protocol = "SimCLR B.8.1 (docs/protocols.md §SimCLR logistic probe): C on VOC val, refit on trainval, 11-point mAP"
    defaults = {**TransferLinearTask.defaults, "datasets": [DATASET]}
