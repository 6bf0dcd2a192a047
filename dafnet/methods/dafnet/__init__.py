"""DAFNet (Chartsias et al., IEEE TMI 2020) as a registered method (registry: dafnet); docs/method.md.

* :mod:`.method`: the :class:`DAFNet` class: roles, building, optimizer groups, phases, streams,
  evaluation and ``predict``;
* :mod:`.graph`: the training forward graph of one batch;
* :mod:`.steps`: the generator and critic steps (the loss terms);
* :mod:`.inference`: the prediction types of the target and their Dice statistics;
* :mod:`.alignment`: the alignment error against the truth, for data that know it;
* :mod:`.evaluation`: one evaluation batch -> the ``MetricInputs`` of ``dafnet evaluate``;
* :mod:`.summary`: one batch-1 forward of every role, checked (``dafnet summary``, before training).
"""

from dafnet.methods.dafnet.method import DAFNet

__all__ = ["DAFNet"]
