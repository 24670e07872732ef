"""Small, offline, deterministic tasks for training and testing recurrent nets.

* :func:`dogs`: the seeds' "d-o-g -> s" example.
* :func:`adding`: the adding problem (many-to-one regression).
* :func:`copy`: the copy/memory task (many-to-many classification).
* :mod:`chars`: character-level language modelling on ``pydoc_data.topics``.
* :mod:`sunspots`: yearly sunspots, one-step forecasting (needs statsmodels).
* :mod:`transduction`: sequence to sequence: dates to ISO form, string reversal.
* :mod:`words`: word-level language modelling on the standard library's source.

``dogs``, ``adding`` and ``copy`` are functions defined in private modules
(``_dogs.py`` ...) and re-exported here, so ``jrnn.tasks.copy`` is the
function and no submodule of the same name shadows it; ``chars``,
``sunspots``, ``transduction`` and ``words`` are public submodules.
"""

from jrnn.tasks import chars as chars
from jrnn.tasks import sunspots as sunspots
from jrnn.tasks import transduction as transduction
from jrnn.tasks import words as words
from jrnn.tasks._adding import AddingData as AddingData
from jrnn.tasks._adding import adding as adding
from jrnn.tasks._adding import adding_baseline as adding_baseline
from jrnn.tasks._copy import COPY_CLASSES as COPY_CLASSES
from jrnn.tasks._copy import COPY_LENGTH as COPY_LENGTH
from jrnn.tasks._copy import COPY_SYMBOLS as COPY_SYMBOLS
from jrnn.tasks._copy import CopyData as CopyData
from jrnn.tasks._copy import copy as copy
from jrnn.tasks._copy import copy_baseline as copy_baseline
from jrnn.tasks._dogs import DOGS_VOCAB as DOGS_VOCAB
from jrnn.tasks._dogs import DogsData as DogsData
from jrnn.tasks._dogs import dogs as dogs

__all__ = (
  "AddingData",
  "COPY_CLASSES",
  "COPY_LENGTH",
  "COPY_SYMBOLS",
  "CopyData",
  "DOGS_VOCAB",
  "DogsData",
  "adding",
  "adding_baseline",
  "chars",
  "copy",
  "copy_baseline",
  "dogs",
  "sunspots",
  "transduction",
  "words",
)
