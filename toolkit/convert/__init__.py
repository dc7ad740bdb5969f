"""Stage 3, conversion: the plan, PyTorch -> ONNX, ONNX -> OpenVINO IR, verification.

Owns the Model Optimizer flags of a model.yml (``mo_args``), the export (``export``), the IR
with preprocessing built in and its records (``pipeline``), graph rewrites, the numerical
check against PyTorch (``verify``) and the command's plan (``plan``). It receives a model
config and a checkpoint and hands ``.onnx`` and ``<PREC>/<name>.xml|.bin`` files, at the
paths omz_converter uses, on to ``toolkit.matting``.
"""
