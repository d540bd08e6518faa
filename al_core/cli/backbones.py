"""`al backbones`: every registered backbone, its feature dimension and whether
its weights are on this machine (nothing is downloaded, no model is built)."""

from __future__ import annotations

import argparse
import json
import sys

from al_core.cli.exit_codes import Exit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="al backbones", description=__doc__)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)

    from al_core.models.backbones import get_backbone_spec, list_backbones, weights_available, weights_env_var

    rows = []
    for name in list_backbones():
        spec = get_backbone_spec(name)
        rows.append(
            {
                "name": name,
                "library": spec.library,
                "architecture": spec.architecture + (f" ({spec.pretrained_tag})" if spec.pretrained_tag else ""),
                "feature_dim": spec.feature_dim,
                "input_size": spec.default_input_size,
                "params_m": spec.params_millions,
                "weights_available": weights_available(name),
                "weights_source": spec.weights_source,
                "weights_env_var": weights_env_var(name),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return Exit.OK
    cols = [
        ("name", "backbone"),
        ("feature_dim", "dim"),
        ("input_size", "input"),
        ("params_m", "params(M)"),
        ("weights_available", "weights here"),
        ("library", "library"),
        ("architecture", "architecture"),
    ]
    cells = [[h for _, h in cols]] + [
        [("yes" if r[k] else "no") if k == "weights_available" else str(r[k]) for k, _ in cols] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    for j, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))
    missing = [r for r in rows if not r["weights_available"]]
    if missing:
        print(
            "\nWeights not here are fetched from the Hugging Face hub on first use (not with "
            "HF_HUB_OFFLINE=1); air-gapped: point AL_WEIGHTS_<NAME> (e.g. "
            f"{missing[0]['weights_env_var']}) or weights_path= at a local file."
        )
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main())
