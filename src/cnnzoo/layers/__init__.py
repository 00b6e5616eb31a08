"""Every layer type of the model language; importing this package registers them."""

from cnnzoo.layers import basic, blocks, capsules, conv, decoder, dense, freq, local, pool
from cnnzoo.layers.blocks import Residual
from cnnzoo.layers.conv import Conv2d
from cnnzoo.layers.dense import Linear
from cnnzoo.layers.local import LocallyConnected2d

__all__ = [
    "Conv2d",
    "Linear",
    "LocallyConnected2d",
    "Residual",
    "basic",
    "blocks",
    "capsules",
    "conv",
    "decoder",
    "dense",
    "freq",
    "local",
    "pool",
]
