"""Stage 4, running the IR: OpenVINO runtime, the session API, image and video I/O, the
resize rules and compositing, and the batch runner behind ``infer``.

It receives an ``.xml`` IR and hands mattes, cut-outs and composites on (to files, or to
``toolkit.serve`` and ``toolkit.cluster``). Nothing here imports torch: a deployment
installs only what inference needs.
"""
