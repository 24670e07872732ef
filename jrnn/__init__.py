"""jrnn: recurrent neural networks as pure JAX functions.

Cells are NamedTuples of pure functions (``init``, ``initial_carry``,
``step``) over parameter pytrees; :func:`unroll` runs them over time with
``jax.lax.scan``; ``jax.grad`` gives backpropagation through time; batches come
from ``jax.vmap``.
"""

from jrnn import losses as losses
from jrnn import tasks as tasks
from jrnn import train as train
from jrnn._bidirectional import BidirectionalCarry as BidirectionalCarry
from jrnn._bidirectional import BidirectionalParams as BidirectionalParams
from jrnn._bidirectional import bidirectional as bidirectional
from jrnn._cell import Cell as Cell
from jrnn._elman import ElmanParams as ElmanParams
from jrnn._elman import elman as elman
from jrnn._gru import GRUParams as GRUParams
from jrnn._gru import gru as gru
from jrnn._linear import Head as Head
from jrnn._linear import LinearParams as LinearParams
from jrnn._linear import linear as linear
from jrnn._lstm import LSTMCarry as LSTMCarry
from jrnn._lstm import LSTMParams as LSTMParams
from jrnn._lstm import lstm as lstm
from jrnn._modes import encoder_decoder as encoder_decoder
from jrnn._modes import last_valid as last_valid
from jrnn._modes import many_to_many as many_to_many
from jrnn._modes import many_to_one as many_to_one
from jrnn._modes import one_to_many as one_to_many
from jrnn._stack import stack as stack
from jrnn._unroll import unroll as unroll

__version__ = "0.1.0"

__all__ = (
    "BidirectionalCarry",
    "BidirectionalParams",
    "Cell",
    "ElmanParams",
    "GRUParams",
    "Head",
    "LSTMCarry",
    "LSTMParams",
    "LinearParams",
    "bidirectional",
    "elman",
    "encoder_decoder",
    "gru",
    "last_valid",
    "linear",
    "losses",
    "lstm",
    "many_to_many",
    "many_to_one",
    "one_to_many",
    "stack",
    "tasks",
    "train",
    "unroll",
)
