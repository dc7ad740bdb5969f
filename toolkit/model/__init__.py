"""Stage 2, the network: MODNet in PyTorch, safe checkpoint loading and random checkpoints.

Owns everything that touches torch weights. It receives a checkpoint file (downloaded by
``toolkit.download`` or the user's own) and hands a validated ``MODNet`` module on to
``toolkit.convert``. Its torch modules are imported only by the stages that convert; the
inference stages use only :mod:`toolkit.model.limits` (plain Python, the network's size bound).
"""
