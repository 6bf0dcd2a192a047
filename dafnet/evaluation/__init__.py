"""``dafnet evaluate``: an exported model, its data split and a list of metrics -> numbers and figures.

:func:`evaluate` loads the export (a run folder or its ``export/``; ``overrides`` such as
``model.fuser.name=mean`` change its recipe first, to evaluate the same weights with another
fuser), rebuilds the data source from the export's recipe (or another recipe's ``data`` section,
or the recipe's source with another dataset folder), takes the run's ``splits.json`` when there
is one (else recomputes ``split_subjects`` with the recipe's split config), runs the method in
eval mode over the chosen split one subject at a time and feeds every metric the method's
:meth:`~dafnet.interfaces.Method.evaluation_inputs`. It writes ``metrics.json``,
``per_volume.csv`` and the metrics' figures to the output folder: by default its own folder under
``<run>/evaluation/``, named from the call (:func:`evaluation_folder_name`), so calls with other
metrics or overrides never mix. An existing non-empty folder is refused unless ``overwrite``;
everything is written to a staging folder beside it that replaces it only at the end, so an
error leaves nothing half-written and an overwrite leaves no stale figure.

The metric hooks the driver uses are declared, with their defaults, on
:class:`~dafnet.interfaces.Metric`: ``wants(inputs)`` (from ``required_inputs``: a metric is fed
only the inputs that have the fields it needs), ``attach(method)`` (called once before the first
update, e.g. to reach the decoder) and ``output_dir`` (set before the first update: the folder
its figures go to).

Modules: :mod:`.driver` (:func:`evaluate`: the call, the metrics fed subject by subject),
:mod:`.data` (the recipe with other data, the split, the facts check, volume geometry),
:mod:`.metric_setup` (metrics by name with their parameters), :mod:`.folders` (the output
folder's name and the overwrite checks), :mod:`.results` (metrics.json, per_volume.csv).
"""

from dafnet.evaluation.data import volume_geometry
from dafnet.evaluation.driver import SPLITS, EvaluationResult, evaluate
from dafnet.evaluation.folders import evaluation_folder_name
from dafnet.evaluation.metric_setup import build_metrics, metric_params

__all__ = ["EvaluationResult", "SPLITS", "build_metrics", "evaluate", "evaluation_folder_name", "metric_params",
           "volume_geometry"]
