"""jrnn: recurrent neural networks as pure JAX functions.

Cells are NamedTuples of pure functions (``init``, ``initial_carry``,
``step``) over parameter pytrees, with a typed ``kind`` that says how they run
(:mod:`jrnn._cell`); :func:`unroll` runs them over time with ``jax.lax.scan``;
``jax.grad`` gives backpropagation through time; batches come from
:func:`unroll_batch` or ``jax.vmap``. The command line, the demo and the
benchmark harness live in :mod:`jrnn.apps`, which ``import jrnn`` never loads.
"""

from jrnn import bptt as bptt
from jrnn import diagnostics as diagnostics
from jrnn import distributed as distributed
from jrnn import export as export
from jrnn import interop as interop
from jrnn import losses as losses
from jrnn import sharding as sharding
from jrnn import tasks as tasks
from jrnn import train as train
from jrnn._attention import AdditiveParams as AdditiveParams
from jrnn._attention import Attention as Attention
from jrnn._attention import AttentionCarry as AttentionCarry
from jrnn._attention import AttentionDecoderParams as AttentionDecoderParams
from jrnn._attention import GeneralParams as GeneralParams
from jrnn._attention import attend as attend
from jrnn._attention import attention as attention
from jrnn._attention import attention_carry as attention_carry
from jrnn._attention import attention_decoder as attention_decoder
from jrnn._attention import attention_weights as attention_weights
from jrnn._beam import BeamResult as BeamResult
from jrnn._beam import SampleResult as SampleResult
from jrnn._beam import beam_search as beam_search
from jrnn._beam import sample_decode as sample_decode
from jrnn._bidirectional import BidirectionalCarry as BidirectionalCarry
from jrnn._bidirectional import BidirectionalParams as BidirectionalParams
from jrnn._bidirectional import bidirectional as bidirectional
from jrnn._block import BlockParams as BlockParams
from jrnn._block import linear_recurrent_block as linear_recurrent_block
from jrnn._cell import AffineRecurrence as AffineRecurrence
from jrnn._cell import Cell as Cell
from jrnn._cell import LinearRecurrence as LinearRecurrence
from jrnn._cell import LogCoefficients as LogCoefficients
from jrnn._cell import Projected as Projected
from jrnn._cell import SequenceLayer as SequenceLayer
from jrnn._cell import Stepwise as Stepwise
from jrnn._cell import make_cell as make_cell
from jrnn._cpu_kernel import available as cpu_kernel_available
from jrnn._cudnn import available as cudnn_available
from jrnn._cudnn import which_kernel as which_kernel
from jrnn._dropout import dropout as dropout
from jrnn._dropout import weight_drop as weight_drop
from jrnn._elman import ElmanParams as ElmanParams
from jrnn._elman import elman as elman
from jrnn._embedding import Embedding as Embedding
from jrnn._embedding import EmbeddingParams as EmbeddingParams
from jrnn._embedding import TiedParams as TiedParams
from jrnn._embedding import embedding as embedding
from jrnn._embedding import tied_linear as tied_linear
from jrnn._gru import GRUParams as GRUParams
from jrnn._gru import gru as gru
from jrnn._layer_norm import LayerNormGRUParams as LayerNormGRUParams
from jrnn._layer_norm import LayerNormLSTMParams as LayerNormLSTMParams
from jrnn._layer_norm import layer_norm_gru as layer_norm_gru
from jrnn._layer_norm import layer_norm_lstm as layer_norm_lstm
from jrnn._linear import Head as Head
from jrnn._linear import LinearParams as LinearParams
from jrnn._linear import ModelParams as ModelParams
from jrnn._linear import linear as linear
from jrnn._lru import LRUParams as LRUParams
from jrnn._lru import lru as lru
from jrnn._lstm import LSTMCarry as LSTMCarry
from jrnn._lstm import LSTMParams as LSTMParams
from jrnn._lstm import lstm as lstm
from jrnn._lstmp import LSTMPCarry as LSTMPCarry
from jrnn._lstmp import LSTMPParams as LSTMPParams
from jrnn._lstmp import lstmp as lstmp
from jrnn._min_gru import MinGRUParams as MinGRUParams
from jrnn._min_gru import min_gru as min_gru
from jrnn._min_lstm import MinLSTMParams as MinLSTMParams
from jrnn._min_lstm import min_lstm as min_lstm
from jrnn._modes import encoder_decoder as encoder_decoder
from jrnn._modes import last_valid as last_valid
from jrnn._modes import many_to_many as many_to_many
from jrnn._modes import many_to_one as many_to_one
from jrnn._modes import one_to_many as one_to_many
from jrnn._options import Options as Options
from jrnn._registry import CELLS as CELLS
from jrnn._registry import WRAPPERS as WRAPPERS
from jrnn._stack import stack as stack
from jrnn._unroll import unroll as unroll
from jrnn._unroll import unroll_batch as unroll_batch
from jrnn._zoneout import ZoneoutCarry as ZoneoutCarry
from jrnn._zoneout import zoneout as zoneout
from jrnn._zoneout import zoneout_carry as zoneout_carry
from jrnn._zoneout import zoneout_masks as zoneout_masks

__version__ = "0.1.0"


def __getattr__(name):
  # jrnn.nnx imports Flax (about 0.4 s); load it on first use only.
  if name == "nnx":
    import importlib

    return importlib.import_module("jrnn.nnx")
  raise AttributeError(f"module 'jrnn' has no attribute {name!r}")


__all__ = (
  "CELLS",
  "WRAPPERS",
  "AdditiveParams",
  "AffineRecurrence",
  "Attention",
  "AttentionCarry",
  "AttentionDecoderParams",
  "BeamResult",
  "BidirectionalCarry",
  "BidirectionalParams",
  "BlockParams",
  "Cell",
  "ElmanParams",
  "Embedding",
  "EmbeddingParams",
  "GRUParams",
  "GeneralParams",
  "Head",
  "LRUParams",
  "LSTMCarry",
  "LSTMPCarry",
  "LSTMPParams",
  "LSTMParams",
  "LayerNormGRUParams",
  "LayerNormLSTMParams",
  "LinearParams",
  "LinearRecurrence",
  "LogCoefficients",
  "MinGRUParams",
  "MinLSTMParams",
  "ModelParams",
  "Options",
  "Projected",
  "SampleResult",
  "SequenceLayer",
  "Stepwise",
  "TiedParams",
  "ZoneoutCarry",
  "attend",
  "attention",
  "attention_carry",
  "attention_decoder",
  "attention_weights",
  "beam_search",
  "bidirectional",
  "bptt",
  "cpu_kernel_available",
  "cudnn_available",
  "diagnostics",
  "distributed",
  "export",
  "dropout",
  "elman",
  "embedding",
  "encoder_decoder",
  "gru",
  "interop",
  "last_valid",
  "layer_norm_gru",
  "layer_norm_lstm",
  "linear",
  "linear_recurrent_block",
  "losses",
  "lru",
  "lstm",
  "lstmp",
  "make_cell",
  "many_to_many",
  "many_to_one",
  "min_gru",
  "min_lstm",
  "one_to_many",
  "sample_decode",
  "sharding",
  "stack",
  "tasks",
  "tied_linear",
  "train",
  "unroll",
  "unroll_batch",
  "weight_drop",
  "which_kernel",
  "zoneout",
  "zoneout_carry",
  "zoneout_masks",
)
