"""Run an IR through OpenVINO Model API 0.2.5.2, as a user of Model API would, and save the matte.

This file runs in a *separate* virtual environment (Model API 0.2.5.2 needs openvino 2024.6
and numpy < 2, which the project's own environment cannot hold): ``test_model_api.py`` calls
it with that environment's interpreter. It imports nothing from the project.

Usage: ``python model_api_probe.py IR.xml IMAGE OUT_DEFAULT.npy OUT_F32.npy``. Prints one JSON
line: the wrapper Model API chose from the IR's rt_info, and the versions it ran with.

Two runs: ``Model.create_model(xml)`` exactly as a user writes it (no configuration at all:
the wrapper, the layout and the resize come from the IR), and the same through an
``OpenvinoAdapter`` asking OpenVINO for f32 inference, so that the comparison with the
project's own pipeline can be exact on a CPU whose default inference precision is bf16.
"""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import openvino
from model_api.adapters import OpenvinoAdapter, create_core
from model_api.models import Model


def main() -> None:
    xml, image_path, out_default, out_f32 = sys.argv[1:5]
    frame = cv2.imread(image_path, cv2.IMREAD_COLOR)
    if frame is None:
        raise SystemExit(f"cannot read {image_path}")
    model = Model.create_model(xml)
    _, alpha = model(frame)
    np.save(out_default, np.asarray(alpha[..., 0], np.float32))
    adapter = OpenvinoAdapter(
        create_core(), xml, device="CPU", plugin_config={"INFERENCE_PRECISION_HINT": "f32"}
    )
    exact = Model.create_model(adapter)
    _, alpha32 = exact(frame)
    np.save(out_f32, np.asarray(alpha32[..., 0], np.float32))
    from importlib.metadata import version

    print(
        json.dumps(
            {
                "wrapper": type(model).__name__,
                "openvino": openvino.__version__ if hasattr(openvino, "__version__") else "",
                "model_api": version("openvino-model-api"),
                "numpy": np.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
