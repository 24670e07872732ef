"""Small, offline, deterministic tasks for training and testing recurrent nets.

* :func:`dogs`: the seeds' "d-o-g -> s" example.
* :func:`adding`: the adding problem (many-to-one regression).
* :func:`copy`: the copy/memory task (many-to-many classification).
* :mod:`chars`: character-level language modelling on ``pydoc_data.topics``.
* :mod:`sunspots`: yearly sunspots, one-step forecasting (needs statsmodels).
"""

from jrnn.tasks import chars as chars
from jrnn.tasks import sunspots as sunspots
from jrnn.tasks.adding import AddingData as AddingData
from jrnn.tasks.adding import adding as adding
from jrnn.tasks.adding import adding_baseline as adding_baseline
from jrnn.tasks.copy import CopyData as CopyData
from jrnn.tasks.copy import copy as copy
from jrnn.tasks.copy import copy_baseline as copy_baseline
from jrnn.tasks.dogs import DOGS_VOCAB as DOGS_VOCAB
from jrnn.tasks.dogs import dogs as dogs
