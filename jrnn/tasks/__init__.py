"""Small, offline, deterministic tasks for training and testing recurrent nets."""

from jrnn.tasks.dogs import DOGS_VOCAB as DOGS_VOCAB
from jrnn.tasks.dogs import dogs as dogs
