"""The generic training engine (Hugging Face Accelerate): runs any registered method's phases.

``train(recipe)`` trains, exports and evaluates; ``load_export(path)`` rebuilds an exported
method with its weights. See docs/engine.md.
"""

from dafnet.engine.export import load_export, read_index
from dafnet.engine.resume import resume_recipe
from dafnet.engine.trainer import TrainResult, train

__all__ = ["TrainResult", "load_export", "read_index", "resume_recipe", "train"]
