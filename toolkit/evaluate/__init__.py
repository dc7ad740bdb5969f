"""Stage 5, accuracy: MAD and MSE on a matting dataset with Open Model Zoo's semantics.

It receives an IR (run through ``toolkit.matting.runtime``) and a folder of images and
mattes, and hands on the figures that the model card's are compared with.
"""
