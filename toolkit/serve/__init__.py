"""Stage 7, serving: the converted IR behind HTTP for applications and a web page for people.

``modnet-tools serve`` runs :func:`toolkit.serve.app.create_app` under uvicorn. The app offers
``POST /v1/matte`` (an image in, the matte, cut-out or composite out, with the same bytes
``infer`` writes), the Open Inference Protocol (KServe v2) for the IR itself so Triton and
OpenVINO Model Server clients work unchanged, a WebSocket for live camera frames, and a page
at ``/`` (static files shipped here, no build step).

Every request shares one compiled IR through its asynchronous request pool
(:mod:`toolkit.serve.engine`); the queue in front of it is bounded and a full queue answers
503 at once. The app is built by a factory from a :class:`~toolkit.serve.settings.ServeSettings`
and keeps no process-global state, so ``toolkit.cluster`` can run it in Ray Serve replicas.
Nothing here imports torch, fetches a URL or reads a path a client names.
"""
