"""Parameters and multiply-accumulates per stage, and the graph's inputs and outputs."""

from __future__ import annotations

import argparse
import json

from dgla_export.tools.args import add_model_name

HELP = "parameters and MACs per stage, and the input/output contract"


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_name(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dgla_export.models.cost import measure_cost
    from dgla_export.models.registry import create_model
    from dgla_export.tools import render

    model = create_model(args.model)
    cost = measure_cost(model)
    config = model.config
    record = {
        "model": config.name,
        "spec_version": config.architecture.spec_version,
        "checkpoint_layout": config.architecture.checkpoint_layout,
        "inputs": {k: list(v) for k, v in config.input_shapes("B").items()},
        "outputs": {"logits": ["B", config.num_classes], "probs": ["B", config.num_classes]},
        "classes": list(config.class_names),
        "cost": cost.to_dict(),
    }
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        render.cost_table(record, cost.stages, cost, Console())
    return 0
