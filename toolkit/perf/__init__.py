"""Stage 6, speed: the benchmark (its backends and report), INT8 quantization and its
calibration images, and the fast path ``infer --fast`` picks.

It receives converted IRs and the matting runtime, and hands on faster IRs and the
figures that the README's performance tables come from.
"""
