"""Training streams: one shuffled DataLoader per non-empty stream; shorter streams cycle.

An epoch is a fixed number of iterations: the longest stream's batches per process, capped
by ``train.iterations_per_epoch``. Each stream's shuffle generator is re-seeded from
(seed, stream, epoch) at the start of every epoch, so the data order of an epoch does not
depend on what ran before it (exact resume) and every process draws the same order
(Accelerate then gives each process its own batches of it). Every batch goes through the method's
``on_device(batch, stream)`` once Accelerate has moved it to the training device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def eval_loader(accelerator, dataset: Dataset, batch_size: int, collate, num_workers: int):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                        num_workers=num_workers, drop_last=False)
    return accelerator.prepare_data_loader(loader)


class _Cycle:
    """Endless batches of one prepared loader; each pass re-shuffles."""

    def __init__(self, loader) -> None:
        self.loader = loader
        self.iterator = None
        self.passes = 0

    def next(self):
        if self.iterator is None:
            self.iterator = iter(self.loader)
        try:
            return next(self.iterator)
        except StopIteration:
            self.passes += 1
            self.iterator = iter(self.loader)
            return next(self.iterator)

    def close(self) -> None:
        """Abandon a half-read pass (and tell Accelerate the loader is no longer active)."""
        if self.iterator is not None:
            self.iterator.close()
            self.iterator = None
            if hasattr(self.loader, "end"):
                self.loader.end()


class TrainStreams:
    def __init__(self, accelerator, datasets: dict[str, Dataset], *, batch_size: int, collate,
                 num_workers: int, seed: int, iterations_per_epoch: int | None, on_device=None) -> None:
        self.on_device = on_device
        self.sizes = {name: len(ds) for name, ds in datasets.items()}
        self.empty = [name for name, n in self.sizes.items() if n == 0]
        self.seed = seed
        self.generators: dict[str, torch.Generator] = {}
        self.loaders = {}
        for name, ds in datasets.items():
            if self.sizes[name] == 0:
                continue
            gen = torch.Generator()
            loader = DataLoader(ds, batch_size=batch_size, shuffle=True, generator=gen, collate_fn=collate,
                                num_workers=num_workers, drop_last=False)
            self.generators[name] = gen
            self.loaders[name] = accelerator.prepare_data_loader(loader)
        self.stream_index = {name: i for i, name in enumerate(datasets)}
        natural = max((len(dl) for dl in self.loaders.values()), default=0)
        self.iterations = min(natural, iterations_per_epoch) if iterations_per_epoch else natural

    def epoch(self, epoch: int) -> EpochBatches:
        for name, gen in self.generators.items():
            gen.manual_seed(derived_seed(self.seed, self.stream_index[name], epoch))
        return EpochBatches({name: _Cycle(dl) for name, dl in self.loaders.items()}, self.on_device)


class EpochBatches:
    """Batches of one epoch, per stream, each through ``on_device(batch, stream)`` (when given);
    ``close()`` at the end of the epoch."""

    def __init__(self, cycles: dict[str, _Cycle], on_device=None) -> None:
        self.cycles = cycles
        self.on_device = on_device

    def next(self, stream: str):
        batch = self.cycles[stream].next()
        if self.on_device is None:
            return batch
        with torch.no_grad():
            return self.on_device(batch, stream)

    def close(self) -> None:
        for cycle in self.cycles.values():
            cycle.close()
