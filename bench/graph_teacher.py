"""What a teacher converted from ONNX costs against the same architecture written in torch.

For each zoo architecture named, the model is exported by ``torch.onnx.export``,
converted back by otrt (``GraphModel``, onnx2torch), and both forwards are
timed at the same batch under ``no_grad``, interleaved round by round; the
JSON reports each median and the ratio (goal: the graph within 1.2x).

    python bench/graph_teacher.py --models cnn resnet20 --out bench/out/graph_teacher.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ot_overhead import interleave
from bench.report import publish
from otrt_core.models import build_model
from otrt_core.models.graph import GraphModel
from otrt_core.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet20"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if Settings().torch_threads:
        torch.set_num_threads(Settings().torch_threads)
    device = torch.device("cpu")
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, input_shape=(3, 32, 32)).eval()
        x = torch.randn(args.batch_size, *model.input_shape)
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / f"{name}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    (x[:2],),
                    str(path),
                    dynamo=False,
                    dynamic_axes={"input": {0: "n"}},
                    input_names=["input"],
                )
            graph = GraphModel.from_file(path).eval()
        runs = {"torch": lambda m=model, x=x: m(x), "graph": lambda g=graph, x=x: g(x)}
        with torch.no_grad():
            difference = float((graph(x) - model(x)).abs().max())
            medians = interleave(
                runs,
                device,
                args.warmup,
                args.repeats,
            )
        rows.append(
            {
                "model": name,
                "torch_forward_ms": medians["torch"],
                "graph_forward_ms": medians["graph"],
                "graph_vs_torch": medians["graph"] / medians["torch"],
                "max_abs_diff": difference,
            }
        )
    publish(
        {
            "benchmark": "graph_teacher",
            "machine": {
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
            },
            "load_average": os.getloadavg(),
            "config": vars(args),
            "models": rows,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
