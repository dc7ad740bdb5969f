"""Stage 2, the network: MODNet in PyTorch, safe checkpoint loading and random checkpoints.

Owns everything that touches torch weights. It receives a checkpoint file (downloaded by
``toolkit.download`` or the user's own) and hands a validated ``MODNet`` module on to
``toolkit.convert``. Importing it imports torch, so the inference stages never do.
"""
