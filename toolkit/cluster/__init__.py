"""Scale-out on Ray: ``infer --ray`` over a cluster and ``serve --ray`` behind Ray Serve.

Why Ray: it is the distributed engine Python teams already run (their own machines, KubeRay,
every cloud), installs from PyPI (the ``[ray]`` extra), and runs as a real multi-node cluster
on one machine for tests. Nothing here re-implements matting: the workers run the same
:class:`~toolkit.matting.batch.Runner` pieces as a local ``infer`` (the same output names from
:func:`~toolkit.matting.batch.triage`, the same image and video functions, the same atomic
writes), so a cluster run writes byte-identical files.

Modules: :mod:`.connect` (joining or starting a cluster, quietly), :mod:`.tracker` (the run's
ledger and progress, one small actor), :mod:`.workers` (the image actor and the video task),
:mod:`.runner` (the driver: plans, submits, reports, settles what the cluster lost).
"""
