"""Visual entailment: a picture of shapes and a sentence in, yes / no / maybe out.

Runs in worker processes (the app, :class:`Entailment`) and in the offline scripts that
train and evaluate its network (``train``, ``evaluate``). See ``app`` for the model.
"""

from watchkeeper.apps.entailment.app import Entailment

__all__ = ["Entailment"]
