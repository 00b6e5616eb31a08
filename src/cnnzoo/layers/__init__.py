"""Every layer type of the model language; importing this package registers them."""

from cnnzoo.layers import basic, blocks, conv, dense, pool
from cnnzoo.layers.blocks import Residual
from cnnzoo.layers.conv import Conv2d
from cnnzoo.layers.dense import Linear

__all__ = ["Conv2d", "Linear", "Residual", "basic", "blocks", "conv", "dense", "pool"]
