"""watchkeeper: a model server that stays up.

The public API is the model contract (see ``watchkeeper.contract``)::

    import watchkeeper as wk

    class MyModel(wk.Model):
        class Inputs(wk.Inputs): ...
        class Params(wk.Params): ...
        class Options(wk.Options): ...          # [models.NAME.options] in the config
        def setup(self, device): ...
        def predict(self, inputs, params): ...   # or (self, inputs, params, progress)
"""

from watchkeeper.contract import (
    Blob,
    Example,
    ImageInput,
    Inputs,
    Model,
    ModelFile,
    NoOptions,
    NoParams,
    Options,
    Params,
    ProgressFn,
    no_progress,
)

__all__ = ["Blob", "Example", "ImageInput", "Inputs", "Model", "ModelFile", "NoOptions", "NoParams",
           "Options", "Params", "ProgressFn",
           "__version__", "no_progress"]

__version__ = "0.1.0"
